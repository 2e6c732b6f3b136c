"""Helpers shared by the benchmarks: alternating timing and one training step of either library."""

from __future__ import annotations

import statistics
import time

import torch


def median_times(ours, theirs, repeats: int, sync=lambda: None) -> tuple[float, float]:
    """Median seconds of each function, run alternately so that load changes hit both alike."""
    ours(), theirs(), sync()  # warm-up (and compilation)
    times = {ours: [], theirs: []}
    for _ in range(repeats):
        for fn in (ours, theirs):
            sync()
            started = time.perf_counter()
            fn()
            sync()
            times[fn].append(time.perf_counter() - started)
    return statistics.median(times[ours]), statistics.median(times[theirs])


def train_step_fn(model, batch: torch.Tensor, ours: bool, autocast=None, fused: bool | None = None):
    """One forward + backward + AdamW step on `batch` (B, T+1), as each library is used for training:
    ours with its chunked next-token loss (model(..., targets=)), transformers with its `labels=` loss."""
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=1e-4, betas=(0.9, 0.95), eps=1e-5, weight_decay=0.1, fused=fused
    )
    inputs, targets = batch[:, :-1], batch[:, 1:]
    context = autocast or torch.autocast("cpu", enabled=False)

    def step():
        with context:
            if ours:
                loss_sum, count = model(inputs, targets=targets)
                loss = loss_sum / count
            else:
                loss = model(input_ids=inputs, labels=inputs).loss  # shifts the labels itself
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step



def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, size: int = 8192, repeats: int = 20) -> float:
    """Achieved bf16 FLOP/s of a size^3 matmul: the ceiling a training step can approach."""
    a = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    b = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    synchronize(device)
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronize(device)
    return 2 * size**3 * repeats / (time.perf_counter() - started)


def copy_bandwidth(device: torch.device, gib: float = 1.0, repeats: int = 20) -> float:
    """Achieved bytes/s of a device-to-device copy, counting the read and the write: the ceiling of a
    decode step, which must read every weight once."""
    source = torch.empty(int(gib * 2**30), dtype=torch.uint8, device=device)
    target = torch.empty_like(source)
    for _ in range(3):
        target.copy_(source)
    synchronize(device)
    started = time.perf_counter()
    for _ in range(repeats):
        target.copy_(source)
    synchronize(device)
    return 2 * source.numel() * repeats / (time.perf_counter() - started)
