"""Losses as pure functions on tensors. Each returns a *sum* and the number of terms it covers, so
that the training loop can divide by the count of a whole (accumulated, multi-process) batch: the
mean over k micro-batches then equals the mean over one batch k times larger, exactly."""

from __future__ import annotations

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


# Margin m(rating) added to the ranking loss (paper §3.2.2, Table 27): pairs the annotators rated as
# clearly different must be separated by more.
RATINGS = ("significantly_better", "better", "slightly_better", "negligibly_better")
MARGINS = {
    "none": dict.fromkeys(RATINGS, 0.0),
    "small": {"significantly_better": 1.0, "better": 2 / 3, "slightly_better": 1 / 3, "negligibly_better": 0.0},
    "large": {"significantly_better": 3.0, "better": 2.0, "slightly_better": 1.0, "negligibly_better": 0.0},
}


def preference_loss(chosen: Tensor, rejected: Tensor, margin: Tensor | float = 0.0, reduction: str = "mean") -> Tensor:
    """Binary ranking loss of the reward models (paper eq. 1-2): -log sigmoid(r_c - r_r - m).

    chosen, rejected: (N,) scores of the preferred and the other response; margin: (N,) or scalar.
    """
    losses = -F.logsigmoid(chosen - rejected - margin)
    return losses.mean() if reduction == "mean" else losses.sum()
