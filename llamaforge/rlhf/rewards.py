"""The PPO reward of the Llama 2 paper (§3.2.3), as pure functions on tensors.

    R(g | p) = Rc~(g | p) - beta * KL(pi_theta(g | p) || pi_0(g | p))
    Rc(g | p) = Rs(g | p) if is_safety(p) or Rs(g | p) < 0.15 else Rh(g | p)    (eq. 3)
    Rc~(g | p) = whiten(logit(Rc(g | p)))

The 0.15 threshold assumes reward-model outputs in (0, 1). Our reward models
(model.RewardModel) return raw, unbounded scalar scores, so `piecewise_reward` maps them through a
sigmoid first. Composition is `shaped_reward(piecewise_reward(...))`, then `penalized_reward` (one
reward per sequence) or, for PPO, `per_token_rewards` (the same total spread over the tokens: the KL
term on each token, Rc~ on the last) followed by `gae` for the advantages and value targets.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from llamaforge.losses import masked_log_ratio

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


def whiten(
    values: Tensor, mask: Tensor | None = None, shift_mean: bool = True, eps: float = WHITEN_EPS,
    all_reduce: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    """(values - mean) / sqrt(var + eps) over the entries where mask is True (all when None).

    The variance is the biased one (divide by n, not n - 1): the whitened entries then have mean
    square exactly 1 (up to eps), and a single entry is defined (0) rather than nan. With
    shift_mean=False the mean is added back, so only the scale changes. Entries outside the mask
    come back as 0, so that padding never carries a value into a sum. Any shape; mask: same shape.
    `all_reduce` (a sum over processes) makes the mean and variance those of every process's
    values together, as if one process held them all (data-parallel PPO).
    """
    values = values.float()
    mask = torch.ones_like(values, dtype=torch.bool) if mask is None else mask.bool()
    total = all_reduce or (lambda t: t)
    n = total(mask.sum().float()).clamp(min=1)
    mean = total(torch.where(mask, values, 0.0).sum()) / n
    var = total(torch.where(mask, (values - mean) ** 2, 0.0).sum()) / n
    whitened = (values - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return torch.where(mask, whitened, 0.0)


def shaped_reward(rc: Tensor, mask: Tensor | None = None, group_size: int = 1) -> Tensor:
    """Rc~ = whiten(logit(Rc)) over the batch (§3.2.3: "to increase stability and balance properly
    with the KL penalty"). rc: (N,) in (0, 1) from `piecewise_reward`. Since logit undoes the
    sigmoid, this is the whitened raw score of the chosen reward model, clamped at +-13.8.

    group_size G > 1: rc holds G responses to each prompt, consecutive (N a multiple of G, no
    mask), and each logit is first centered on its prompt's mean, so that the reward says which
    answers to a prompt are better than the others. How high a prompt scores on the whole (how
    easy it is) is no choice of the answer's; the value model is meant to subtract it, and until
    it has learned to, it is noise in the policy gradient."""
    values = logit(rc)
    if group_size > 1:
        if mask is not None or values.numel() % group_size:
            raise ValueError(f"group_size {group_size} needs an unmasked reward count that is a multiple of it")
        groups = values.view(-1, group_size)
        values = (groups - groups.mean(dim=-1, keepdim=True)).flatten()
    return whiten(values, mask)


def token_kl(logprobs: Tensor, reference_logprobs: Tensor, mask: Tensor) -> Tensor:
    """Per-token "k1" KL estimate log pi_theta(a_t) - log pi_0(a_t) of the sampled tokens a_t, 0
    where mask is False. logprobs, reference_logprobs, mask: (N, T). Returns (N, T) float32.

    Summed over a response it is log pi_theta(g | p) - log pi_0(g | p), an unbiased sample of
    KL(pi_theta(g | p) || pi_0(g | p)) since g is drawn from pi_theta: the KL of eq. 4. A single
    token (or answer) can be negative. k3 = (r - 1) - log r, r = pi_0 / pi_theta, is the
    low-variance, always positive alternative, fit for logging, but it is not the paper's term and
    is not used here. The one place where the penalty's KL is computed.
    """
    return masked_log_ratio(logprobs, reference_logprobs, mask)


def penalized_reward(
    shaped: Tensor, logprobs: Tensor, reference_logprobs: Tensor, mask: Tensor, beta: float
) -> Tensor:
    """R = Rc~ - beta * KL(pi_theta || pi_0) per sequence, the KL estimated on the sampled answer as
    the sum over its tokens of log pi_theta - log pi_0 (the paper uses beta = 0.01 for 7B and 13B,
    0.005 for 34B and 70B). shaped: (N,); logprobs, reference_logprobs, mask: (N, T). Returns (N,)."""
    kl = token_kl(logprobs, reference_logprobs, mask).sum(dim=-1)  # (N,)
    return shaped.float() - beta * kl


def last_token_mask(mask: Tensor) -> Tensor:
    """(N, T) bool, True only at the last True position of each row of mask (nowhere in a row
    without one). Found from the mask itself, so it holds for left- or right-aligned responses."""
    mask = mask.bool()
    positions = torch.arange(mask.shape[-1], device=mask.device)
    last = torch.where(mask, positions, -1).amax(dim=-1, keepdim=True)  # (N, 1), -1 for an empty row
    return mask & (positions == last)


def per_token_rewards(
    shaped: Tensor, logprobs: Tensor, reference_logprobs: Tensor, mask: Tensor, beta: float
) -> tuple[Tensor, Tensor]:
    """The reward of eq. 4 per response token, for PPO (paper §3.2.3): -beta * kl_t on every token,
    plus the sequence's Rc~ at its last real token (the reward models score the whole answer, so
    it is earned where the answer ends). Summed over a non-empty row it is `penalized_reward`; a
    row without a True gets nothing, not even its Rc~.

    kl_t is the k1 estimator of `token_kl` (its sum over the answer is the KL term of eq. 4).
    shaped: (N,) = whiten(logit(Rc)); logprobs, reference_logprobs, mask: (N, T).
    Returns (rewards, kl), both (N, T) float32 and 0 where mask is False.
    """
    kl = token_kl(logprobs, reference_logprobs, mask)
    rewards = -beta * kl + torch.where(last_token_mask(mask), shaped.float()[:, None], 0.0)
    return rewards, kl


@torch.no_grad()
def gae(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float) -> tuple[Tensor, Tensor]:
    """Generalized advantage estimation over response tokens (the advantages PPO maximizes with).

        delta_t = r_t + gamma * V_{t+1} - V_t,   A_t = delta_t + gamma * lam * A_{t+1}

    where t + 1 is the next True position of the row: positions where mask is False are skipped,
    not treated as ends, so any padding (left, right) gives the same numbers. After a row's last
    True there is nothing: V and A there are 0, so no value is bootstrapped past the answer's end.
    rewards, values, mask: (B, T). Returns (advantages, returns), (B, T) float32, with
    returns = advantages + values (the value-loss targets), both 0 where mask is False. Computed
    without gradients: they are targets, not functions of the parameters being trained.
    """
    mask = mask.bool()
    rewards, values = rewards.float(), values.float()
    advantages = torch.zeros_like(values)
    next_value = torch.zeros_like(values[:, 0])  # (B,) V and A at the next response token
    next_advantage = torch.zeros_like(values[:, 0])
    for t in reversed(range(values.shape[1])):
        m = mask[:, t]
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        advantage = delta + gamma * lam * next_advantage
        advantages[:, t] = torch.where(m, advantage, 0.0)
        next_value = torch.where(m, values[:, t], next_value)
        next_advantage = torch.where(m, advantage, next_advantage)
    return advantages, torch.where(mask, advantages + values, 0.0)
