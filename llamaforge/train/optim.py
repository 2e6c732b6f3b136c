"""The optimizer recipe of the paper (§2.2, Table 1): AdamW with betas (0.9, 0.95) and eps 1e-5, weight
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
    model: nn.Module, lr: float, weight_decay: float, betas=(0.9, 0.95), eps: float = 1e-5, fused: bool | None = None,
    master_weights: bool = False, lr_scales: dict[str, float] | None = None,
) -> torch.optim.AdamW:
    """AdamW (MasterWeightAdamW for bf16 parameters when `master_weights`) with weight decay on the
    matrices (projections, embeddings) and none on the RMSNorm gains: the paper states 0.1 without
    saying which tensors; decaying norm gains towards zero would shrink every activation, so, like
    most Llama trainers, llamaforge exempts 1-D parameters.

    `lr_scales` {name prefix: factor}: parameters whose names start with a prefix learn at that
    multiple of the scheduled rate (the group's "lr_scale", applied by the loop), e.g. PPO's value
    model ("value.")."""
    scales = lr_scales or {}
    groups: dict[tuple[bool, float], list] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            scale = next((s for prefix, s in scales.items() if name.startswith(prefix)), 1.0)
            groups.setdefault((p.ndim >= 2, scale), []).append(p)
    order = sorted(groups, key=lambda key: (not key[0], key[1]))  # matrices first, as before lr_scales
    param_groups = [{"params": groups[key], "weight_decay": weight_decay if key[0] else 0.0, "lr_scale": key[1]}
                    for key in order]
    adamw = MasterWeightAdamW if master_weights else torch.optim.AdamW
    return adamw(param_groups, lr=lr, betas=tuple(betas), eps=eps, fused=fused)


class MasterWeightAdamW(torch.optim.AdamW):
    """AdamW for bf16 parameters: each parameter's fp32 master copy and both moments live in the
    optimizer state, the update is computed in fp32 and rounded into the bf16 parameter.

    Forward and backward then run in bf16 without autocast's per-step weight casts, and gradients
    are bf16 (half the memory of fp32 gradients); the master copy keeps small updates from being
    rounded away (a bf16 weight has 8 bits of mantissa). Checkpoints hold the bf16 weights, the
    training state holds the fp32 masters, so a resumed run continues exactly.
    """

    @torch.no_grad()
    def step(self, closure=None):
        swapped = []
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                # (stored after the first step: AdamW initializes the moments of an empty state)
                master = self.state[p].get("master", None)
                master = p.detach().float() if master is None else master
                low, grad = p.data, p.grad
                p.grad = None
                p.data = master  # AdamW sees (and initializes its moments as) fp32
                p.grad = grad.float()
                swapped.append((p, low, grad))
        try:
            return super().step(closure)
        finally:
            for p, low, grad in swapped:
                self.state[p]["master"] = p.data
                low.copy_(p.data)
                p.grad = None
                p.data = low
                p.grad = grad

    def load_state_dict(self, state_dict: dict) -> None:
        # The base class casts saved state to each parameter's dtype (bf16 here): keep it fp32.
        super().load_state_dict(state_dict)
        saved_ids = [i for group in state_dict["param_groups"] for i in group["params"]]
        params = [p for group in self.param_groups for p in group["params"]]
        for saved_id, p in zip(saved_ids, params):
            for key, value in state_dict["state"].get(saved_id, {}).items():
                if key != "step" and torch.is_tensor(value) and value.is_floating_point():
                    self.state[p][key] = value.to(device=p.device, dtype=torch.float32)
