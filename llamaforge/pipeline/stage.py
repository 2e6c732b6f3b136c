"""What a pipeline stage is: a name, the upstream stages it reads, its settings, and a function.

A stage function takes a `StageContext` and returns `(outputs, metrics)`: outputs are paths it
wrote (recorded relative to the run directory), metrics its headline numbers. It finds its inputs
only through the context, i.e. through the upstream records, never by guessing sibling folders.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from llamaforge.pipeline.presets import PipelinePreset
from llamaforge.pipeline.records import normalized

# Fields that say where a stage command reads or writes: the pipeline sets them, they are not settings.
PATH_FIELDS = ("out", "init", "data", "val_data", "tokenizer")


@dataclass
class StageContext:
    run_dir: Path
    out: Path  # this stage's folder
    preset: PipelinePreset
    seed: int
    upstream: dict[str, dict]  # the records of the stages named in Stage.inputs
    parts: dict[str, float] = field(default_factory=dict)  # wall seconds of the stage's parts, by name

    @contextmanager
    def timed(self, part: str) -> Iterator[None]:
        """Adds the wall seconds of the `with` block to `parts[part]`; the record keeps them in its
        metrics' "seconds", so that a stage's time says where it went (training, evaluation, ...)."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.parts[part] = self.parts.get(part, 0.0) + time.perf_counter() - started

    def input(self, stage: str, key: str) -> Path | list[Path]:
        """An output of an upstream stage (a path or a list of paths), as its record names it."""
        value = self.upstream[stage]["outputs"][key]
        return [self.run_dir / v for v in value] if isinstance(value, list) else self.run_dir / value


Outputs = dict[str, Path | list[Path]]


@dataclass(frozen=True)
class Stage:
    name: str
    inputs: tuple[str, ...]
    settings: Callable[[PipelinePreset, int], dict]
    run: Callable[[StageContext], tuple[Outputs, dict]]


def command_settings(args, seed: int) -> dict:
    """A stage command's preset values as settings: every field but the paths, with the run's seed."""
    values = {k: v for k, v in dataclasses.asdict(args).items() if k not in PATH_FIELDS}
    return normalized({**values, "seed": seed})
