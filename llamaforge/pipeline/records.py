"""Stage records: what a pipeline stage computed, from what, and where it put it.

Each stage writes `stage.json` last:

    {"stage": "sft", "settings": {...}, "inputs": {"pretrain": "<hash>", ...},
     "outputs": {"model": "sft/model", ...}, "metrics": {...}, "seconds": 90.5}

`settings` are the values that change what the stage computes (its preset values and the seed);
`inputs` name the upstream records it read, each by the hash of that record's settings, inputs and
outputs (so a change anywhere upstream changes every hash below it); `outputs` are paths relative
to the run directory, the only way a later stage finds them. A re-run skips a stage only when its
record holds the settings and inputs it would be given now.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from llamaforge.train.state import flatten

RECORD = "stage.json"


def normalized(value):
    """JSON's view of a value (tuples become lists, paths and other objects strings)."""
    return json.loads(json.dumps(value, default=str))


def record_hash(record: dict) -> str:
    """The content hash of a record: its settings, inputs and outputs (not its metrics or time)."""
    identity = {key: record[key] for key in ("stage", "settings", "inputs", "outputs")}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def read_record(stage_dir: Path) -> dict | None:
    path = stage_dir / RECORD
    return json.loads(path.read_text()) if path.is_file() else None


def write_record(stage_dir: Path, record: dict) -> None:
    """Atomically: a stage is complete exactly when its record exists."""
    partial = stage_dir / (RECORD + ".tmp")
    partial.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    partial.replace(stage_dir / RECORD)


def first_difference(recorded: dict, asked: dict) -> tuple[str, object, object] | None:
    """The first setting (in sorted order) whose recorded and asked values differ, if any."""
    recorded, asked = flatten(normalized(recorded)), flatten(normalized(asked))
    for key in sorted(set(recorded) | set(asked)):
        if recorded.get(key, "<unset>") != asked.get(key, "<unset>"):
            return key, recorded.get(key, "<unset>"), asked.get(key, "<unset>")
    return None
