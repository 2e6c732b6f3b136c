"""LoRA (Hu et al., 2021) for fine-tuning a large model on one GPU: low-rank adapters beside the
frozen attention and feed-forward projections, merged into the weights when saved, so the result
is a plain Hugging Face checkpoint. (Not part of the Llama 2 recipe, which fine-tunes all weights.)"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from llamaforge.model import Llama

TARGETS = ("wq", "wk", "wv", "wo", "w1", "w2", "w3")


class LoRALinear(nn.Linear):
    """y = x W^T + (alpha / rank) x A^T B^T, with W frozen; B starts at zero, so training starts
    from the base model exactly. Keeps the name `weight`, so checkpoints map as before."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        super().__init__(base.in_features, base.out_features, bias=False, device="meta")
        self.weight = nn.Parameter(base.weight.detach(), requires_grad=False)
        self.scale = alpha / rank
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features, device=base.weight.device))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank, device=base.weight.device))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight) + F.linear(F.linear(x, self.lora_a), self.lora_b) * self.scale


def add_lora(model: Llama, rank: int, alpha: float) -> Llama:
    """Freeze every parameter and put adapters on the attention and feed-forward projections."""
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    for block in model.layers:
        for parent in (block.attention, block.feed_forward):
            for name in TARGETS:
                if hasattr(parent, name):
                    setattr(parent, name, LoRALinear(getattr(parent, name), rank, alpha))
    return model


def merge_lora(state: dict[str, torch.Tensor], rank: int, alpha: float) -> dict[str, torch.Tensor]:
    """A state dict with each adapter folded into its weight (W + alpha/rank B A) and removed."""
    merged = {k: v for k, v in state.items() if not k.endswith((".lora_a", ".lora_b"))}
    for key in state:
        if key.endswith(".lora_a"):
            prefix = key.removesuffix(".lora_a")
            delta = state[prefix + ".lora_b"].float() @ state[key].float() * (alpha / rank)
            merged[prefix + ".weight"] = (state[prefix + ".weight"].float() + delta).to(state[prefix + ".weight"].dtype)
    return merged
