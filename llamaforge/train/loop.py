"""The training mechanics every stage shares: schedule, gradient accumulation, clipping, the
non-finite guard, validation, logging, compute accounting, checkpoints and exact resume.

A stage supplies what differs: the model, `micro_batches(step)` (this process's micro-batches of an
optimizer step, a pure function of the step so that resuming and re-sharding are exact), the
loss, and how its weights are written. Each micro-batch is a dict with two sizes:

    "count"   the number of loss terms it holds: the loss normaliser. The loop divides every summed
              loss by the count of the whole step (all micro-batches, all processes), so
              accumulating k micro-batches equals one batch k times larger.
    "tokens"  the number of tokens its forward pass processes (every position of the input,
              prompt and padding included): what tokens/s, the token totals and the MFU count.

`loss_fn(model, micro_batch)` returns the micro-batch's summed loss, or a tuple (summed loss,
{"name": value}) whose extra metrics are each a mean over that micro-batch (a tensor or a float).
The loop averages each extra metric over the step's micro-batches weighted by their counts, over
all processes (so N processes log what one would), and logs it under its name in the step's
metrics.jsonl entry; validation averages and logs them the same way in its "split": "val" entry.

`train()` is the whole run for a stage whose batches are fixed in advance (pretrain, sft, reward).
A stage that makes its batches as it goes (PPO's rollouts) calls the pieces itself:

    trainer = setup(model, cfg, env, out, identity=..., save_weights=...)
    if trainer.completed is None:
        for step in range(trainer.start, cfg.max_steps):
            ...                                    # e.g. a rollout phase
            result = trainer.optimizer_step(step, micro_batches, loss_fn)
            if trainer.should_log(step + 1):
                trainer.log(step + 1, {**result.record(), "reward": ...})
            if trainer.should_save(step + 1):
                trainer.save_checkpoint(step + 1)
        summary = trainer.finish()
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn
from tqdm import tqdm

from llamaforge import carbon
from llamaforge.device import bf16_is_fast
from llamaforge.errors import UserError
from llamaforge.train import state as run_state
from llamaforge.train.distributed import (
    Distributed,
    ParallelMode,
    all_reduce_sum,
    full_model_state,
    full_optimizer_state,
    gradient_sync,
    load_optimizer_state,
    parallelize,
)
from llamaforge.train.optim import build_optimizer, cosine_lr


@dataclass
class LoopConfig:
    """Training knobs shared by every stage. Defaults are the paper's pretraining values (§2.2)."""

    max_steps: int = 1000
    """Optimizer steps of the whole run."""
    lr: float = 3e-4
    """Peak learning rate."""
    warmup_steps: int = 2000
    """Linear warmup steps before the cosine decay."""
    final_lr_ratio: float = 0.1
    """The cosine decays to this fraction of the peak learning rate."""
    weight_decay: float = 0.1
    """AdamW weight decay on matrices (not on norm gains)."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this value."""
    nonfinite: Literal["skip", "stop"] = "skip"
    """On a NaN/inf loss or gradient norm: skip that optimizer step, or stop the run."""
    log_every: int = 10
    """Write a metrics.jsonl entry every this many steps."""
    eval_every: int = 100
    """Validate every this many steps (and at the end); 0 validates only at the end."""
    save_every: int = 100
    """Checkpoint every this many steps (and at the end)."""
    keep_last: int = 2
    """Complete checkpoints to keep (the newest is never removed)."""
    precision: Literal["auto", "fp32", "bf16", "bf16-params"] = "auto"
    """bf16: bf16 compute (autocast) with fp32 weights; bf16-params: bf16 weights and gradients with
    fp32 master weights and moments in the optimizer (one process or DDP; under FSDP, bf16 already
    computes with bf16 parameters and keeps fp32 shards); auto: bf16 where it is faster (a GPU, or a
    CPU with bf16 matmul kernels: device.bf16_is_fast), else fp32."""
    compile: bool = False
    """torch.compile each transformer block."""
    activation_checkpointing: bool = False
    """Recompute each block's activations in the backward pass to save memory."""
    parallel: ParallelMode = "fsdp"
    """Data parallelism under torchrun: FSDP2 (sharded) or DDP (replicated)."""
    tensorboard: bool = False
    """Also log to TensorBoard (out/tensorboard)."""
    watts: float | None = None
    """Power per device for energy/carbon accounting; default: the GPU's rated power or 65 W CPU."""

    def identity(self) -> dict:
        """The fields that change what is computed: a resumed run must match them."""
        keys = ("max_steps", "lr", "warmup_steps", "final_lr_ratio", "weight_decay", "grad_clip", "nonfinite", "precision")
        return {k: getattr(self, k) for k in keys}


