import pathlib

import pytest

from llamaforge.world import World
from llamaforge.world.export import ExportArgs, main


@pytest.fixture(scope="session")
def world() -> World:
    return World(seed=0)


@pytest.fixture(scope="session")
def exported(tmp_path_factory) -> pathlib.Path:
    """One full-size export (the default arguments), shared by the format tests."""
    return main(ExportArgs(out=tmp_path_factory.mktemp("world_export")))


@pytest.fixture(scope="session")
def first_task(world: World):
    """first_task(kind, category="helpful", split="train") -> (prompt messages, hidden task) of the
    first single-turn prompt of that kind."""
    def find(kind: str, category: str = "helpful", split: str = "train"):
        for record in world.prompts(category, split):
            if record["kind"] == kind and record["turns"] == 1:
                return record["messages"], world.task(record["messages"])
        raise LookupError(kind)
    return find
