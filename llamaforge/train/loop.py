"""The training mechanics every stage shares: schedule, gradient accumulation, clipping, the
non-finite guard, validation, logging, compute accounting, checkpoints and exact resume.

A stage supplies what differs: the model, `micro_batches(step)` (this process's micro-batches of an
optimizer step, a pure function of the step so that resuming and re-sharding are exact), the
loss, and how its weights are written. Each micro-batch is a dict with a "count" entry, the number
of loss terms it holds; the loop divides every summed loss by the count of the whole step (all
micro-batches, all processes), so accumulating k micro-batches equals one batch k times larger.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn
from tqdm import tqdm

from llamaforge import carbon
from llamaforge.errors import UserError
from llamaforge.model import Llama
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
    """Optimizer steps of the whole run (sft, reward: 0 derives them from --epochs)."""
    lr: float = 3e-4
    """Peak learning rate."""
    warmup_steps: int = 2000
    """Linear warmup steps before the cosine decay (reward: -1 is 3% of the steps, at least 5)."""
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
    computes with bf16 parameters and keeps fp32 shards); auto: bf16 on CUDA, fp32 on CPU."""
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


def _enable_activation_checkpointing(model: Llama) -> None:
    # Replace each block's forward by a checkpointed call of itself: parameter names are unchanged.
    for block in model.layers:
        block.forward = _checkpointed(block.forward)


def _checkpointed(forward):
    def run(*args, **kwargs):
        return torch.utils.checkpoint.checkpoint(forward, *args, use_reentrant=False, **kwargs)

    return run


