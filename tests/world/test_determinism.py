"""Same seed -> byte-identical export; another seed -> another world."""

import os
import subprocess
import sys

from llamaforge.world import World
from llamaforge.world.export import ExportArgs, main

SMALL = dict(corpus_mb=0.2, sft_dialogs=200, preference_pairs=100, batches=1)


def _read_all(path):
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


def test_same_seed_same_bytes_other_seed_other_world(tmp_path):
    a = _read_all(main(ExportArgs(out=tmp_path / "a", seed=3, **SMALL)))
    b = _read_all(main(ExportArgs(out=tmp_path / "b", seed=3, **SMALL)))
    c = _read_all(main(ExportArgs(out=tmp_path / "c", seed=4, **SMALL)))
    assert a == b
    assert a.keys() == c.keys()
    differing = [name for name in a if a[name] != c[name]]
    assert "corpus.jsonl" in differing and "prompts_helpful_test.jsonl" in differing


def test_same_bytes_in_a_fresh_process(tmp_path):
    """String hashing is salted per process; the world must not depend on it."""
    main(ExportArgs(out=tmp_path / "here", seed=1, **SMALL))
    code = ("import pathlib; from llamaforge.world.export import ExportArgs, main; "
            f"main(ExportArgs(out=pathlib.Path({str(tmp_path / 'there')!r}), seed=1, "
            "corpus_mb=0.2, sft_dialogs=200, preference_pairs=100, batches=1))")
    subprocess.run([sys.executable, "-c", code], check=True, env=dict(os.environ, PYTHONHASHSEED="12345"))
    assert _read_all(tmp_path / "here") == _read_all(tmp_path / "there")


def test_different_seeds_give_different_entities_and_hazards():
    w0, w1 = World(0), World(1)
    assert w0.entities.countries != w1.entities.countries
    assert w0.hazards != w1.hazards
    assert World(0).entities == w0.entities and World(0).hazards == w0.hazards
