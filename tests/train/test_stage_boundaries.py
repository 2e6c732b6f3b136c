"""What a stage's main may assume and must guarantee: pretrain reads only the data it is given (the
command supplies the world's corpus, llamaforge/world/pretrain_default.py), and every stage leaves
the process group however it ends (distributed.distributed_run)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch.distributed as dist

from llamaforge.errors import UserError
from llamaforge.train import distributed, pretrain
from llamaforge.world import pretrain_default

ROOT = Path(__file__).resolve().parents[2]


# --- pretrain's data -------------------------------------------------------------------------------


def test_pretrain_main_without_data_is_refused(tmp_path):
    with pytest.raises(UserError) as err:
        pretrain.main(pretrain.PretrainArgs(out=tmp_path / "run", device="cpu"))
    message = str(err.value)
    assert "--data" in message and "\n" not in message
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_pretrain_stage_does_not_import_the_world():
    code = "import sys, llamaforge.train.pretrain; print([m for m in sys.modules if m.startswith('llamaforge.world')])"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    source = (ROOT / "llamaforge" / "train" / "pretrain.py").read_text()
    assert "llamaforge.world" not in source and "World" not in source  # not even a deferred import


class FakeWorld:
    def __init__(self, seed):
        self.seed = seed

    def corpus_documents(self):
        return [f"the first document of world {self.seed} .", 'a "quoted" second one\nover two lines']


@pytest.fixture
def captured(monkeypatch):
    """pretrain.main replaced by a recorder; the world replaced by a two-document one."""
    calls = []
    monkeypatch.setattr(pretrain, "main", lambda args: calls.append(args) or args.out)
    monkeypatch.setattr(pretrain_default, "World", FakeWorld)
    monkeypatch.delenv("RANK", raising=False)
    return calls


def test_command_without_data_writes_the_world_corpus(tmp_path, captured):
    from llamaforge.cli import COMMANDS

    assert COMMANDS["pretrain"] == (pretrain.PretrainArgs, pretrain_default.pretrain_main)
    out = tmp_path / "run"
    pretrain_default.pretrain_main(pretrain.PretrainArgs(out=out, seed=7))
    corpus = out / "data" / "world_corpus.jsonl"
    (args,) = captured
    assert args.data == [str(corpus)] and args.out == out and args.seed == 7
    lines = corpus.read_text().splitlines()
    assert [json.loads(line) for line in lines] == [{"text": d} for d in FakeWorld(7).corpus_documents()]
    assert [p.name for p in corpus.parent.iterdir()] == ["world_corpus.jsonl"]  # no temporary left

    # A re-run (a resume) reuses the file; given --data, the world is not touched.
    corpus.write_text('{"text": "kept"}\n')
    pretrain_default.pretrain_main(pretrain.PretrainArgs(out=out, seed=7))
    assert corpus.read_text() == '{"text": "kept"}\n'
    pretrain_default.pretrain_main(pretrain.PretrainArgs(out=tmp_path / "mine", data=["my.txt"]))
    assert captured[-1].data == ["my.txt"] and not (tmp_path / "mine").exists()


def test_only_the_main_process_writes_the_world_corpus(tmp_path, captured, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    pretrain_default.pretrain_main(pretrain.PretrainArgs(out=tmp_path / "run"))
    assert captured[0].data == [str(tmp_path / "run" / "data" / "world_corpus.jsonl")]
    assert not (tmp_path / "run").exists()  # rank 0 writes it; the other ranks never read it


# --- leaving the process group ---------------------------------------------------------------------


@pytest.fixture
def closes(monkeypatch):
    calls = []
    monkeypatch.setattr(distributed, "close_distributed", lambda barrier=True: calls.append(barrier))
    return calls


def test_distributed_run_closes_when_the_body_ends_or_raises(closes):
    with distributed.distributed_run("cpu") as env:
        assert env.world_size == 1
    assert closes == [True]  # the normal end waits for every process
    with pytest.raises(RuntimeError, match="inside"):
        with distributed.distributed_run("cpu"):
            raise RuntimeError("inside")
    assert closes == [True, False]  # no barrier: the other processes may never reach it


def test_a_stage_that_fails_inside_still_closes(tmp_path, closes):
    with pytest.raises(UserError, match="unknown preset"):
        pretrain.main(pretrain.PretrainArgs(out=tmp_path / "run", data=["x.txt"], model="nope", device="cpu"))
    assert closes == [False]


def test_a_real_process_group_is_destroyed_when_the_body_raises(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        with pytest.raises(RuntimeError, match="inside"):
            with distributed.distributed_run("cpu"):
                assert dist.is_initialized()
                raise RuntimeError("inside")
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
