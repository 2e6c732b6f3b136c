"""A training run's directory: its identity (run.json), metrics.jsonl, checkpoints and resume.

    out/run.json                    what makes two runs the same run (refuses an incompatible --out)
    out/metrics.jsonl               one JSON object per logged step
    out/checkpoints/step-00000100/  a Hugging Face Llama directory + training_state.pt
    out/model/                      the final model

Checkpoints are written atomically (checkpoint.atomic_directory), so any `step-*` directory is
complete; leftovers of a save that was killed are hidden temporary directories, removed on start.
`training_state.pt` holds only tensors and plain values (optimizer state, step, RNG states as
tensors), so `torch.load(weights_only=True)` reads it.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from llamaforge.errors import UserError

TRAINING_STATE = "training_state.pt"


def checkpoints_dir(out: Path) -> Path:
    return out / "checkpoints"


def checkpoint_path(out: Path, step: int) -> Path:
    return checkpoints_dir(out) / f"step-{step:08d}"


def complete_checkpoints(out: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    folder = checkpoints_dir(out)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("step-*") if (p / TRAINING_STATE).is_file())


def remove_partial_saves(out: Path) -> None:
    """Delete what a save killed midway left behind (never a complete checkpoint or model)."""
    for leftover in [*checkpoints_dir(out).glob(".step-*"), *out.glob(".model.*")]:
        shutil.rmtree(leftover, ignore_errors=True)


def prune_checkpoints(out: Path, keep_last: int) -> None:
    """Keep the newest `keep_last` complete checkpoints (at least one: the newest is never removed)."""
    for old in complete_checkpoints(out)[: -max(keep_last, 1)]:
        shutil.rmtree(old, ignore_errors=True)


# Where the run directory and the working directory were when run.json was written: with them, a
# run directory moved together with the inputs beside it (a pipeline run's) still resumes.
RECORDED_AT = "recorded_at"


def check_run_identity(out: Path, identity: dict) -> None:
    """Record what defines this run, or refuse an `out` that holds a different one."""
    path = out / "run.json"
    identity = json.loads(json.dumps(identity))  # normalized: tuples -> lists, keys -> strings
    if not path.is_file():
        out.mkdir(parents=True, exist_ok=True)
        where = {"out": str(out.resolve()), "cwd": os.getcwd()}
        path.write_text(json.dumps({**identity, RECORDED_AT: where}, indent=2, sort_keys=True) + "\n")
        return
    recorded = json.loads(path.read_text())
    where = recorded.pop(RECORDED_AT, None)
    recorded, identity = flatten(recorded), flatten(identity)
    for key in sorted(set(identity) | set(recorded)):
        was, now = recorded.get(key), identity.get(key)
        if was != now and not (where and moved_with_the_run(was, now, where, out)):
            raise UserError(
                f"{path}: {out} holds an incompatible run ({key}: {was!r} there, {now!r} now); use another --out or "
                "the same settings"
            )


def moved_with_the_run(was, now, where: dict, out: Path) -> bool:
    """Whether two path values (or lists of them), `was` recorded when the run directory was at
    where["out"] and `now`, name the same place relative to the run directory."""
    if isinstance(was, list) and isinstance(now, list):
        return len(was) == len(now) and all(w == n or moved_with_the_run(w, n, where, out) for w, n in zip(was, now))
    if not (isinstance(was, str) and isinstance(now, str) and "/" in was and "/" in now):
        return False
    then = os.path.relpath(os.path.realpath(os.path.join(where["cwd"], was)), where["out"])
    return then == os.path.relpath(os.path.realpath(now), out.resolve())


def flatten(tree: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}, so a mismatch names the exact setting (an empty dict is a
    value of its own)."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def rng_state() -> dict[str, torch.Tensor]:
    """Every random generator's state, as tensors."""
    version, mt, gauss = random.getstate()
    _, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": torch.tensor([version, *mt], dtype=torch.int64),
        "python_gauss": torch.tensor([gauss is not None, gauss or 0.0], dtype=torch.float64),
        "numpy": torch.from_numpy(keys.astype(np.int64)),
        "numpy_extra": torch.tensor([pos, has_gauss, cached], dtype=torch.float64),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(state["torch"])
    version, *mt = state["python"].tolist()
    has_gauss, gauss = state["python_gauss"].tolist()
    random.setstate((version, tuple(mt), gauss if has_gauss else None))
    pos, has_gauss, cached = state["numpy_extra"].tolist()
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), int(pos), int(has_gauss), cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def load_training_state(checkpoint: Path) -> dict:
    path = checkpoint / TRAINING_STATE
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt or not weights-only: refuse, never unpickle freely
        raise UserError(f"{path}: cannot load training state ({str(err).splitlines()[0]})") from None


def read_metrics(path: Path) -> list[dict]:
    """The entries of a metrics.jsonl (none if it does not exist)."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


class MetricsLog:
    """Appends one JSON object per line to metrics.jsonl (main process only)."""

    def __init__(self, path: Path, enabled: bool):
        self.path, self.enabled = path, enabled

    def truncate_after(self, step: int) -> None:
        """Drop entries a killed run logged after the checkpoint it resumes from."""
        if not self.enabled or not self.path.is_file():
            return
        kept = [line for line in self.path.read_text().splitlines() if line and json.loads(line).get("step", 0) <= step]
        self.path.write_text("".join(line + "\n" for line in kept))

    def write(self, record: dict) -> None:
        if self.enabled:
            with self.path.open("a") as f:
                f.write(json.dumps(record, sort_keys=True) + "\n")
