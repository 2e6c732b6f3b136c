"""Preference data for the reward models (paper §3.2.1): one record per annotated pair.

Formats read (one JSON record per line; see `read_preferences`):
- llamaforge's own: {"prompt": messages-or-string, "chosen": str, "rejected": str, "rating":
  "significantly_better" | "better" | "slightly_better" | "negligibly_better", "is_safety": bool,
  "safety_meta": optional}
- TRL's preference format: {"chosen", "rejected", optional "prompt", optional numeric "margin"}
- Anthropic HH-RLHF transcripts: {"chosen": "\\n\\nHuman: ...\\n\\nAssistant: ...", "rejected": "..."}
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from llamaforge.errors import UserError
from llamaforge.losses import RATINGS
from llamaforge.tokenizer import SPECIAL_TAGS, DialogError, validate_dialog


@dataclass(frozen=True)
class Preference:
    prompt: tuple[dict, ...]  # messages, ending on a user turn
    chosen: str  # the preferred assistant response
    rejected: str
    rating: str | None  # one of llamaforge.losses.RATINGS; None when the source has no rating
    margin: float | None  # an explicit margin (TRL's format), used as is instead of the rating's
    is_safety: bool
    safety_meta: str | None = None  # chosen_safe_rejected_unsafe | both_safe | both_unsafe


# paper §3.2.1: safety pairs where the chosen response is unsafe and the rejected one safe are
# excluded from the data, so that combination has no label.
SAFETY_META = ("chosen_safe_rejected_unsafe", "both_safe", "both_unsafe")
HUMAN, ASSISTANT = "Human:", "Assistant:"  # HH-RLHF turn labels


class _Invalid(Exception):
    """One record's problem; `read_preferences` adds the file and line."""

    def __init__(self, field: str | None, problem: str):
        super().__init__(problem)
        self.field, self.problem = field, problem


def read_preferences(
    path: Path, on_invalid: Literal["error", "drop"] = "error", default_is_safety: bool = False
) -> tuple[list[Preference], int]:
    """The pairs of a JSONL file in any of the three formats, and how many invalid records were
    dropped. on_invalid="error" raises UserError naming file, line and field at the first bad record;
    "drop" skips bad records (public sets such as HH-RLHF hold a few malformed ones).
    default_is_safety: the guideline of records that do not say (TRL and HH-RLHF carry no label)."""
    if on_invalid not in ("error", "drop"):
        raise UserError(f"on_invalid: expected 'error' or 'drop', got {on_invalid!r}")
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    preferences, dropped = [], 0
    with path.open("rb") as lines:  # bytes, so that bad UTF-8 is reported with its line
        for number, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            try:
                preferences.append(_parse_line(raw, default_is_safety))
            except _Invalid as err:
                if on_invalid == "drop":
                    dropped += 1
                    continue
                field = f" field '{err.field}':" if err.field else ""
                raise UserError(f"{path}:{number}:{field} {err.problem}") from None
    return preferences, dropped


def read_all(
    paths: Iterable[Path], on_invalid: Literal["error", "drop"] = "error", default_is_safety: bool = False
) -> tuple[list[Preference], int]:
    """The pairs of several files, in order, and the total number dropped."""
    preferences, dropped = [], 0
    for path in paths:
        more, n = read_preferences(path, on_invalid, default_is_safety)
        preferences += more
        dropped += n
    return preferences, dropped


def effective_margin(pref: Preference, margins: dict[str, float]) -> float:
    """The margin m of the ranking loss (paper eq. 2): an explicit one wins, else the rating's
    (paper §3.2.2, Table 27), else 0 (no rating: plain binary ranking loss, eq. 1)."""
    if pref.margin is not None:
        return pref.margin
    if pref.rating is not None:
        return margins[pref.rating]
    return 0.0