def train(
    model: Llama,
    cfg: LoopConfig,
    env: Distributed,
    out: Path,
    *,
    identity: dict,
    micro_batches: Callable[[int], list[dict]],
    loss_fn: Callable[[nn.Module, dict], torch.Tensor],
    save_weights: SaveWeights,
    load_weights: Callable[[Path], dict] = llama_reader,
    val_batches: list[dict] | None = None,
    flops_per_token: float | None = None,
) -> dict:
    """Train `model` (unwrapped, on its device) for cfg.max_steps; return the run summary.

    `loss_fn(model, micro_batch)` returns the summed loss of the micro-batch; the validation loss
    is the same loss over this process's `val_batches` (held-out micro-batches), all processes
    together. Re-running with the same `out` resumes from the last checkpoint.
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
    if start >= cfg.max_steps and (out / "summary.json").is_file():
        if env.is_main:
            print(f"{out}: already trained for {start} steps")
        return json.loads((out / "summary.json").read_text())

    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and env.device.type == "cuda")
    bf16_params = cfg.precision == "bf16-params"
    if bf16_params:
        if env.world_size > 1 and cfg.parallel == "fsdp":
            raise UserError("--precision bf16-params is for one process or DDP; with FSDP use --precision bf16 "
                            "(bf16 parameters in compute, fp32 shards in the optimizer)")
        model.to(torch.bfloat16)
    if cfg.activation_checkpointing:
        _enable_activation_checkpointing(model)
    if cfg.compile:
        for block in model.layers:
            block.compile()
    train_model = parallelize(model, cfg.parallel, env, bf16)
    fsdp_bf16 = bf16 and env.world_size > 1 and cfg.parallel == "fsdp"  # FSDP2 casts by itself
    autocast = (
        torch.autocast(env.device.type, dtype=torch.bfloat16) if bf16 and not fsdp_bf16 else contextlib.nullcontext()
    )
    optimizer = build_optimizer(
        model, cfg.lr, cfg.weight_decay, fused=env.device.type == "cuda" or None, master_weights=bf16_params
    )
    if resume:
        load_optimizer_state(model, optimizer, saved["optimizer"])
        run_state.set_rng_state(saved["rng"])
        if env.is_main:
            print(f"resuming {out} from {resume.name}")

    gpu_name = torch.cuda.get_device_name(env.device) if env.device.type == "cuda" else None
    watts = carbon.device_power_watts(gpu_name, cfg.watts, gpu_name is not None)
    accelerator = carbon.find_accelerator(gpu_name) if gpu_name else None  # its peak gives the MFU
    totals = {k: saved[k] for k in ("elapsed", "tokens", "skipped")} if resume else {"elapsed": 0.0, "tokens": 0, "skipped": 0}
    writer = _tensorboard(out) if cfg.tensorboard and env.is_main else None
    progress = tqdm(total=cfg.max_steps, initial=start, disable=not env.is_main, unit="step", dynamic_ncols=True)
    window_tokens, window_started = 0, time.perf_counter()
    val_loss = None
    model.train()

    def save_checkpoint(step: int) -> None:
        model_state = full_model_state(model)
        training_state = {
            "step": step,
            "optimizer": full_optimizer_state(model, optimizer),
            "rng": run_state.rng_state(),
            **totals,
        }
        if env.is_main:
            save_weights(model_state, run_state.checkpoint_path(out, step), lambda d: torch.save(training_state, d / run_state.TRAINING_STATE))
            run_state.prune_checkpoints(out, cfg.keep_last)

    def validate(done: int) -> float:
        model.eval()
        total = torch.zeros((), device=env.device)
        with torch.no_grad(), autocast:
            for batch in val_batches:
                total += loss_fn(train_model, batch).float()
        model.train()
        count = all_reduce_sum(torch.tensor(float(sum(b["count"] for b in val_batches)), device=env.device))
        val_loss = float(all_reduce_sum(total) / count)
        val = {"step": done, "split": "val", "loss": val_loss, "ppl": math.exp(min(val_loss, 50))}
        metrics.write(val)
        _tensorboard_write(writer, {"val_loss": val_loss, "val_ppl": val["ppl"]}, done)
        if env.is_main:
            progress.write(f"step {done}: val loss {val_loss:.4f}, ppl {val['ppl']:.2f}")
        return val_loss

    if val_batches and start == 0:
        validate(0)  # where the run starts from: the baseline every later validation is compared with
    for step in range(start, cfg.max_steps):
        step_started = time.perf_counter()
        lr = cosine_lr(step, cfg.lr, cfg.warmup_steps, cfg.max_steps, cfg.final_lr_ratio)
        for group in optimizer.param_groups:
            group["lr"] = lr
        batches = micro_batches(step)
        count = all_reduce_sum(torch.tensor(float(sum(b["count"] for b in batches)), device=env.device))
        loss_sum = torch.zeros((), device=env.device)
        for i, batch in enumerate(batches):
            with gradient_sync(train_model, enabled=i == len(batches) - 1):
                with autocast:
                    micro_loss = loss_fn(train_model, batch)
                # Data-parallel wrappers average gradients over processes: undo it, then divide
                # by the whole step's count.
                (micro_loss * env.world_size / count).backward()
            loss_sum += micro_loss.detach().float()
        loss = float(all_reduce_sum(loss_sum) / count)
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        grad_norm = float(grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm)
        if math.isfinite(loss) and math.isfinite(grad_norm):
            optimizer.step()
        elif cfg.nonfinite == "stop":
            optimizer.zero_grad(set_to_none=True)
            last = run_state.complete_checkpoints(out)
            raise UserError(
                f"step {step + 1}: non-finite loss {loss} or gradient norm {grad_norm}; stopped "
                f"(last checkpoint: {last[-1] if last else 'none'})"
            )
        else:
            totals["skipped"] += 1
        optimizer.zero_grad(set_to_none=True)

        done = step + 1
        totals["tokens"] += int(count)
        totals["elapsed"] += time.perf_counter() - step_started
        window_tokens += int(count)
        progress.update(1)
        progress.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}")
        if done % cfg.log_every == 0 or done in (1, cfg.max_steps):  # step 1: where the curve starts
            tokens_per_s = window_tokens / (time.perf_counter() - window_started)
            record = {
                "step": done,
                "loss": loss,
                "lr": lr,
                "grad_norm": grad_norm,
                "tokens_per_s": tokens_per_s,
                "tokens": totals["tokens"],
                "elapsed_s": totals["elapsed"],
                "skipped_steps": totals["skipped"],
                **carbon.compute_record(totals["elapsed"], env.world_size, watts),
            }
            if accelerator is not None and flops_per_token:
                record["mfu"] = flops_per_token * tokens_per_s / (accelerator.peak_flops * env.world_size)
            metrics.write(record)
            _tensorboard_write(writer, record, done)
            window_tokens, window_started = 0, time.perf_counter()
        if val_batches and ((cfg.eval_every and done % cfg.eval_every == 0) or done == cfg.max_steps):
            val_loss = validate(done)
        if done % cfg.save_every == 0 or done == cfg.max_steps:
            save_checkpoint(done)
    progress.close()

    model_state = full_model_state(model)
    summary = {
        "steps": cfg.max_steps,
        "final_loss": loss if cfg.max_steps > start else None,
        "val_loss": val_loss,
        "val_ppl": math.exp(min(val_loss, 50)) if val_loss is not None else None,
        "tokens": totals["tokens"],
        "elapsed_s": totals["elapsed"],
        "tokens_per_s": totals["tokens"] / max(totals["elapsed"], 1e-9),
        "skipped_steps": totals["skipped"],
        "processes": env.world_size,
        "device": str(env.device.type),
        "watts_per_device": watts,
        **carbon.compute_record(totals["elapsed"], env.world_size, watts),
    }
    if env.is_main:
        save_weights(model_state, out / "model", None)
        (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    if writer is not None:
        writer.close()
    return summary


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