SaveWeights = Callable[[dict, Path, Callable[[Path], None] | None], None]


def llama_writer(config, tokenizer_path: Path | None, info: dict) -> SaveWeights:
    """Writes a policy's weights as a Hugging Face Llama directory (checkpoint.save_state_dict)."""
    from llamaforge.checkpoint import save_state_dict

    def save(state: dict, directory: Path, write_more=None) -> None:
        save_state_dict(state, config, directory, tokenizer_path, info, write_more)

    return save


def llama_reader(directory: Path) -> dict:
    from llamaforge.checkpoint import load_model

    return load_model(directory).state_dict()


LossFn = Callable[[nn.Module, dict], "torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor | float]]"]
"""Summed loss of a micro-batch, optionally with extra metrics (each a mean over the micro-batch)."""

# The keys the loop itself writes in metrics.jsonl: an extra metric may not take one of these names.
RESERVED_KEYS = frozenset({
    "step", "split", "loss", "ppl", "lr", "grad_norm", "tokens_per_s", "tokens", "elapsed_s", "skipped_steps",
    "mfu", "device_hours", "energy_kwh", "tco2eq",
})


@dataclass
class StepResult:
    """What one optimizer step did (every number over all processes)."""

    loss: float
    """The step's loss: summed losses over the step's count."""
    grad_norm: float
    """The global gradient norm before clipping."""
    lr: float
    """The learning rate of the step."""
    tokens: int
    """Tokens the step's forward passes processed."""
    count: float
    """Loss terms of the step (the normaliser)."""
    skipped: bool
    """The loss or gradient norm was not finite, and the step changed nothing (cfg.nonfinite skip)."""
    metrics: dict[str, float]
    """loss_fn's extra metrics, averaged over the step's micro-batches weighted by their counts."""

    def record(self) -> dict:
        """The step's metrics.jsonl fields (Trainer.log adds throughput, totals and compute)."""
        return {"loss": self.loss, "lr": self.lr, "grad_norm": self.grad_norm, **self.metrics}


