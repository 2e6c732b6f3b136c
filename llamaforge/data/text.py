"""Reading text documents for tokenizer training and pretraining.

Sources: plain text files (one document per line), JSONL files with a "text" field, and, when the
optional `datasets` library is installed, Parquet files and Hugging Face Hub dataset names (their
"text" column, train split).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from llamaforge.errors import UserError


def read_documents(sources: Iterable[str | Path]) -> Iterator[str]:
    """The documents of every source, in order. Missing files are reported before any is read."""
    sources = [str(source) for source in sources]
    for source in sources:
        if not _is_hub_name(source) and not Path(source).is_file():
            raise UserError(f"{source}: file not found")
    return _documents(sources)


def _is_hub_name(source: str) -> bool:
    """"org/name" (no file suffix, no such local path) is taken as a Hugging Face Hub dataset."""
    path = Path(source)
    return not path.exists() and not path.suffix and source.count("/") == 1 and not source.startswith((".", "/", "~"))


def _documents(sources: list[str]) -> Iterator[str]:
    for source in sources:
        path = Path(source)
        if path.suffix == ".parquet" or _is_hub_name(source):
            yield from _read_with_datasets(source)
        elif path.suffix == ".jsonl":
            yield from _read_jsonl(path)
        else:
            with path.open(encoding="utf-8") as lines:
                yield from (line.rstrip("\n") for line in lines)


def _read_jsonl(path: Path) -> Iterator[str]:
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise UserError(f"{path}:{number}: not valid JSON ({err.msg})") from None
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise UserError(f"{path}:{number}: field 'text': expected a string")
            yield record["text"]


def _read_with_datasets(source: str) -> Iterator[str]:
    try:
        import datasets
    except ImportError:
        raise UserError(f"{source}: reading Parquet files or Hub datasets needs `pip install datasets`") from None
    try:
        if source.endswith(".parquet"):
            dataset = datasets.load_dataset("parquet", data_files=source, split="train")
        else:
            dataset = datasets.load_dataset(source, split="train")
    except Exception as err:  # the library raises many types; the user needs the message, not the type
        raise UserError(f"{source}: cannot load ({str(err).splitlines()[0] if str(err) else type(err).__name__})") from None
    if "text" not in dataset.column_names:
        raise UserError(f"{source}: no 'text' column (columns: {', '.join(dataset.column_names)})")
    yield from dataset["text"]
