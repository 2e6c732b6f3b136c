"""The shared training loop (llamaforge/train/loop.py) and the optimizer recipe (paper §2.2):
schedule, AdamW groups, accumulation, non-finite guard, metrics, pruning, run identity."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch

from llamaforge import Llama, ModelConfig
from llamaforge.errors import UserError
from llamaforge.losses import IGNORE_INDEX, next_token_loss
from llamaforge.train.distributed import Distributed
from llamaforge.train import loop
from llamaforge.train.loop import LoopConfig, StepResult, llama_writer, setup, train
from llamaforge.train.optim import build_optimizer, cosine_lr
from llamaforge.train.pretrain import llama2_7b_pretrain
from llamaforge.train.state import checkpoints_dir, load_training_state

CONFIG = ModelConfig(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=128, multiple_of=16, max_seq_len=64)
SEQ = 16


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Models this small run fastest on one thread (and the runs compared here all use the same)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- schedule and optimizer ------------------------------------------------------------------------


def test_cosine_lr_hand_computed():
    peak, warmup, total = 1e-3, 10, 110
    lr = lambda step: cosine_lr(step, peak, warmup, total)  # noqa: E731
    assert lr(0) == pytest.approx(1e-4, rel=1e-12)  # peak * 1/10
    assert lr(4) == pytest.approx(5e-4, rel=1e-12)  # peak * 5/10
    assert lr(9) == pytest.approx(1e-3, rel=1e-12)  # warmup ends at the peak
    assert lr(10) == pytest.approx(1e-3, rel=1e-12)  # decay starts at the peak
    # Halfway through the decay: 1e-4 + 0.5 * 9e-4 * (1 + cos(pi/2)) = 5.5e-4.
    assert lr(60) == pytest.approx(5.5e-4, rel=1e-12)
    # A quarter of the way: 1e-4 + 0.5 * 9e-4 * (1 + cos(pi/4)) = 1e-4 + 4.5e-4 * 1.70710678...
    assert lr(35) == pytest.approx(1e-4 + 4.5e-4 * (1 + math.sqrt(0.5)), rel=1e-12)
    # The end and beyond: 10% of the peak.
    assert lr(110) == pytest.approx(1e-4, rel=1e-12)
    assert lr(500) == pytest.approx(1e-4, rel=1e-12)
    # Monotonic decay after the warmup.
    decay = [lr(s) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(decay, decay[1:]))


def test_cosine_lr_final_ratio():
    assert cosine_lr(100, 2.0, 0, 100, final_ratio=0.25) == pytest.approx(0.5)
    assert cosine_lr(0, 2.0, 0, 100, final_ratio=0.25) == pytest.approx(2.0)  # no warmup: starts at the peak


def test_paper_preset_hyperparameters():
    args = llama2_7b_pretrain()
    assert args.batch_tokens == 4 * 2**20 == 4_194_304  # "4M tokens" (Table 1)
    assert args.seq_len == 4096
    assert args.batch_tokens // args.seq_len == 1024  # sequences per optimizer step
    assert args.warmup_steps == 2000
    assert args.lr == 3e-4
    assert args.final_lr_ratio == 0.1
    assert args.weight_decay == 0.1
    assert args.grad_clip == 1.0
    assert args.model == "llama2_7b"
    # 2T tokens at 4M per step.
    assert args.max_steps * args.batch_tokens == pytest.approx(2e12, rel=1e-6)


def test_build_optimizer_paper_adamw():
    model = Llama(CONFIG)
    opt = build_optimizer(model, lr=3e-4, weight_decay=0.1)
    assert isinstance(opt, torch.optim.AdamW)
    decayed, exempt = opt.param_groups
    for group in opt.param_groups:
        assert group["betas"] == (0.9, 0.95)
        assert group["eps"] == 1e-5
        assert group["lr"] == 3e-4
    assert decayed["weight_decay"] == 0.1 and exempt["weight_decay"] == 0.0
    assert all(p.ndim == 2 for p in decayed["params"])
    assert all(p.ndim == 1 for p in exempt["params"])
    names = {id(p): n for n, p in model.named_parameters()}
    exempt_names = sorted(names[id(p)] for p in exempt["params"])
    # 2 norms per block + the final norm: every RMSNorm gain and nothing else.
    assert len(exempt_names) == 2 * CONFIG.n_layers + 1
    assert all("norm" in n for n in exempt_names)
    assert len(decayed["params"]) + len(exempt["params"]) == len(list(model.parameters()))


# --- helpers ---------------------------------------------------------------------------------------


def fixed_tokens(n: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, CONFIG.vocab_size, (n, SEQ + 1), generator=torch.Generator().manual_seed(seed))


def loss_fn(model, batch):
    return next_token_loss(model(batch["inputs"]), batch["targets"])[0]


def batches_of(inputs, targets, sizes):
    out, at = [], 0
    for size in sizes:
        t = targets[at : at + size]
        x = inputs[at : at + size]
        out.append({"inputs": x, "targets": t, "count": int((t != IGNORE_INDEX).sum()), "tokens": x.numel()})
        at += size
    return out


def run_train(out, cfg: LoopConfig, micro_batches, loss=loss_fn, val_batches=None, identity=None, seed=0):
    torch.manual_seed(seed)
    model = Llama(CONFIG)
    summary = train(
        model, cfg, Distributed(), out,
        identity=identity or {"model_config": dataclasses.asdict(CONFIG)},
        micro_batches=micro_batches, loss_fn=loss, save_weights=llama_writer(CONFIG, None, {}), val_batches=val_batches,
    )
    return summary


def read_metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def state_of(directory):
    return Llama.from_pretrained(directory).state_dict()


def assert_same_state(a, b, atol):
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=atol, rtol=0, msg=name)


def one_step(cfg_overrides=None):
    return LoopConfig(precision="fp32", max_steps=1, lr=1e-2, warmup_steps=0, log_every=1, save_every=1, **(cfg_overrides or {}))


# --- accumulation ----------------------------------------------------------------------------------


def hand_mean_loss_and_grad_norm(inputs, targets):
    """One forward/backward of the initial model on the whole batch, mean over predicted tokens."""
    torch.manual_seed(0)
    model = Llama(CONFIG)
    total, count = next_token_loss(model(inputs), targets)
    mean = total / count
    mean.backward()
    norm = torch.sqrt(sum((p.grad**2).sum() for p in model.parameters()))
    return float(mean.detach()), float(norm)


def test_accumulation_equals_one_big_batch(tmp_path):
    tokens = fixed_tokens()
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    run_train(tmp_path / "one", one_step(), lambda step: batches_of(inputs, targets, [8]))
    run_train(tmp_path / "four", one_step(), lambda step: batches_of(inputs, targets, [2, 2, 2, 2]))

    torch.manual_seed(0)
    initial = Llama(CONFIG).state_dict()
    one, four = state_of(tmp_path / "one" / "model"), state_of(tmp_path / "four" / "model")
    assert_same_state(one, four, atol=1e-6)
    # The step did move the weights (lr 1e-2 with Adam: ~1e-2 per entry).
    assert (one["layers.0.attention.wq.weight"] - initial["layers.0.attention.wq.weight"]).abs().max() > 1e-3

    # The logged loss and gradient norm are those of the mean over all 8 * 16 = 128 tokens.
    mean, norm = hand_mean_loss_and_grad_norm(inputs, targets)
    for name in ("one", "four"):
        (record,) = [r for r in read_metrics(tmp_path / name) if "split" not in r]
        assert record["loss"] == pytest.approx(mean, rel=1e-5)
        assert record["grad_norm"] == pytest.approx(norm, rel=1e-4)
        assert record["tokens"] == 128
    # Random tokens over 128 classes: the initial loss is close to ln(128) = 4.85.
    assert abs(mean - math.log(128)) < 0.5


def test_unequal_counts_are_normalized_by_the_whole_step(tmp_path):
    tokens = fixed_tokens(seed=1)
    inputs, targets = tokens[:, :-1], tokens[:, 1:].clone()
    # Micro-batches of 2 sequences with 2, 32, 17 and 8 predicted tokens: 59 in all.
    targets[0:2, 1:] = IGNORE_INDEX  # sequences 0, 1: 1 + 1 tokens
    # sequences 2, 3: all 16 + 16 tokens
    targets[4, 9:] = IGNORE_INDEX  # sequences 4, 5: 9 + 8 tokens
    targets[5, 8:] = IGNORE_INDEX
    targets[6:8, 4:] = IGNORE_INDEX  # sequences 6, 7: 4 + 4 tokens
    micro = batches_of(inputs, targets, [2, 2, 2, 2])
    counts = [b["count"] for b in micro]
    assert counts == [2, 32, 9 + 8, 8] and sum(counts) == 59

    run_train(tmp_path / "one", one_step(), lambda step: batches_of(inputs, targets, [8]))
    run_train(tmp_path / "four", one_step(), lambda step: batches_of(inputs, targets, [2, 2, 2, 2]))
    assert_same_state(state_of(tmp_path / "one" / "model"), state_of(tmp_path / "four" / "model"), atol=1e-6)

    mean, norm = hand_mean_loss_and_grad_norm(inputs, targets)
    (record,) = [r for r in read_metrics(tmp_path / "four") if "split" not in r]
    assert record["loss"] == pytest.approx(mean, rel=1e-5)
    assert record["grad_norm"] == pytest.approx(norm, rel=1e-4)
    # The loss is normalized by the 59 predicted tokens; throughput counts all 8 * 16 = 128 input
    # tokens the forward passes processed, ignored targets or not.
    assert record["tokens"] == 128

    # The naive alternative, the mean of the 4 micro-batch means, is a different number: the test
    # above can tell the two apart.
    torch.manual_seed(0)
    model = Llama(CONFIG)
    with torch.no_grad():
        naive = sum(float(loss_fn(model, b)) / b["count"] for b in micro) / 4
    assert abs(naive - mean) > 1e-3


# --- extra metrics from loss_fn and the step API ---------------------------------------------------


def unequal_micro_batches():
    """Four micro-batches of 2 sequences with 2, 32, 17 and 8 predicted tokens (59 in all), each with
    a constant "m" of 1, 2, 3, 4, then a fifth without any predicted token and m = NaN."""
    tokens = fixed_tokens(10, seed=1)
    inputs, targets = tokens[:, :-1], tokens[:, 1:].clone()
    targets[0:2, 1:] = IGNORE_INDEX
    targets[4, 9:] = IGNORE_INDEX
    targets[5, 8:] = IGNORE_INDEX
    targets[6:8, 4:] = IGNORE_INDEX
    targets[8:10] = IGNORE_INDEX
    micro = batches_of(inputs, targets, [2, 2, 2, 2, 2])
    for batch, m in zip(micro, [1.0, 2.0, 3.0, 4.0, float("nan")]):
        batch["m"] = m
    assert [b["count"] for b in micro] == [2, 32, 17, 8, 0]
    return micro


def loss_with_metrics(model, batch):
    loss = loss_fn(model, batch)
    # "m": a float, the same for the whole micro-batch; "mean_loss": a tensor, the micro-batch's mean
    return loss, {"m": batch["m"], "mean_loss": loss.detach() / batch["count"]}


def test_extra_metrics_are_averaged_over_micro_batches_weighted_by_count(tmp_path):
    micro = unequal_micro_batches()
    cfg = dataclasses.replace(one_step(), eval_every=1)
    run_train(tmp_path, cfg, lambda step: micro, loss=loss_with_metrics, val_batches=micro)
    records = read_metrics(tmp_path)
    (record,) = [r for r in records if "split" not in r]
    # By hand: (2 * 1 + 32 * 2 + 17 * 3 + 8 * 4) / 59 = 149 / 59 = 2.525...; the NaN of the empty
    # micro-batch weighs nothing. The unweighted mean of the micro-batch values would be 2.5.
    assert record["m"] == pytest.approx(149 / 59, rel=1e-6)
    assert abs(record["m"] - 2.5) > 0.02
    # The count-weighted mean of per-micro-batch mean losses is the step's loss (sum over count).
    assert record["mean_loss"] == pytest.approx(record["loss"], rel=1e-5)
    mean, _ = hand_mean_loss_and_grad_norm(torch.cat([b["inputs"] for b in micro]), torch.cat([b["targets"] for b in micro]))
    assert record["loss"] == pytest.approx(mean, rel=1e-5)
    # Validation averages them the same way, in its own entry.
    val = [r for r in records if r.get("split") == "val"]
    assert [r["step"] for r in val] == [0, 1]
    for r in val:
        assert r["m"] == pytest.approx(149 / 59, rel=1e-6)
        assert r["mean_loss"] == pytest.approx(r["loss"], rel=1e-5)


@pytest.mark.parametrize("fast", [True, False])
def test_auto_precision_is_bf16_autocast_only_where_bf16_is_fast(tmp_path, monkeypatch, fast):
    monkeypatch.setattr(loop, "bf16_is_fast", lambda device: fast)
    cfg = LoopConfig(max_steps=1, lr=1e-2, warmup_steps=0, log_every=1, save_every=1)  # precision "auto"
    trainer = setup(Llama(CONFIG), cfg, Distributed(), tmp_path, identity={}, save_weights=llama_writer(CONFIG, None, {}))
    assert trainer.autocast_dtype == (torch.bfloat16 if fast else None)


def test_setup_and_optimizer_step_are_usable_on_their_own(tmp_path):
    """What a loop with its own batches (PPO's rollouts) calls: setup, optimizer_step, log, save, finish."""
    micro = unequal_micro_batches()
    torch.manual_seed(0)
    model = Llama(CONFIG)
    cfg = LoopConfig(precision="fp32", max_steps=2, lr=1e-2, warmup_steps=0, log_every=1, save_every=1)
    trainer = setup(model, cfg, Distributed(), tmp_path, identity={}, save_weights=llama_writer(CONFIG, None, {}))
    assert trainer.completed is None and trainer.start == 0
    for step in range(2):
        result = trainer.optimizer_step(step, micro, loss_with_metrics)
        assert isinstance(result, StepResult) and not result.skipped
        assert result.count == 59 and result.tokens == 10 * SEQ  # normaliser, and every input token
        assert result.metrics["m"] == pytest.approx(149 / 59, rel=1e-6)
        trainer.log(step + 1, {**result.record(), "reward": 0.5 + step})
        trainer.save_checkpoint(step + 1)
    with pytest.raises(ValueError, match="tokens"):
        trainer.log(3, {"tokens": 1})  # the loop's own keys are not a caller's to set
    summary = trainer.finish()
    records = read_metrics(tmp_path)
    assert [(r["step"], r["reward"], r["tokens"]) for r in records] == [(1, 0.5, 10 * SEQ), (2, 1.5, 20 * SEQ)]
    assert records[1]["loss"] < records[0]["loss"]  # it trained
    assert summary["tokens"] == 20 * SEQ and summary["final_loss"] == records[1]["loss"]
    # The same calls on the finished run: setup reports it done and trains nothing.
    again = setup(Llama(CONFIG), cfg, Distributed(), tmp_path, identity={}, save_weights=llama_writer(CONFIG, None, {}))
    assert again.completed == summary


def test_micro_batch_without_tokens_is_refused(tmp_path):
    micro = unequal_micro_batches()
    del micro[1]["tokens"]
    with pytest.raises(ValueError, match='"tokens"'):
        run_train(tmp_path, one_step(), lambda step: micro)


def test_metric_names_must_not_shadow_the_loops_own(tmp_path):
    with pytest.raises(ValueError, match="lr"):
        run_train(tmp_path, one_step(), constant_batches, loss=lambda m, b: (loss_fn(m, b), {"lr": 1.0}))


def _two_process_run(rank: int, init_file: str, out: str) -> None:
    """Rank `rank` of 2 (gloo, DDP): the micro-batches of unequal_micro_batches(), every 2nd one."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        mine = unequal_micro_batches()[rank::2]  # rank 0: counts 2, 17, 0; rank 1: 32, 8
        torch.manual_seed(0)
        train(
            Llama(CONFIG), one_step({"parallel": "ddp"}), Distributed(rank=rank, world_size=2), Path(out),
            identity={}, micro_batches=lambda step: mine, loss_fn=loss_with_metrics,
            save_weights=llama_writer(CONFIG, None, {}),
        )
    finally:
        dist.destroy_process_group()


def test_extra_metrics_over_two_processes_equal_one_process(tmp_path):
    import torch.multiprocessing as mp

    micro = unequal_micro_batches()
    run_train(tmp_path / "one", one_step(), lambda step: micro, loss=loss_with_metrics)
    mp.spawn(_two_process_run, args=(str(tmp_path / "init"), str(tmp_path / "two")), nprocs=2)
    (one,) = read_metrics(tmp_path / "one")
    (two,) = read_metrics(tmp_path / "two")
    # Rank 0 alone would give (2 * 1 + 17 * 3) / 19 = 2.79, rank 1 (32 * 2 + 8 * 4) / 40 = 2.4.
    assert two["m"] == pytest.approx(149 / 59, rel=1e-6) and one["m"] == pytest.approx(149 / 59, rel=1e-6)
    assert two["mean_loss"] == pytest.approx(one["mean_loss"], rel=1e-5)
    assert two["loss"] == pytest.approx(one["loss"], rel=1e-5)
    assert two["tokens"] == one["tokens"] == 10 * SEQ


# --- non-finite guard ------------------------------------------------------------------------------


def nan_at_step_2(model, batch):
    loss = loss_fn(model, batch)
    return loss * float("nan") if batch["step"] == 1 else loss  # 0-based step 1 = the 2nd step


def stepped_batches(step):
    tokens = fixed_tokens(4, seed=10 + step)
    return [{"inputs": tokens[:, :-1], "targets": tokens[:, 1:], "count": 4 * SEQ, "tokens": 4 * SEQ, "step": step}]


def test_nonfinite_skip(tmp_path):
    cfg = LoopConfig(precision="fp32", max_steps=3, lr=1e-2, warmup_steps=0, log_every=1, save_every=1, keep_last=5)
    summary = run_train(tmp_path, cfg, stepped_batches, loss=nan_at_step_2)
    assert summary["skipped_steps"] == 1
    records = {r["step"]: r for r in read_metrics(tmp_path) if "split" not in r}
    assert [records[s]["skipped_steps"] for s in (1, 2, 3)] == [0, 1, 1]
    assert math.isnan(records[2]["loss"]) and math.isfinite(records[3]["loss"])

    step = lambda n: checkpoints_dir(tmp_path) / f"step-{n:08d}"  # noqa: E731
    s1, s2, s3 = state_of(step(1)), state_of(step(2)), state_of(step(3))
    for name in s1:
        assert torch.equal(s1[name], s2[name]), name  # the NaN step changed nothing
        assert torch.isfinite(s3[name]).all(), name
    assert not torch.equal(s2["output.weight"], s3["output.weight"])  # the next step trained again
    # Adam's step counter did not advance on the skipped step either.
    opt1, opt2 = load_training_state(step(1))["optimizer"], load_training_state(step(2))["optimizer"]
    key = "output.weight"
    assert float(opt1["state"][key]["step"]) == float(opt2["state"][key]["step"]) == 1.0
    assert torch.equal(opt1["state"][key]["exp_avg"], opt2["state"][key]["exp_avg"])


def test_nonfinite_stop(tmp_path):
    cfg = LoopConfig(precision="fp32", max_steps=3, lr=1e-2, warmup_steps=0, log_every=1, save_every=1, nonfinite="stop")
    with pytest.raises(UserError) as err:
        run_train(tmp_path, cfg, stepped_batches, loss=nan_at_step_2)
    message = str(err.value)
    assert message.startswith("step 2:")
    assert "step-00000001" in message  # the checkpoint to resume from
    assert not (tmp_path / "summary.json").exists()
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-00000001"]


# --- a crash, then a re-run ------------------------------------------------------------------------


@pytest.mark.parametrize("save_every", [10, 2])  # no checkpoint yet / one at step 2
def test_rerun_after_a_crash_logs_every_step_once(tmp_path, save_every):
    cfg = LoopConfig(precision="fp32", max_steps=4, lr=1e-2, warmup_steps=1, log_every=1, save_every=save_every)

    def crash_in_step_4(model, batch):
        if batch["step"] == 3:
            raise RuntimeError("crash (simulated)")
        return loss_fn(model, batch)

    with pytest.raises(RuntimeError, match="simulated"):
        run_train(tmp_path / "run", cfg, stepped_batches, loss=crash_in_step_4)
    assert [r["step"] for r in read_metrics(tmp_path / "run")] == [1, 2, 3]
    run_train(tmp_path / "run", cfg, stepped_batches)
    run_train(tmp_path / "clean", cfg, stepped_batches)
    rerun, clean = read_metrics(tmp_path / "run"), read_metrics(tmp_path / "clean")
    assert [r["step"] for r in rerun] == [1, 2, 3, 4]  # no step logged twice
    assert [(r["loss"], r["grad_norm"], r["lr"], r["tokens"]) for r in rerun] == [
        (r["loss"], r["grad_norm"], r["lr"], r["tokens"]) for r in clean
    ]
    assert_same_state(state_of(tmp_path / "run" / "model"), state_of(tmp_path / "clean" / "model"), atol=0)


# --- metrics ---------------------------------------------------------------------------------------


def constant_batches(step):
    tokens = fixed_tokens(2, seed=step)
    return [{"inputs": tokens[:, :-1], "targets": tokens[:, 1:], "count": 2 * SEQ, "tokens": 2 * SEQ}]


def fixed_val_batches():
    tokens = fixed_tokens(2, seed=99)
    return [{"inputs": tokens[:, :-1], "targets": tokens[:, 1:], "count": 2 * SEQ, "tokens": 2 * SEQ}]


@pytest.mark.parametrize("watts", [None, 400.0])
def test_metrics_entries(tmp_path, watts):
    cfg = LoopConfig(precision="fp32", max_steps=4, lr=1e-3, warmup_steps=2, log_every=1, eval_every=2, save_every=10, watts=watts)
    summary = run_train(tmp_path, cfg, constant_batches, val_batches=fixed_val_batches())
    records = read_metrics(tmp_path)
    assert all("step" in r for r in records)
    train_records = [r for r in records if "split" not in r]
    val_records = [r for r in records if r.get("split") == "val"]
    assert [r["step"] for r in train_records] == [1, 2, 3, 4]
    assert [r["step"] for r in val_records] == [0, 2, 4]  # step 0: the untrained baseline
    expected_watts = 65.0 if watts is None else watts  # the documented CPU default, or --watts
    for r in train_records:
        for key in ("loss", "lr", "grad_norm", "tokens_per_s", "elapsed_s", "device_hours", "energy_kwh", "tco2eq"):
            assert isinstance(r[key], float) and math.isfinite(r[key]), key
        assert r["tokens_per_s"] > 0 and r["elapsed_s"] > 0
        assert r["device_hours"] == pytest.approx(r["elapsed_s"] / 3600, rel=1e-12)  # one device
        assert r["energy_kwh"] == pytest.approx(r["device_hours"] * expected_watts / 1000, rel=1e-12)
        # Llama 2 §2.2.1: energy x PUE 1.1 x 0.385 kg/kWh, in tonnes.
        assert r["tco2eq"] == pytest.approx(r["device_hours"] * expected_watts / 1000 * 1.1 * 0.385 / 1000, rel=1e-12)
        assert r["tokens"] == 2 * SEQ * r["step"]
    # Warmup over 2 steps (5e-4, 1e-3), then the cosine from the peak over the remaining 2 steps:
    # progress 0 -> 1e-3, progress 1/2 -> 1e-4 + 4.5e-4 * (1 + cos(pi/2)) = 5.5e-4.
    assert [r["lr"] for r in train_records] == pytest.approx([5e-4, 1e-3, 1e-3, 5.5e-4], rel=1e-12)
    for r in val_records:
        assert r["ppl"] == pytest.approx(math.exp(r["loss"]), rel=1e-12)
    assert val_records[-1]["loss"] == summary["val_loss"]
    assert summary["watts_per_device"] == expected_watts
    elapsed = train_records[-1]["elapsed_s"]
    assert [r["elapsed_s"] for r in train_records] == sorted(r["elapsed_s"] for r in train_records)
    assert summary["tco2eq"] == pytest.approx(elapsed / 3600 * expected_watts / 1000 * 1.1 * 0.385 / 1000, rel=1e-12)


# --- checkpoints -----------------------------------------------------------------------------------


def test_pruning_keeps_the_newest(tmp_path):
    cfg = LoopConfig(precision="fp32", max_steps=5, lr=1e-3, warmup_steps=1, log_every=1, save_every=1, keep_last=2)
    run_train(tmp_path / "two", cfg, constant_batches)
    assert sorted(p.name for p in (tmp_path / "two" / "checkpoints").iterdir()) == ["step-00000004", "step-00000005"]
    cfg0 = dataclasses.replace(cfg, keep_last=0)
    run_train(tmp_path / "zero", cfg0, constant_batches)
    assert sorted(p.name for p in (tmp_path / "zero" / "checkpoints").iterdir()) == ["step-00000005"]
    assert load_training_state(tmp_path / "zero" / "checkpoints" / "step-00000005")["step"] == 5


def test_incompatible_out_is_refused(tmp_path):
    cfg = LoopConfig(precision="fp32", max_steps=1, lr=1e-3, warmup_steps=0, log_every=1, save_every=1)
    run_train(tmp_path, cfg, constant_batches)
    before = (tmp_path / "model" / "model.safetensors").read_bytes()

    with pytest.raises(UserError) as err:
        run_train(tmp_path, dataclasses.replace(cfg, lr=2e-3), constant_batches)
    assert "run.json" in str(err.value) and "loop.lr" in str(err.value)
    assert "0.001" in str(err.value) and "0.002" in str(err.value)

    other = {"model_config": dataclasses.asdict(CONFIG.replace(dim=32))}
    with pytest.raises(UserError) as err:
        run_train(tmp_path, cfg, constant_batches, identity=other)
    assert "run.json" in str(err.value) and "model_config.dim" in str(err.value)
    assert (tmp_path / "model" / "model.safetensors").read_bytes() == before  # untouched


def test_a_run_moved_with_its_inputs_keeps_its_identity(tmp_path, monkeypatch):
    """A run directory moved together with the inputs beside it (a pipeline run's world/ and stage
    folders) still resumes; the same relative name elsewhere, or other inputs, are refused. A
    run.json written before its location was recorded compares paths as written."""
    import shutil

    from llamaforge.train.state import RECORDED_AT, check_run_identity

    def identity(root: Path) -> dict:
        return {"init": str(root / "pretrain" / "model"), "data": [str(root / "world" / "a.jsonl")], "seed": 0}

    old = tmp_path / "old"
    check_run_identity(old / "sft", identity(old))
    shutil.move(old, tmp_path / "new")
    new = tmp_path / "new"
    check_run_identity(new / "sft", identity(new))  # moved with its inputs: the same run
    monkeypatch.chdir(tmp_path)
    check_run_identity(new / "sft", identity(Path("new")))  # the same, named relative to the working directory

    with pytest.raises(UserError, match="data"):
        check_run_identity(new / "sft", {**identity(new), "data": [str(new / "world" / "b.jsonl")]})
    with pytest.raises(UserError, match="init"):
        check_run_identity(new / "sft", {**identity(new), "init": str(tmp_path / "elsewhere" / "model")})

    recorded = json.loads((new / "sft" / "run.json").read_text())
    del recorded[RECORDED_AT]
    (new / "sft" / "run.json").write_text(json.dumps(recorded))
    with pytest.raises(UserError, match="old/world/a.jsonl"):  # no location recorded: paths as written
        check_run_identity(new / "sft", identity(new))


def test_tensorboard_logs_the_metrics(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = LoopConfig(precision="fp32", max_steps=3, lr=1e-2, warmup_steps=1, log_every=1, save_every=10, eval_every=0, tensorboard=True)
    run_train(tmp_path / "run", cfg, constant_batches, val_batches=fixed_val_batches())
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    logged = {e.step: e.value for e in events.Scalars("loss")}
    train = [r for r in read_metrics(tmp_path / "run") if "loss" in r and r.get("split") != "val"]
    assert logged == pytest.approx({r["step"]: r["loss"] for r in train}, rel=1e-6)
    assert [e.step for e in events.Scalars("val_loss")] == [0, 3]
