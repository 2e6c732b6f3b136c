"""The PPO reward of the Llama 2 paper (§3.2.3), as pure functions on tensors.

    R(g | p) = Rc~(g | p) - beta * KL(pi_theta(g | p) || pi_0(g | p))
    Rc(g | p) = Rs(g | p) if is_safety(p) or Rs(g | p) < 0.15 else Rh(g | p)    (eq. 3)
    Rc~(g | p) = whiten(logit(Rc(g | p)))

The 0.15 threshold assumes reward-model outputs in (0, 1). Our reward models
(model.RewardModel) return raw, unbounded scalar scores, so `piecewise_reward` maps them through a
sigmoid first. Composition is `shaped_reward(piecewise_reward(...))`, then `penalized_reward`.
"""

from __future__ import annotations

import torch
from torch import Tensor

SAFETY_THRESHOLD = 0.15  # paper §3.2.3, eq. 3
LOGIT_EPS = 1e-6  # rewards are clamped to [eps, 1 - eps] before the logit: |logit| <= 13.8
WHITEN_EPS = 1e-8  # added to the variance, so that constant values whiten to 0, not nan


def piecewise_reward(
    safety: Tensor, helpfulness: Tensor, is_safety: Tensor, threshold: float = SAFETY_THRESHOLD
) -> Tensor:
    """Rc of eq. 3, in (0, 1): the safety reward where the prompt is a safety prompt or the answer
    looks unsafe (sigmoid(safety) < threshold, strictly), else the helpfulness reward.

    safety, helpfulness: (N,) raw scores of the two reward models; is_safety: (N,) bool.
    Returns the probabilities (N,), not their logits: the threshold and the rejection-sampling
    pick are read in (0, 1); PPO takes `shaped_reward` of this.
    """
    rs, rh = torch.sigmoid(safety.float()), torch.sigmoid(helpfulness.float())  # (N,) each
    return torch.where(is_safety | (rs < threshold), rs, rh)


def logit(probs: Tensor, eps: float = LOGIT_EPS) -> Tensor:
    """log(p / (1 - p)) after clamping p to [eps, 1 - eps]: a float32 sigmoid of a score above
    ~17 is exactly 1, whose logit would be inf. Clamped in float64, where 1 - eps is exact enough
    that the bounds are symmetric (+-13.8155); returned in float32. probs: any shape."""
    return torch.logit(probs.double(), eps=eps).float()


def whiten(values: Tensor, mask: Tensor | None = None, shift_mean: bool = True, eps: float = WHITEN_EPS) -> Tensor:
    """(values - mean) / sqrt(var + eps) over the entries where mask is True (all when None).

    The variance is the biased one (divide by n, not n - 1): the whitened entries then have mean
    square exactly 1 (up to eps), and a single entry is defined (0) rather than nan. With
    shift_mean=False the mean is added back, so only the scale changes. Entries outside the mask
    come back as 0, so that padding never carries a value into a sum. Any shape; mask: same shape.
    """
    values = values.float()
    mask = torch.ones_like(values, dtype=torch.bool) if mask is None else mask.bool()
    n = mask.sum().clamp(min=1)
    mean = torch.where(mask, values, 0.0).sum() / n
    var = torch.where(mask, (values - mean) ** 2, 0.0).sum() / n
    whitened = (values - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return torch.where(mask, whitened, 0.0)


def shaped_reward(rc: Tensor, mask: Tensor | None = None) -> Tensor:
    """Rc~ = whiten(logit(Rc)) over the batch (§3.2.3: "to increase stability and balance properly
    with the KL penalty"). rc: (N,) in (0, 1) from `piecewise_reward`. Since logit undoes the
    sigmoid, this is the whitened raw score of the chosen reward model, clamped at +-13.8."""
    return whiten(logit(rc), mask)


def penalized_reward(
    shaped: Tensor, logprobs: Tensor, reference_logprobs: Tensor, mask: Tensor, beta: float
) -> Tensor:
    """R = Rc~ - beta * KL(pi_theta || pi_0) per sequence, the KL estimated on the sampled answer as
    the sum over its tokens of log pi_theta - log pi_0 (the paper uses beta = 0.01 for 7B and 13B,
    0.005 for 34B and 70B). shaped: (N,); logprobs, reference_logprobs, mask: (N, T). Returns (N,)."""
    kl = torch.where(mask.bool(), logprobs.float() - reference_logprobs.float(), 0.0).sum(dim=-1)  # (N,)
    return shaped.float() - beta * kl
