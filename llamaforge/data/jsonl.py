"""Reading JSONL files record by record, with the file and line of each record for error messages."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from llamaforge.errors import UserError


def jsonl_records(path: Path) -> Iterator[tuple[str, object]]:
    """("FILE:LINE", value) for each non-empty line; a missing file or a line that is not JSON stops
    with a one-line UserError naming it (callers check the value's fields)."""
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise UserError(f"{where}: not valid JSON ({err.msg})") from None
            yield where, record


def write_jsonl(path: Path, records: list[dict]) -> Path:
    """One JSON object per line, keys sorted, written to a temporary file and renamed into place so a
    crash never leaves a half-written file behind; the parent directory is created."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    try:
        with partial.open("w", encoding="utf-8", newline="\n") as f:
            for record in records:
                f.write(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n")
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
    return path
