"""Prompt files and sample files, the inputs of the RLHF stages (paper §3.2.3).

A prompt record is `{"messages": [...], "category": "helpful"|"adversarial"|"borderline", ...}`:
a dialog ending on a user turn; the category says which guideline applies (adversarial and
borderline prompts are safety prompts, the `is_safety(p)` of the piecewise reward); other fields
are kept. A sample record adds `"response"`: an answer produced elsewhere (any engine that reads
Hugging Face checkpoints), to be scored and selected like our own samples.
"""

from __future__ import annotations

from pathlib import Path

from llamaforge.data.jsonl import jsonl_records
from llamaforge.errors import UserError
from llamaforge.tokenizer import SPECIAL_TAGS, DialogError, validate_dialog

CATEGORIES = ("helpful", "adversarial", "borderline")


def is_safety_prompt(record: dict) -> bool:
    return record["category"] != "helpful"


def prompt_key(messages: list[dict]) -> tuple:
    """What identifies a prompt across files: its messages."""
    return tuple((m["role"], m["content"]) for m in messages)


def _prompt(where: str, record) -> dict:
    if not isinstance(record, dict) or "messages" not in record:
        raise UserError(f"{where}: missing field 'messages'")
    try:
        messages = validate_dialog(record["messages"], ends_with="user")
    except DialogError as err:
        raise UserError(f"{where}: field 'messages': {err}") from None
    category = record.get("category", "helpful")
    if category not in CATEGORIES:
        raise UserError(f"{where}: field 'category': {category!r} is not one of {', '.join(CATEGORIES)}")
    return {**record, "messages": messages, "category": category}


def read_prompts(paths: list[Path]) -> list[dict]:
    """Every prompt record of the files, validated; errors name the file, line and field. Files
    without a single prompt are an error: every command that reads prompts has nothing to do then."""
    records = [_prompt(where, record) for path in paths for where, record in jsonl_records(path)]
    if not records:
        raise UserError(f"{', '.join(map(str, paths))}: no prompt (empty files)")
    return records


def read_samples(path: Path) -> list[dict]:
    """Prompt records with a `"response"`, several per prompt allowed."""
    samples = []
    for where, record in jsonl_records(path):
        sample = _prompt(where, record)
        response = sample.get("response")
        if not isinstance(response, str) or not response.strip():
            raise UserError(f"{where}: field 'response': expected a non-empty string")
        tag = next((t for t in SPECIAL_TAGS if t in response), None)
        if tag is not None:
            raise UserError(f"{where}: field 'response': special tag {tag!r} is not allowed")
        samples.append(sample)
    return samples
