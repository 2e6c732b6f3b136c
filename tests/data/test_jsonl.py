import json

import pytest

from llamaforge.data.jsonl import jsonl_records, write_jsonl
from llamaforge.errors import UserError


def test_write_then_read_round_trips_with_sorted_keys_and_unicode(tmp_path):
    records = [{"b": 1, "a": "caf\u00e9"}, {"messages": [{"role": "user", "content": "hi"}]}]
    path = write_jsonl(tmp_path / "new" / "dir" / "out.jsonl", records)  # parents are created
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == '{"a": "caf\u00e9", "b": 1}'  # keys sorted, not ASCII-escaped
    assert [r for _, r in jsonl_records(path)] == records
    assert [where for where, _ in jsonl_records(path)] == [f"{path}:1", f"{path}:2"]


def test_write_replaces_atomically_and_leaves_no_partial_file(tmp_path):
    path = write_jsonl(tmp_path / "out.jsonl", [{"x": 1}])

    class Unserializable:
        pass

    with pytest.raises(TypeError):
        write_jsonl(path, [{"x": 2}, {"x": Unserializable()}])
    assert json.loads(path.read_text()) == {"x": 1}  # the previous file is intact
    write_jsonl(path, [{"x": 3}])
    assert json.loads(path.read_text()) == {"x": 3}
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


def test_read_names_file_and_line_of_a_bad_record(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"ok": 1}\n\n{not json\n')
    with pytest.raises(UserError, match=r"bad.jsonl:3: not valid JSON"):
        list(jsonl_records(path))
