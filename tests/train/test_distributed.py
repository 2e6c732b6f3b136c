"""Data-parallel pretraining under torchrun (gloo on CPU) against the same run in one process.

A step holds the same sequences whatever the number of processes (pretrain.step_micro_batches),
the loss is divided by the step's global token count, and the data-parallel gradient averaging is
undone (loop.train), so a 2-process run, FSDP2 or DDP, must follow the 1-process loss curve, and a
checkpoint written by 2 processes must resume in 1 process as if the run had never stopped.

Tolerance. Everything is fp32 (`--precision fp32`: "auto" would pick bf16 on a CPU with bf16 kernels). The only differences between 1 and
2 processes are the order of floating-point sums: one process runs the step's 8 sequences as two
micro-batches of 4 and accumulates gradients locally; each of two processes takes 4 of them (rank r
every 2nd one) as two micro-batches of 2, and the processes add their sums with all-reduce or
reduce-scatter; the matmuls see other batch shapes. fp32 rounding is ~6e-8 relative, i.e. ~5e-7
on losses of ~6: measured on a 2-core CPU (torch 2.13), the curves differ by at most 9.5e-7 (1-2
ulps) over the 12 steps, gradient norms by 2.4e-7, weights after 6 steps by 1.2e-7. TOL = 1e-4
allows ~100x that for other CPUs, thread counts and kernels, and nothing more: the loss moves by
more than 10 * TOL every step and ~8000 * TOL over the run (asserted below), so a wrong batch,
step, learning rate or resumed state fails; so does a wrongly scaled gradient (a missing
`* world_size` moved the loss by 4e-3 and the gradient norm by 0.6; resuming without the optimizer
state moved the loss by 6e-2).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from llamaforge.model import Llama
from llamaforge.tokenizer import train_tokenizer
from llamaforge.train.state import TRAINING_STATE, checkpoint_path
from llamaforge.world import World

STEPS, SAVE_EVERY = 12, 6
TOL = 1e-4  # |loss difference| allowed between 1 and 2 processes (see the module docstring)
PARAM_TOL = 1e-4  # |weight difference| allowed between their checkpoints after 6 steps
RUN_ARGS = [
    "--preset", "smoke", "--max-steps", str(STEPS), "--save-every", str(SAVE_EVERY), "--log-every", "1", "--device", "cpu",
]
TIMEOUT_S = 300  # per subprocess: a run takes seconds, a hang must not stall the suite


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, Path]:
    """A small JSONL corpus of the built-in world and a 512-token tokenizer trained on it."""
    folder = tmp_path_factory.mktemp("distributed_data")
    documents = World(0).corpus_documents()[:1500]
    corpus = folder / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": doc}) + "\n" for doc in documents))
    tokenizer = train_tokenizer(documents, 512, folder / "tokenizer")
    return corpus, tokenizer


def pretrain(
    out: Path, data: tuple[Path, Path], processes: int = 1, parallel: str | None = None, extra: list[str] | None = None
) -> str:
    """Run `llamaforge pretrain` (under torchrun when processes > 1); returns its output."""
    corpus, tokenizer = data
    args = ["-m", "llamaforge", "pretrain", *RUN_ARGS, "--out", str(out), "--data", str(corpus), "--tokenizer", str(tokenizer)]
    args += extra or ["--precision", "fp32"]
    if parallel:
        # Each process accumulates 2 micro-batches of 2 sequences (gradient sync skipped on the
        # first), where one process runs 2 micro-batches of 4: accumulation is exercised too.
        args += ["--parallel", parallel, "--micro-batch-size", "2"]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    if processes > 1:
        # torchrun as a module of this interpreter; one thread per process on a 2-core machine.
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes), *args]
        env["OMP_NUM_THREADS"] = "1"
    else:
        command = [sys.executable, *args]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{' '.join(command)} exited with {result.returncode}:\n{output[-6000:]}"
    return output


def losses(out: Path, split: str = "train", key: str = "loss") -> dict[int, float]:
    """step -> loss (or another logged value) from metrics.jsonl; asserts each step is logged once."""
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line]
    records = [r for r in records if (r.get("split") == "val") == (split == "val")]
    steps = [r["step"] for r in records]
    assert len(steps) == len(set(steps)), f"{out}: {split} steps logged more than once: {steps}"
    return {r["step"]: r[key] for r in records}


def max_difference(curve: dict[int, float], reference: dict[int, float]) -> float:
    assert curve.keys() == reference.keys(), (sorted(curve), sorted(reference))
    return max(abs(curve[s] - reference[s]) for s in reference)


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("one_process") / "run"
    pretrain(out, data)
    return out


@pytest.fixture(scope="module")
def fsdp(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fsdp") / "run"
    pretrain(out, data, processes=2, parallel="fsdp")
    return out


@pytest.fixture(scope="module")
def ddp(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp") / "run"
    pretrain(out, data, processes=2, parallel="ddp")
    return out


def test_reference_curve_moves_far_more_than_the_tolerance(reference):
    train = losses(reference)
    assert sorted(train) == list(range(1, STEPS + 1))
    assert {10, STEPS} <= set(losses(reference, "val"))  # the smoke preset validates every 10 steps and at the end
    assert train[1] - train[STEPS] > 1000 * TOL, train  # it learns: the comparisons below are not trivially loose
    steps = sorted(train)
    assert all(abs(train[a] - train[b]) > 10 * TOL for a, b in zip(steps, steps[1:])), train  # one step is visible


@pytest.mark.parametrize("mode", ["fsdp", "ddp"])
def test_two_processes_follow_the_one_process_curve(mode, reference, request):
    run = request.getfixturevalue(mode)
    train, val = max_difference(losses(run), losses(reference)), max_difference(losses(run, "val"), losses(reference, "val"))
    # AdamW is almost invariant to the gradient's scale, so a wrongly scaled gradient (e.g. still
    # averaged over processes) could hide in the loss curve: the logged gradient norms (~0.8) show it.
    norm = max_difference(losses(run, key="grad_norm"), losses(reference, key="grad_norm"))
    print(f"\n{mode}, 2 processes vs 1: max |train loss diff| {train:.2e}, max |val loss diff| {val:.2e}, "
          f"max |grad norm diff| {norm:.2e} (tolerance {TOL:g})")
    assert train <= TOL
    assert val <= TOL
    assert norm <= TOL
    summary = json.loads((run / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["steps"] == STEPS and summary["skipped_steps"] == 0
    assert summary["tokens"] == json.loads((reference / "summary.json").read_text())["tokens"]


def test_two_process_checkpoint_is_a_complete_hf_directory(fsdp, reference):
    checkpoint = checkpoint_path(fsdp, SAVE_EVERY)
    for name in ("config.json", "model.safetensors", "tokenizer.model", "generation_config.json", "llamaforge.json"):
        assert (checkpoint / name).is_file(), name
    model = Llama.from_pretrained(checkpoint)
    expected = Llama.from_pretrained(checkpoint_path(reference, SAVE_EVERY)).state_dict()
    weights = model.state_dict()
    assert weights.keys() == expected.keys()
    difference = max(float((weights[k] - expected[k]).abs().max()) for k in expected)
    print(f"\nfsdp vs 1 process, weights after {SAVE_EVERY} steps: max |diff| {difference:.2e}")
    assert difference <= PARAM_TOL

    state = torch.load(checkpoint / TRAINING_STATE, map_location="cpu", weights_only=True)
    assert state["step"] == SAVE_EVERY
    optimizer = state["optimizer"]["state"]
    assert set(optimizer) == set(dict(model.named_parameters())), "the full optimizer state: every parameter, unsharded"
    for name, parameter in model.named_parameters():
        assert optimizer[name]["exp_avg"].shape == parameter.shape, name


def interrupted_copy(run: Path, copy: Path) -> Path:
    """`run`'s directory as a kill during step 9 would have left it: the step-6 checkpoint (not the
    step-12 one, the final model or the summary) and metrics logged up to step 8."""
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns(checkpoint_path(run, STEPS).name, "model", "summary.json"))
    assert [p.name for p in (copy / "checkpoints").iterdir()] == [checkpoint_path(run, SAVE_EVERY).name]
    metrics = copy / "metrics.jsonl"
    metrics.write_text("".join(line + "\n" for line in metrics.read_text().splitlines() if json.loads(line)["step"] <= 8))
    return copy


@pytest.mark.parametrize(
    "saved_by, resumed_by",
    [("fsdp", (1, None)), ("reference", (2, "fsdp"))],
    ids=["fsdp2_to_1proc", "1proc_to_fsdp2"],
)
def test_checkpoint_resumes_with_another_number_of_processes(saved_by, resumed_by, reference, tmp_path, data, request):
    """Re-sharding: continued from its step-6 checkpoint by another number of processes, the run
    ends as the uninterrupted 1-process run (the entries logged after step 6 are replaced)."""
    resumed = interrupted_copy(request.getfixturevalue(saved_by), tmp_path / "resumed")
    processes, parallel = resumed_by
    output = pretrain(resumed, data, processes, parallel)
    assert f"from {checkpoint_path(resumed, SAVE_EVERY).name}" in output
    train, expected = losses(resumed), losses(reference)  # losses() also asserts steps 7 and 8 are not logged twice
    assert sorted(train) == list(range(1, STEPS + 1))
    later = range(SAVE_EVERY + 1, STEPS + 1)
    difference = max(abs(train[s] - expected[s]) for s in later)
    val = max_difference(losses(resumed, "val"), losses(reference, "val"))
    print(f"\n{saved_by} step-{SAVE_EVERY} checkpoint resumed by {processes} process(es): max |train loss diff| "
          f"{difference:.2e} (steps {later.start}..{later.stop - 1}), max |val loss diff| {val:.2e}")
    assert difference <= TOL
    assert val <= TOL
    assert json.loads((resumed / "summary.json").read_text())["processes"] == processes


def test_fsdp_final_model_loads_like_the_one_process_model(fsdp, reference):
    model, expected = Llama.from_pretrained(fsdp / "model"), Llama.from_pretrained(reference / "model")
    assert model.config == expected.config
    assert model.num_parameters() == expected.num_parameters()
    tokens = torch.arange(16).unsqueeze(0)
    with torch.no_grad():
        assert torch.allclose(model(tokens), expected(tokens), atol=1e-3)


def test_fsdp_bf16_mixed_precision_follows_the_one_process_bf16_curve(data, reference, tmp_path):
    # FSDP2's policy computes with bf16 parameters and reduces gradients in fp32; one process uses
    # bf16 autocast over fp32 weights. They round differently (bf16 keeps 8 bits of mantissa, ~4e-3
    # relative), so the curves agree to a bf16 tolerance: measured 4.8e-4 at most over the 12 steps
    # (2-core CPU, torch 2.13), asserted 5e-3, while the loss falls by ~0.8.
    one, two = tmp_path / "one", tmp_path / "two"
    pretrain(one, data, extra=["--precision", "bf16"])
    pretrain(two, data, processes=2, parallel="fsdp", extra=["--precision", "bf16"])
    bf16_one, bf16_two = losses(one), losses(two)
    difference = max_difference(bf16_two, bf16_one)
    print(f"\nFSDP bf16 (2 processes) vs bf16 autocast (1): max |train loss diff| {difference:.2e}")
    assert difference < 5e-3
    assert bf16_one[1] - bf16_one[STEPS] > 100 * 5e-3


def test_bf16_params_under_fsdp_is_refused(data, tmp_path):
    with pytest.raises(AssertionError, match="bf16-params is for one process or DDP"):
        pretrain(tmp_path / "run", data, processes=2, parallel="fsdp", extra=["--precision", "bf16-params"])
