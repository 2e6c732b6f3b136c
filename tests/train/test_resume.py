"""Checkpoints and exact resume of `llamaforge pretrain`: a run killed with SIGKILL and resumed logs
the same losses as one never interrupted; a crash inside a save leaves the previous checkpoint
usable; a finished run is not retrained; the result loads in Hugging Face transformers."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from llamaforge import Llama
from llamaforge.tokenizer import train_tokenizer
from llamaforge.train import pretrain
from llamaforge.train.state import complete_checkpoints, load_training_state

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Models this small run fastest on one thread (and the runs compared here all use the same)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def shared_data(tmp_path_factory) -> tuple[Path, Path]:
    """The world's first 2,000 documents as JSONL and a 512-token tokenizer trained on them, made
    once and passed to every run with --data and --tokenizer."""
    from llamaforge.world import World

    root = tmp_path_factory.mktemp("pretrain-data")
    documents = World(0).corpus_documents()[:2000]
    data = root / "corpus.jsonl"
    data.write_text("".join(json.dumps({"text": d}) + "\n" for d in documents))
    tokenizer = train_tokenizer(documents, 512, root / "tokenizer")
    return data, tokenizer


def smoke_args(out: Path, shared_data, **overrides) -> pretrain.PretrainArgs:
    data, tokenizer = shared_data
    return dataclasses.replace(
        pretrain.smoke(), out=out, data=[str(data)], tokenizer=tokenizer, device="cpu", **overrides
    )


@pytest.fixture(scope="module")
def finished(shared_data, tmp_path_factory) -> Path:
    """A complete smoke pretraining run (20 steps, checkpoints at 10 and 20), in this process."""
    out = tmp_path_factory.mktemp("finished") / "run"
    pretrain.main(smoke_args(out, shared_data))
    return out


def training_records(out: Path) -> list[dict]:
    return [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "split" not in r]


def validation_records(out: Path) -> list[dict]:
    return [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if r.get("split") == "val"]


def hidden_entries(out: Path) -> list[Path]:
    return [p for p in [*out.iterdir(), *(out / "checkpoints").iterdir()] if p.name.startswith(".")]


# --- SIGKILL and exact resume ----------------------------------------------------------------------


def test_sigkill_then_resume_logs_the_same_losses(shared_data, tmp_path):
    data, tokenizer = shared_data
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}

    def command(out: Path) -> list[str]:
        # The same flags for every run: max_steps is part of the run's identity.
        return [
            sys.executable, "-m", "llamaforge", "pretrain", "--preset", "smoke", "--out", str(out),
            "--max-steps", "60", "--save-every", "10", "--log-every", "1", "--device", "cpu",
            "--tokenizer", str(tokenizer), "--data", str(data),
        ]

    a, b = tmp_path / "A", tmp_path / "B"
    with (tmp_path / "A.log").open("w") as log_a, (tmp_path / "B.log").open("w") as log_b:
        uninterrupted = subprocess.Popen(command(a), cwd=REPO, env=env, stdout=log_a, stderr=subprocess.STDOUT)
        killed = subprocess.Popen(command(b), cwd=REPO, env=env, stdout=log_b, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while not list((b / "checkpoints").glob("step-*")) and killed.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        assert uninterrupted.wait(timeout=180) == 0, (tmp_path / "A.log").read_text()[-3000:]
    assert killed.returncode == -signal.SIGKILL, (tmp_path / "B.log").read_text()[-3000:]
    assert not (b / "summary.json").exists() and not (b / "model").exists()  # killed before the end
    first = [p.name for p in complete_checkpoints(b)]
    assert first and first[-1] < "step-00000060", first

    resumed = subprocess.run(command(b), cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"from {first[-1]}" in resumed.stdout  # it resumed, not restarted

    train_a, train_b = training_records(a), training_records(b)
    assert [r["step"] for r in train_a] == list(range(1, 61))
    assert [r["step"] for r in train_b] == list(range(1, 61))  # every step once, in order
    for ra, rb in zip(train_a, train_b):
        assert (ra["step"], ra["loss"], ra["grad_norm"], ra["lr"], ra["tokens"]) == (
            rb["step"], rb["loss"], rb["grad_norm"], rb["lr"], rb["tokens"]
        )
    assert train_a[-1]["loss"] < train_a[0]["loss"]  # it did train
    val_a, val_b = validation_records(a), validation_records(b)
    assert [r["step"] for r in val_a] == [r["step"] for r in val_b] == [0, 10, 20, 30, 40, 50, 60]
    assert [r["loss"] for r in val_a] == [r["loss"] for r in val_b]
    # The final weights are bit-identical.
    assert (a / "model" / "model.safetensors").read_bytes() == (b / "model" / "model.safetensors").read_bytes()
    assert hidden_entries(b) == []


# --- a crash inside a checkpoint save --------------------------------------------------------------


def test_crash_during_save_keeps_the_previous_checkpoint(shared_data, finished, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    real_save = torch.save
    saves: list[Path] = []

    def failing_save(obj, f, *args, **kwargs):
        saves.append(Path(f))
        if len(saves) == 2:  # the second checkpoint (step 20)
            raise OSError("No space left on device (simulated)")
        return real_save(obj, f, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(torch, "save", failing_save)
        # Like a process killed in the middle of the save, nothing gets to clean up after it.
        m.setattr(shutil, "rmtree", lambda *args, **kwargs: None)
        with pytest.raises(OSError, match="simulated"):
            pretrain.main(smoke_args(out, shared_data))
    assert [p.name for p in saves] == ["training_state.pt"] * 2
    assert saves[1].parent.name.startswith(".step-00000020.")  # it was writing into a hidden temporary

    checkpoints = out / "checkpoints"
    assert complete_checkpoints(out) == [checkpoints / "step-00000010"]
    assert [p.name for p in checkpoints.iterdir() if not p.name.startswith(".")] == ["step-00000010"]
    assert len(hidden_entries(out)) == 1  # the half-written step 20
    assert not (out / "model").exists() and not (out / "summary.json").exists()
    # The previous checkpoint is whole and loadable.
    assert load_training_state(checkpoints / "step-00000010")["step"] == 10
    model = Llama.from_pretrained(checkpoints / "step-00000010")
    assert model.config.vocab_size == 512
    assert max(r["step"] for r in training_records(out)) == 20  # steps 11-20 were logged, then lost

    capsys.readouterr()
    pretrain.main(smoke_args(out, shared_data))
    assert "from step-00000010" in capsys.readouterr().out
    assert hidden_entries(out) == []
    assert [p.name for p in complete_checkpoints(out)] == ["step-00000010", "step-00000020"]
    assert [r["step"] for r in training_records(out)] == [1, 5, 10, 15, 20]  # log_every 5, no duplicates
    # The same numbers as the uninterrupted run; only the timings differ.
    timings = {"tokens_per_s", "elapsed_s", "device_hours", "energy_kwh", "tco2eq"}
    untimed = lambda records: [{k: v for k, v in r.items() if k not in timings} for r in records]  # noqa: E731
    assert untimed(training_records(out)) == untimed(training_records(finished))
    assert validation_records(out) == validation_records(finished)
    ours = Llama.from_pretrained(out / "model").state_dict()
    theirs = Llama.from_pretrained(finished / "model").state_dict()
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)


# --- a finished run --------------------------------------------------------------------------------


def test_rerunning_a_finished_run_changes_nothing(shared_data, finished, tmp_path, capsys):
    out = tmp_path / "copy"
    shutil.copytree(finished, out)
    weights = out / "model" / "model.safetensors"
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in [weights, out / "summary.json", out / "metrics.jsonl"]}
    checkpoints = sorted(p.name for p in (out / "checkpoints").iterdir())
    capsys.readouterr()
    pretrain.main(smoke_args(out, shared_data))
    assert "already trained for 20 steps" in capsys.readouterr().out
    assert weights.stat().st_mtime_ns == before[weights][0]
    for path, (_, content) in before.items():
        assert path.read_bytes() == content, path
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == checkpoints == ["step-00000010", "step-00000020"]


def test_transformers_loads_the_pretrained_model(finished):
    transformers = pytest.importorskip("transformers")
    ours = Llama.from_pretrained(finished / "model").eval()
    theirs = transformers.LlamaForCausalLM.from_pretrained(finished / "model").eval()
    tokens = torch.randint(0, 512, (2, 48), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = (ours(tokens) - theirs(tokens).logits).abs().max().item()
    assert diff <= 1e-4
    summary = json.loads((finished / "summary.json").read_text())
    assert summary["steps"] == 20 and summary["tokens"] == 20 * 8 * 64


def test_no_validation_split(shared_data, tmp_path):
    """--val-fraction 0 holds out nothing: the run trains and logs no validation."""
    out = tmp_path / "run"
    pretrain.main(smoke_args(out, shared_data, val_fraction=0.0, max_steps=2))
    assert json.loads((out / "data" / "tokens" / "tokens.json").read_text())["documents"]["val"] == 0
    assert validation_records(out) == []
    assert [r["step"] for r in training_records(out)] == [1, 2]
    assert json.loads((out / "summary.json").read_text())["val_loss"] is None
