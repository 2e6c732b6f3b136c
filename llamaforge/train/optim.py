"""The optimizer recipe of the paper (RECIPE §2): AdamW with betas (0.9, 0.95) and eps 1e-5, weight
decay 0.1, a cosine learning-rate schedule after a linear warmup, decaying to 10% of the peak."""

from __future__ import annotations

import math

import torch
from torch import nn


def cosine_lr(step: int, peak_lr: float, warmup_steps: int, total_steps: int, final_ratio: float = 0.1) -> float:
    """Learning rate of optimizer step `step` (0-based).

    Linear warmup from peak/warmup to the peak over `warmup_steps`, then a half cosine from the peak
    down to final_ratio * peak at `total_steps`, constant after that.
    """
    if step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    decay_steps = max(total_steps - warmup_steps, 1)
    progress = min((step - warmup_steps) / decay_steps, 1.0)
    final_lr = final_ratio * peak_lr
    return final_lr + 0.5 * (peak_lr - final_lr) * (1 + math.cos(math.pi * progress))


def build_optimizer(
    model: nn.Module, lr: float, weight_decay: float, betas=(0.9, 0.95), eps: float = 1e-5, fused: bool | None = None
) -> torch.optim.AdamW:
    """AdamW with weight decay on the matrices (projections, embeddings) and none on the RMSNorm
    gains: the paper states 0.1 without saying which tensors; decaying norm gains towards zero would
    shrink every activation, so, like most Llama trainers, llamaforge exempts 1-D parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps, fused=fused)