class Trainer:
    """One training run's state between optimizer steps; made by `setup()`.

    `model` is the unwrapped model (weights, `state_dict()`), `train_model` the module to call in a
    loss (the data-parallel wrapper under DDP; FSDP2 shards `model` in place). `completed` holds the
    summary of a run that had already finished (nothing else is set up then), `start` the number of
    optimizer steps done before this process started.
    """

    def __init__(
        self, *, model: nn.Module, cfg: LoopConfig, env: Distributed, out: Path, save_weights: SaveWeights,
        metrics: run_state.MetricsLog, start: int, completed: dict | None = None, train_model: nn.Module | None = None,
        optimizer: torch.optim.Optimizer | None = None, autocast_dtype: torch.dtype | None = None,
        totals: dict | None = None, watts: float = 0.0, accelerator: carbon.Accelerator | None = None,
        flops_per_token: float | None = None, writer=None, progress: tqdm | None = None,
    ):
        self.model, self.cfg, self.env, self.out, self.save_weights = model, cfg, env, out, save_weights
        self.metrics, self.start, self.completed = metrics, start, completed
        self.train_model, self.optimizer, self.autocast_dtype = train_model, optimizer, autocast_dtype
        self.totals = totals if totals is not None else {"elapsed": 0.0, "tokens": 0, "skipped": 0}
        self.watts, self.accelerator, self.flops_per_token = watts, accelerator, flops_per_token
        self.writer, self.progress = writer, progress
        self.last_loss: float | None = None  # of the last optimizer step this process ran
        self.val_loss: float | None = None  # of the last validation
        # Throughput over the steps since the last log entry (wall time: validation, saves included).
        self._window_tokens, self._window_started = 0, time.perf_counter()
        # totals["elapsed"] counts the time since setup except validation and checkpoint saves: each
        # step adds the time since this clock, which those reset when they end.
        self._clock = time.perf_counter()

    def autocast(self):
        """The forward pass's precision context: bf16 autocast, or nothing (fp32, bf16 parameters,
        FSDP2's own bf16 casts)."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.env.device.type, dtype=self.autocast_dtype)

    # -- when -----------------------------------------------------------------------------------

    def should_log(self, done: int) -> bool:
        return done % self.cfg.log_every == 0 or done in (1, self.cfg.max_steps)  # step 1: where the curve starts

    def should_validate(self, done: int) -> bool:
        return bool(self.cfg.eval_every and done % self.cfg.eval_every == 0) or done == self.cfg.max_steps

    def should_save(self, done: int) -> bool:
        return done % self.cfg.save_every == 0 or done == self.cfg.max_steps

    # -- what -----------------------------------------------------------------------------------

    def optimizer_step(self, step: int, micro_batches: list[dict], loss_fn: LossFn) -> StepResult:
        """Optimizer step `step` (0-based) over this process's `micro_batches`: the scheduled
        learning rate, gradient accumulation (the gradient all-reduce on the last micro-batch only),
        clipping, the non-finite guard, and the run's totals."""
        cfg, env, optimizer = self.cfg, self.env, self.optimizer
        lr = cosine_lr(step, cfg.lr, cfg.warmup_steps, cfg.max_steps, cfg.final_lr_ratio)
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        count, tokens = _step_sizes(micro_batches, env)
        loss_sum = torch.zeros((), device=env.device)
        extras = _WeightedMeans(env.device)
        for i, batch in enumerate(micro_batches):
            with gradient_sync(self.train_model, enabled=i == len(micro_batches) - 1):
                with self.autocast():
                    micro_loss, micro_metrics = _loss_and_metrics(loss_fn(self.train_model, batch))
                # Data-parallel wrappers average gradients over processes: undo it, then divide
                # by the whole step's count.
                (micro_loss * env.world_size / count).backward()
            loss_sum += micro_loss.detach().float()
            extras.add(micro_metrics, batch["count"])
        loss = float(all_reduce_sum(loss_sum) / count)
        metrics = extras.means(count)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        grad_norm = float(grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm)
        skipped = False
        if math.isfinite(loss) and math.isfinite(grad_norm):
            optimizer.step()
        elif cfg.nonfinite == "stop":
            optimizer.zero_grad(set_to_none=True)
            last = run_state.complete_checkpoints(self.out)
            raise UserError(
                f"step {step + 1}: non-finite loss {loss} or gradient norm {grad_norm}; stopped "
                f"(last checkpoint: {last[-1] if last else 'none'})"
            )
        else:
            skipped = True
            self.totals["skipped"] += 1
        optimizer.zero_grad(set_to_none=True)

        self.totals["tokens"] += tokens
        now = time.perf_counter()
        self.totals["elapsed"] += now - self._clock
        self._clock = now
        self._window_tokens += tokens
        self.last_loss = loss
        self.progress.update(1)
        self.progress.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}")
        return StepResult(loss, grad_norm, lr, tokens, float(count), skipped, metrics)

    def log(self, step: int, record: dict) -> None:
        """Write `record` (e.g. StepResult.record(), plus a caller's own numbers) as the training
        entry of `step` in metrics.jsonl and TensorBoard, with the throughput since the previous
        entry, the run's totals and its compute (device hours, energy, CO2, MFU)."""
        taken = RESERVED_KEYS.intersection(record) - {"loss", "lr", "grad_norm"}
        if taken:
            raise ValueError(f"log record: {sorted(taken)} are the loop's own keys")
        tokens_per_s = self._window_tokens / (time.perf_counter() - self._window_started)
        entry = {
            "step": step,
            **record,
            "tokens_per_s": tokens_per_s,
            "tokens": self.totals["tokens"],
            "elapsed_s": self.totals["elapsed"],
            "skipped_steps": self.totals["skipped"],
            **carbon.compute_record(self.totals["elapsed"], self.env.world_size, self.watts),
        }
        if self.accelerator is not None and self.flops_per_token:
            entry["mfu"] = self.flops_per_token * tokens_per_s / (self.accelerator.peak_flops * self.env.world_size)
        self.metrics.write(entry)
        _tensorboard_write(self.writer, entry, step)
        self._window_tokens, self._window_started = 0, time.perf_counter()

    def validate(self, step: int, val_batches: list[dict], loss_fn: LossFn) -> float:
        """The loss over this process's held-out `val_batches`, all processes together, logged as
        the "split": "val" entry of `step` with its perplexity and loss_fn's extra metrics (each
        averaged over the batches weighted by their counts, as in training). Returns the loss."""
        env = self.env
        self.model.eval()
        total = torch.zeros((), device=env.device)
        extras = _WeightedMeans(env.device)
        with torch.no_grad(), self.autocast():
            for batch in val_batches:
                loss, metrics = _loss_and_metrics(loss_fn(self.train_model, batch))
                total += loss.float()
                extras.add(metrics, batch["count"])
        self.model.train()
        count = all_reduce_sum(torch.tensor(float(sum(b["count"] for b in val_batches)), device=env.device))
        val_loss = float(all_reduce_sum(total) / count)
        metrics = extras.means(count)
        val = {"step": step, "split": "val", "loss": val_loss, "ppl": math.exp(min(val_loss, 50)), **metrics}
        self.metrics.write(val)
        board = {"val_loss": val_loss, "val_ppl": val["ppl"], **{f"val_{k}": v for k, v in metrics.items()}}
        _tensorboard_write(self.writer, board, step)
        if env.is_main:
            self.progress.write(f"step {step}: val loss {val_loss:.4f}, ppl {val['ppl']:.2f}")
        self.val_loss = val_loss
        self._clock = time.perf_counter()
        return val_loss

    def save_checkpoint(self, step: int) -> None:
        """A complete checkpoint of `step`: weights (save_weights), optimizer, RNG states and
        totals; older ones beyond cfg.keep_last are removed. Collective: every process calls it."""
        model_state = full_model_state(self.model)
        training_state = {
            "step": step,
            "optimizer": full_optimizer_state(self.model, self.optimizer),
            "rng": run_state.rng_state(),
            **self.totals,
        }
        if self.env.is_main:
            self.save_weights(
                model_state, run_state.checkpoint_path(self.out, step),
                lambda d: torch.save(training_state, d / run_state.TRAINING_STATE),
            )
            run_state.prune_checkpoints(self.out, self.cfg.keep_last)
        self._clock = time.perf_counter()

    def finish(self, steps: int | None = None, extra: dict | None = None) -> dict:
        """Write the final model (out/model) and out/summary.json; return the summary. `steps`: the
        steps done, when a run stops before cfg.max_steps (PPO's early stopping); `extra`: more
        summary fields."""
        cfg, env, totals = self.cfg, self.env, self.totals
        steps = cfg.max_steps if steps is None else steps
        self.progress.close()
        model_state = full_model_state(self.model)
        val_loss = self.val_loss
        summary = {
            "steps": steps,
            "final_loss": self.last_loss if steps > self.start else None,
            "val_loss": val_loss,
            "val_ppl": math.exp(min(val_loss, 50)) if val_loss is not None else None,
            "tokens": totals["tokens"],
            "elapsed_s": totals["elapsed"],
            "tokens_per_s": totals["tokens"] / max(totals["elapsed"], 1e-9),
            "skipped_steps": totals["skipped"],
            "processes": env.world_size,
            "device": str(env.device.type),
            "watts_per_device": self.watts,
            **carbon.compute_record(totals["elapsed"], env.world_size, self.watts),
            **(extra or {}),
        }
        if env.is_main:
            self.save_weights(model_state, self.out / "model", None)
            (self.out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
        if self.writer is not None:
            self.writer.close()
        return summary


def setup(
    model: nn.Module,
    cfg: LoopConfig,
    env: Distributed,
    out: Path,
    *,
    identity: dict,
    save_weights: SaveWeights,
    load_weights: Callable[[Path], dict] = llama_reader,
    flops_per_token: float | None = None,
    lr_scales: dict[str, float] | None = None,
) -> Trainer:
    """Start or resume the run in `out` for `model` (unwrapped, on its device).

    Checks the run's identity (a different run in `out` is refused), removes what a killed save
    left, resumes from the last complete checkpoint (weights, and, unless the run had finished,
    optimizer state, RNG states and totals), sets the precision, parallelizes the model
    (distributed.parallelize) and builds the optimizer (paper §2.2; `lr_scales`: optim.build_optimizer).
    """
    out.mkdir(parents=True, exist_ok=True)
    if env.is_main:
        run_state.check_run_identity(out, {**identity, "loop": cfg.identity()})
        run_state.remove_partial_saves(out)
    metrics = run_state.MetricsLog(out / "metrics.jsonl", env.is_main)
    checkpoints = run_state.complete_checkpoints(out)
    resume = checkpoints[-1] if checkpoints else None
    saved = run_state.load_training_state(resume) if resume else None
    if resume:
        model.load_state_dict(load_weights(resume))
    # Drop what a killed run logged after its last checkpoint (everything, if it saved none).
    metrics.truncate_after(saved["step"] if resume else -1)
    start = saved["step"] if resume else 0
    common = dict(model=model, cfg=cfg, env=env, out=out, save_weights=save_weights, metrics=metrics, start=start)
    if start >= cfg.max_steps and (out / "summary.json").is_file():
        env.print(f"{out}: already trained for {start} steps")
        return Trainer(**common, completed=json.loads((out / "summary.json").read_text()))

    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and bf16_is_fast(env.device))
    if cfg.precision == "bf16-params":
        if env.world_size > 1 and cfg.parallel == "fsdp":
            raise UserError("--precision bf16-params is for one process or DDP; with FSDP use --precision bf16 "
                            "(bf16 parameters in compute, fp32 shards in the optimizer)")
        model.to(torch.bfloat16)
    train_model = parallelize(model, cfg, env, bf16)
    fsdp_bf16 = bf16 and env.world_size > 1 and cfg.parallel == "fsdp"  # FSDP2 casts by itself
    optimizer = build_optimizer(
        model, cfg.lr, cfg.weight_decay, fused=env.device.type == "cuda" or None,
        master_weights=cfg.precision == "bf16-params", lr_scales=lr_scales,
    )
    if resume:
        load_optimizer_state(model, optimizer, saved["optimizer"])
        run_state.set_rng_state(saved["rng"])
        env.print(f"resuming {out} from {resume.name}")

    gpu_name = torch.cuda.get_device_name(env.device) if env.device.type == "cuda" else None
    trainer = Trainer(
        **common,
        train_model=train_model,
        optimizer=optimizer,
        autocast_dtype=torch.bfloat16 if bf16 and not fsdp_bf16 else None,
        totals={k: saved[k] for k in ("elapsed", "tokens", "skipped")} if resume else None,
        watts=carbon.device_power_watts(gpu_name, cfg.watts, gpu_name is not None),
        accelerator=carbon.find_accelerator(gpu_name) if gpu_name else None,  # its peak gives the MFU
        flops_per_token=flops_per_token,
        writer=_tensorboard(out) if cfg.tensorboard and env.is_main else None,
        # into a log file rather than a terminal, a line every 30 s instead of one per step
        progress=tqdm(total=cfg.max_steps, initial=start, disable=not env.is_main, unit="step", dynamic_ncols=True,
                      mininterval=0.1 if sys.stderr.isatty() else 30.0),
    )
    model.train()
    return trainer