def to_record(pref: Preference) -> dict:
    """Our own format; optional fields are written only when set, so `read_preferences` gives back
    the same Preference (a record without "rating" reads through the TRL branch to the same values)."""
    record = {"prompt": [dict(m) for m in pref.prompt], "chosen": pref.chosen, "rejected": pref.rejected}
    if pref.rating is not None:
        record["rating"] = pref.rating
    if pref.margin is not None:
        record["margin"] = pref.margin
    record["is_safety"] = pref.is_safety
    if pref.safety_meta is not None:
        record["safety_meta"] = pref.safety_meta
    return record


def _parse_line(raw: bytes, default_is_safety: bool) -> Preference:
    try:
        record = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise _Invalid(None, "not valid UTF-8") from None
    except json.JSONDecodeError as err:
        raise _Invalid(None, f"not valid JSON ({err.msg})") from None
    if not isinstance(record, dict):
        raise _Invalid(None, f"expected a JSON object, got {type(record).__name__}")
    for field in ("chosen", "rejected"):
        if field not in record:
            raise _Invalid(field, "missing")
    # Format from the record's shape: only our format carries an annotator "rating"; a pair of bare
    # strings with no "prompt" can only be HH-RLHF transcripts (the prompt is inside them); anything
    # else is TRL's (an explicit "prompt", or conversations whose shared prefix is the prompt). Our
    # records without a rating (`to_record` of TRL/HH pairs) read through the TRL branch unchanged.
    if "rating" in record:
        return _parse_ours(record)
    if "prompt" not in record and isinstance(record["chosen"], str):
        return _parse_hh(record, default_is_safety)
    return _parse_trl(record, default_is_safety)


def _parse_ours(record: dict) -> Preference:
    for field in ("prompt", "is_safety"):
        if field not in record:
            raise _Invalid(field, "missing")
    rating = record["rating"]
    if rating not in RATINGS:
        raise _Invalid("rating", f"{_short(rating)} is not one of {', '.join(RATINGS)}")
    prompt = _checked_prompt(_prompt(record["prompt"], "prompt"), "prompt")
    chosen, rejected = _response(record["chosen"], "chosen"), _response(record["rejected"], "rejected")
    return _pair(record, prompt, chosen, rejected, rating, is_safety=False)


def _parse_trl(record: dict, default_is_safety: bool) -> Preference:
    given = record.get("prompt")
    prefix = None if given is None else _prompt(given, "prompt")
    chosen_prompt, chosen = _completion(prefix, record["chosen"], "chosen")
    rejected_prompt, rejected = _completion(prefix, record["rejected"], "rejected")
    if rejected_prompt != chosen_prompt:
        raise _Invalid("rejected", "the conversation before the final assistant message differs from 'chosen''s")
    where = "prompt" if given is not None else "chosen"
    return _pair(record, _checked_prompt(chosen_prompt, where), chosen, rejected, None, default_is_safety)


def _parse_hh(record: dict, default_is_safety: bool) -> Preference:
    chosen_prompt, chosen = _final_assistant(_transcript(record["chosen"], "chosen"), "chosen")
    rejected_prompt, rejected = _final_assistant(_transcript(record["rejected"], "rejected"), "rejected")
    if rejected_prompt != chosen_prompt:
        raise _Invalid("rejected", "the turns before the final Assistant turn differ from 'chosen''s")
    return _pair(record, _checked_prompt(chosen_prompt, "chosen"), chosen, rejected, None, default_is_safety)


def _pair(record: dict, prompt: tuple, chosen: str, rejected: str, rating, is_safety: bool) -> Preference:
    """The Preference, with the optional fields every format may carry (margin, is_safety,
    safety_meta); our format requires is_safety, the others fall back to the default."""
    if chosen.strip() == rejected.strip():
        raise _Invalid("rejected", "identical to 'chosen' (a pair must compare two different responses)")
    margin = record.get("margin")
    is_number = isinstance(margin, (int, float)) and not isinstance(margin, bool)  # JSON true is no margin
    if margin is not None and not (is_number and math.isfinite(margin)):
        raise _Invalid("margin", f"expected a finite number, got {_short(margin)}")
    is_safety = record.get("is_safety", is_safety)
    if not isinstance(is_safety, bool):
        raise _Invalid("is_safety", f"expected true or false, got {_short(is_safety)}")
    safety_meta = record.get("safety_meta")
    if safety_meta is not None and safety_meta not in SAFETY_META:
        raise _Invalid("safety_meta", f"{_short(safety_meta)} is not one of {', '.join(SAFETY_META)}")
    margin = None if margin is None else float(margin)
    return Preference(prompt, chosen, rejected, rating, margin, is_safety, safety_meta)


