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


class _ChunkedLinearCrossEntropy(torch.autograd.Function):
    """Summed cross-entropy of `hidden @ weight.T` without ever holding all the logits.

    Each chunk of rows computes its logits, its loss and, when gradients are wanted, at once its
    share of the gradients (d loss / d logits = softmax - onehot(target)), then drops the logits:
    the same products as the plain loss (no recomputation), but only one chunk of logits at a time.
    With a 32k vocabulary and 8k tokens per micro-batch that is 1 GB of fp32 logits, and as much
    again for their gradient, never allocated. The loss is a final scalar, so the backward pass only
    scales the stored gradients.
    """

    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk_size, compute_dtype, grad_hidden_wanted, grad_weight_wanted):
        valid = targets != IGNORE_INDEX
        safe_targets = targets.clamp(min=0)
        total = torch.zeros((), device=hidden.device, dtype=torch.float32)
        w = weight.to(compute_dtype)
        grad_hidden = torch.empty_like(hidden) if grad_hidden_wanted else None
        grad_weight = torch.zeros(weight.shape, device=weight.device, dtype=torch.float32) if grad_weight_wanted else None
        for start in range(0, len(hidden), chunk_size):
            rows = slice(start, start + chunk_size)
            h = hidden[rows].to(compute_dtype)
            logits = (h @ w.T).float()  # (chunk, V)
            lse = torch.logsumexp(logits, dim=-1)
            target_logits = logits.gather(1, safe_targets[rows, None]).squeeze(1)
            total += ((lse - target_logits) * valid[rows]).sum()
            if grad_hidden_wanted or grad_weight_wanted:
                grad_logits = torch.exp(logits.sub_(lse[:, None]))  # softmax, in place of the logits
                grad_logits[torch.arange(len(h), device=h.device), safe_targets[rows]] -= 1.0
                grad_logits = (grad_logits * valid[rows, None]).to(compute_dtype)
                if grad_hidden_wanted:
                    grad_hidden[rows] = (grad_logits @ w).to(hidden.dtype)
                if grad_weight_wanted:  # (not for a frozen output layer, e.g. under LoRA)
                    grad_weight += (grad_logits.T @ h).float()
        ctx.save_for_backward(grad_hidden, grad_weight)
        ctx.weight_dtype = weight.dtype
        return total

    @staticmethod
    def backward(ctx, grad_total):
        grad_hidden, grad_weight = ctx.saved_tensors
        if grad_hidden is not None:
            grad_hidden = grad_hidden * grad_total
        if grad_weight is not None:
            grad_weight = (grad_weight * grad_total).to(ctx.weight_dtype)
        return grad_hidden, grad_weight, None, None, None, None, None


def chunked_next_token_loss(
    hidden: Tensor, weight: Tensor, targets: Tensor, chunk_size: int = 2048
) -> tuple[Tensor, Tensor]:
    """`next_token_loss(hidden @ weight.T, targets)` in chunks of rows (same sum, same gradients),
    for the output layer of a large vocabulary. hidden: (B, T, dim); weight: (V, dim); targets (B, T).
    Under autocast the matrix products run in the autocast dtype, the softmax in fp32."""
    compute_dtype = weight.dtype
    if torch.is_autocast_enabled(hidden.device.type):
        compute_dtype = torch.get_autocast_dtype(hidden.device.type)
    grad_enabled = torch.is_grad_enabled()
    flat_targets = targets.reshape(-1)
    with torch.autocast(hidden.device.type, enabled=False):
        total = _ChunkedLinearCrossEntropy.apply(
            hidden.reshape(-1, hidden.shape[-1]), weight, flat_targets, chunk_size, compute_dtype,
            grad_enabled and hidden.requires_grad, grad_enabled and weight.requires_grad,
        )
    return total, (flat_targets != IGNORE_INDEX).sum()


# PPO (paper §3.2.3). Per-token tensors are (B, T) over the response tokens, mask True on them.