def train(
    model: nn.Module,
    cfg: LoopConfig,
    env: Distributed,
    out: Path,
    *,
    identity: dict,
    micro_batches: Callable[[int], list[dict]],
    loss_fn: LossFn,
    save_weights: SaveWeights,
    load_weights: Callable[[Path], dict] = llama_reader,
    val_batches: list[dict] | None = None,
    flops_per_token: float | None = None,
) -> dict:
    """Train `model` (unwrapped, on its device) for cfg.max_steps; return the run summary.

    `loss_fn(model, micro_batch)` returns the summed loss of the micro-batch (and optionally extra
    metrics, see the module docstring); the validation loss is the same loss over this process's
    `val_batches` (held-out micro-batches), all processes together, at step 0 of a fresh run, every
    cfg.eval_every steps and at the end. Re-running with the same `out` resumes from the last checkpoint.
    """
    trainer = setup(
        model, cfg, env, out, identity=identity, save_weights=save_weights, load_weights=load_weights,
        flops_per_token=flops_per_token,
    )
    if trainer.completed is not None:
        return trainer.completed
    if val_batches and trainer.start == 0:
        trainer.validate(0, val_batches, loss_fn)  # where the run starts from: the baseline of every later one
    for step in range(trainer.start, cfg.max_steps):
        result = trainer.optimizer_step(step, micro_batches(step), loss_fn)
        done = step + 1
        if trainer.should_log(done):
            trainer.log(done, result.record())
        if val_batches and trainer.should_validate(done):
            trainer.validate(done, val_batches, loss_fn)
        if trainer.should_save(done):
            trainer.save_checkpoint(done)
    return trainer.finish()


