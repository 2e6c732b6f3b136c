"""Text sources for tokenizer training and pretraining (llamaforge/data/text.py)."""

import json

import pyarrow
import pytest

from llamaforge.data.text import read_documents
from llamaforge.errors import UserError


def test_text_jsonl_and_parquet_sources_in_order(tmp_path):
    import pyarrow.parquet  # installed with the test extra (datasets needs it)

    (tmp_path / "a.txt").write_text("first line\nsecond line\n")
    (tmp_path / "b.jsonl").write_text(json.dumps({"text": "from jsonl", "id": 3}) + "\n\n" + json.dumps({"text": "again"}) + "\n")
    table = pyarrow.table({"text": ["from parquet", "a second row"], "score": [1, 2]})
    pyarrow.parquet.write_table(table, tmp_path / "c.parquet")
    documents = list(read_documents([tmp_path / "a.txt", tmp_path / "b.jsonl", tmp_path / "c.parquet"]))
    assert documents == ["first line", "second line", "from jsonl", "again", "from parquet", "a second row"]


def test_parquet_without_a_text_column_is_refused(tmp_path):
    import pyarrow.parquet

    pyarrow.parquet.write_table(pyarrow.table({"content": ["x"]}), tmp_path / "bad.parquet")
    with pytest.raises(UserError, match=r"bad.parquet: no 'text' column \(columns: content\)"):
        list(read_documents([tmp_path / "bad.parquet"]))


def test_bad_jsonl_names_file_line_and_field(tmp_path):
    (tmp_path / "d.jsonl").write_text(json.dumps({"text": "ok"}) + "\n" + json.dumps({"body": "no text"}) + "\n")
    with pytest.raises(UserError, match=r"d.jsonl:2: field 'text': expected a string"):
        list(read_documents([tmp_path / "d.jsonl"]))
    (tmp_path / "e.jsonl").write_text("{not json\n")
    with pytest.raises(UserError, match=r"e.jsonl:1: not valid JSON"):
        list(read_documents([tmp_path / "e.jsonl"]))


def test_missing_file_is_reported_before_reading(tmp_path):
    (tmp_path / "a.txt").write_text("x\n")
    with pytest.raises(UserError, match="missing.txt: file not found"):
        read_documents([tmp_path / "a.txt", tmp_path / "missing.txt"])