def masked_log_ratio(logprobs: Tensor, old_logprobs: Tensor, mask: Tensor) -> Tensor:
    """log pi_theta - log pi_old per token in float32, 0 outside the mask: exp() of padding then
    never overflows to inf and feeds no nan into the gradients (also the per-token KL estimate of
    rlhf.rewards.token_kl)."""
    return torch.where(mask.bool(), logprobs.float() - old_logprobs.float(), 0.0)


def ppo_policy_loss(
    logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor, clip: float = 0.2
) -> tuple[Tensor, Tensor]:
    """PPO's clipped surrogate, summed over response tokens, and their number.

    loss_t = max(-A_t * r_t, -A_t * clamp(r_t, 1 - clip, 1 + clip)), r_t = exp(logprobs - old_logprobs):
    the pessimistic one of the two, so a step gains nothing from moving r past 1 +- clip in the
    direction A favours (the gradient is 0 there), yet is never spared a move the wrong way.
    logprobs: (B, T) of the sampled tokens under the policy being trained; old_logprobs: (B, T)
    the same at sampling time; advantages: (B, T) from `rlhf.rewards.gae`; mask: (B, T) bool.
    """
    mask = mask.bool()
    ratio = torch.exp(masked_log_ratio(logprobs, old_logprobs, mask))
    advantages = advantages.float()
    losses = torch.maximum(-advantages * ratio, -advantages * ratio.clamp(1 - clip, 1 + clip))
    return torch.where(mask, losses, 0.0).sum(), mask.sum()


def value_loss(
    values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor, clip: float | None
) -> tuple[Tensor, Tensor]:
    """Squared error of the value head, summed over response tokens, and their number.

    loss_t = 0.5 * max((V - R)^2, (V_clip - R)^2), V_clip = V_old + clamp(V - V_old, -clip, clip):
    as in the policy loss, the pessimistic one, so that the values move at most clip from those of
    the rollout per PPO epoch. clip=None: no clipping, 0.5 * (V - R)^2.
    values: (B, T) of the model being trained; old_values: (B, T) at rollout time; returns: (B, T)
    from `rlhf.rewards.gae`; mask: (B, T) bool.
    """
    mask = mask.bool()
    values, returns = values.float(), returns.float()
    losses = (values - returns) ** 2
    if clip is not None:
        old_values = old_values.float()
        clipped = old_values + (values - old_values).clamp(-clip, clip)
        losses = torch.maximum(losses, (clipped - returns) ** 2)
    return 0.5 * torch.where(mask, losses, 0.0).sum(), mask.sum()


@torch.no_grad()
def ppo_stats(logprobs: Tensor, old_logprobs: Tensor, mask: Tensor, clip: float = 0.2) -> dict[str, Tensor]:
    """What is logged every PPO step, as 0-dim float32 tensors (means over the masked tokens, 0
    when there are none): how far the policy has moved from the one that sampled.

    ratio: mean of r_t = exp(logprobs - old_logprobs); clip_fraction: the share of tokens with
    |r_t - 1| > clip, whose gradient `ppo_policy_loss` may cut; approx_kl: mean of
    0.5 * (log r_t)^2, the "k2" estimator of KL(pi_old || pi_theta) (the tokens are sampled from
    pi_old): biased, but never negative and low in variance, and close to the KL while the two
    policies are close. logprobs, old_logprobs, mask: (B, T).
    """
    mask = mask.bool()
    log_ratio = masked_log_ratio(logprobs, old_logprobs, mask)
    ratio = torch.exp(log_ratio)
    n = mask.sum().clamp(min=1)
    return {
        "ratio": torch.where(mask, ratio, 0.0).sum() / n,
        "clip_fraction": (mask & ((ratio - 1).abs() > clip)).sum() / n,
        "approx_kl": (0.5 * log_ratio**2).sum() / n,
    }