def _step_sizes(micro_batches: list[dict], env: Distributed) -> tuple[torch.Tensor, int]:
    """The step's count (a float32 tensor: the loss divisor) and tokens, summed over processes."""
    try:
        tokens = sum(b["tokens"] for b in micro_batches)
    except KeyError:
        raise ValueError('every micro-batch needs a "tokens" entry: the tokens its forward pass processes') from None
    # One all-reduce for both, in float64: exact integers (float32 is exact only up to 2^24).
    sizes = all_reduce_sum(torch.tensor([float(sum(b["count"] for b in micro_batches)), float(tokens)],
                                        dtype=torch.float64, device=env.device))
    return sizes[0].to(torch.float32), int(sizes[1])


def _loss_and_metrics(value) -> tuple[torch.Tensor, dict]:
    if isinstance(value, tuple):
        loss, metrics = value
        return loss, metrics
    return value, {}


class _WeightedMeans:
    """loss_fn's extra metrics over micro-batches: each a mean over its micro-batch, combined
    weighted by the micro-batch's count (micro-batches without loss terms weigh nothing)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.sums: dict[str, torch.Tensor] = {}
        self.names: list[str] | None = None

    def add(self, metrics: dict, count: float) -> None:
        names = sorted(metrics)
        if self.names is None:
            self.names = names
            bad = RESERVED_KEYS.intersection(names)
            if bad:
                raise ValueError(f"loss_fn metrics {sorted(bad)}: names the loop already logs")
            self.sums = {name: torch.zeros((), device=self.device) for name in names}
        elif names != self.names:
            raise ValueError(f"loss_fn returned metrics {names} for one micro-batch and {self.names} for another")
        if not count:
            return
        for name in names:
            value = metrics[name]
            value = value.detach() if torch.is_tensor(value) else torch.tensor(float(value))
            if value.numel() != 1:
                raise ValueError(f"loss_fn metric {name!r}: one number expected, got shape {tuple(value.shape)}")
            self.sums[name] += value.reshape(()).float().to(self.device) * count

    def means(self, count: torch.Tensor) -> dict[str, float]:
        """The weighted means, all processes together (`count`: the total count of all of them).
        Collective when there are metrics: every process must return the same names."""
        if not self.sums:
            return {}
        names = sorted(self.sums)
        totals = all_reduce_sum(torch.stack([self.sums[name] for name in names])) / count
        return dict(zip(names, totals.tolist()))


def _tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UserError("--tensorboard needs `pip install tensorboard`") from None
    return SummaryWriter(str(out / "tensorboard"))


def _tensorboard_write(writer, record: dict, step: int) -> None:
    if writer is None:
        return
    for key, value in record.items():
        if key != "step" and isinstance(value, (int, float)):
            writer.add_scalar(key, value, step)