def _prompt(value, field: str) -> list[dict]:
    """A prompt given as a string (one user message) or as messages; validated by the caller."""
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    return _messages(value, field)


def _messages(value, field: str) -> list[dict]:
    if not isinstance(value, list):
        raise _Invalid(field, f"expected a string or a list of messages, got {type(value).__name__}")
    odd = next((i for i, m in enumerate(value) if not isinstance(m, dict)), None)
    if odd is not None:  # validate_dialog reads messages as dicts before checking them
        raise _Invalid(field, f"message {odd}: expected an object with 'role' and 'content'")
    return [dict(m) for m in value]


def _checked_prompt(messages: list[dict], field: str) -> tuple[dict, ...]:
    try:
        validate_dialog(list(messages), ends_with="user")
    except DialogError as err:  # a prompt taken from a conversation is named as such
        problem = str(err) if field == "prompt" else f"the turns before the final response: {err}"
        raise _Invalid(field, problem) from None
    return tuple(messages)


def _response(value, field: str) -> str:
    """A response text: non-empty, and free of chat tags that would corrupt its encoding (Meta's chat format)."""
    if not isinstance(value, str):
        raise _Invalid(field, f"expected a string, got {type(value).__name__}")
    if not value.strip():
        raise _Invalid(field, "the response is empty")
    tag = next((t for t in SPECIAL_TAGS if t in value), None)
    if tag is not None:
        raise _Invalid(field, f"special tag {tag!r} is not allowed in a response")
    return value


def _completion(prefix: list[dict] | None, value, field: str) -> tuple[list[dict], str]:
    """TRL's chosen/rejected: a response string after the given prompt, or messages that continue
    it (or, with no prompt, the whole conversation); the response is the final assistant message."""
    if isinstance(value, str):
        if prefix is None:
            raise _Invalid(field, "a string response needs a 'prompt' field")
        return prefix, _response(value, field)
    conversation = (prefix or []) + _messages(value, field)
    return _final_assistant(conversation, field)


def _final_assistant(conversation: list[dict], field: str) -> tuple[list[dict], str]:
    if not conversation or conversation[-1].get("role") != "assistant":
        raise _Invalid(field, "the conversation must end with an assistant message")
    return conversation[:-1], _response(conversation[-1].get("content"), field)


def _transcript(text: str, field: str) -> list[dict]:
    """HH-RLHF's "\\n\\nHuman: ...\\n\\nAssistant: ..." as messages. A label counts only at the start
    of a "\\n\\n"-separated segment, so "Human:" inside a turn's text stays text; other segments
    continue the current turn (multi-paragraph answers)."""
    if not isinstance(text, str):
        raise _Invalid(field, f"expected a string, got {type(text).__name__}")
    turns: list[tuple[str, list[str]]] = []
    for segment in text.split("\n\n"):
        label = next((lab for lab in (HUMAN, ASSISTANT) if segment.startswith(lab)), None)
        if label is not None:
            turns.append(("user" if label == HUMAN else "assistant", [segment[len(label) :]]))
        elif turns:
            turns[-1][1].append(segment)
        elif segment.strip():
            raise _Invalid(field, "text before the first 'Human:' turn (not an HH-RLHF transcript)")
    if not any(role == "user" for role, _ in turns):
        raise _Invalid(field, "no 'Human:' turn (not an HH-RLHF transcript)")
    if turns[-1][0] != "assistant":
        raise _Invalid(field, "no final 'Assistant:' turn")
    return [{"role": role, "content": "\n\n".join(parts).strip()} for role, parts in turns]


def _short(value) -> str:
    """A value for a one-line message: repr escapes newlines, and long values are cut."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
