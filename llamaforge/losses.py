"""Losses as pure functions on tensors. Each returns a *sum* and the number of terms it covers, so
that the training loop can divide by the count of a whole (accumulated, multi-process) batch: the
mean over k micro-batches then equals the mean over one batch k times larger, exactly."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE_INDEX = -100  # target value of positions that carry no loss (padding, prompt tokens in SFT)


def next_token_loss(logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """Summed cross-entropy of next-token predictions and the number of predicted tokens.

    logits: (B, T, V) predictions for positions 0..T-1; targets: (B, T) the token each position
    should predict (already shifted by one), IGNORE_INDEX where there is nothing to predict.
    """
    total = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
    )
    return total, (targets != IGNORE_INDEX).sum()
