"""Pure functions that steer a PPO run (llamaforge/rlhf/ppo.py): which prompts an iteration samples,
the KL alert, early stopping on held-out reward, the rule that decides which policy is kept, and the
value model's explained variance. Each depends on its arguments alone, so each is tested alone."""

from __future__ import annotations

import math
import random

import torch

from llamaforge.train.distributed import all_reduce_sum


def iteration_rows(n_prompts: int, batch_size: int, iteration: int, seed: int, responses_per_prompt: int = 1) -> list[int]:
    """The prompt index of each of an iteration's batch_size responses: passes over the prompts,
    each in its own seeded order, read batch_size / responses_per_prompt prompts at a time, each
    prompt's responses on consecutive rows (a pure function of the iteration, so a resumed run is exact)."""
    prompts_per_batch = batch_size // responses_per_prompt
    rows, orders = [], {}
    for position in range(iteration * prompts_per_batch, (iteration + 1) * prompts_per_batch):
        epoch, index = divmod(position, n_prompts)
        if epoch not in orders:
            orders[epoch] = random.Random(seed * 1_000_003 + epoch).sample(range(n_prompts), n_prompts)
        rows += [orders[epoch][index]] * responses_per_prompt
    return rows


def kl_alert(mean_kl: float, standard_error: float, bound: float) -> str | None:
    """The alert line for a mean KL per response that is negative beyond its sampling noise (more
    than 2 standard errors below 0) or above `bound`, else None."""
    if mean_kl < -2 * standard_error:
        return (f"mean KL {mean_kl:.4f} < 0 (standard error {standard_error:.4f}): with answers sampled from the "
                "policy (temperature 1, top-p 1) its expectation is >= 0, so the sampler and the training forward "
                "disagree (precision, masks) or the answers are not sampled from the policy")
    if mean_kl > bound:
        return f"mean KL {mean_kl:.2f} nats per response > {bound:g} (--kl-alert): the policy is far from pi_0"
    return None


def early_stop(rewards: list[float], patience: int) -> tuple[int, bool]:
    """(index of the best held-out reward so far (the first one on a tie), whether to stop: the
    last `patience` evaluations brought no improvement). patience 0 never stops."""
    best = max(range(len(rewards)), key=lambda i: (rewards[i], -i))
    return best, patience > 0 and len(rewards) - 1 - best >= patience


def best_evaluation(evaluations: list[dict], kl_budget: float, min_gain: float = 0.0) -> int:
    """The index of the best held-out reward among the start (index 0, always eligible) and the
    later evaluations within the KL budget (all when it is 0) whose reward beats the start's by more
    than `min_gain` standard errors of the difference; the first on a tie. The standard error treats
    the two means as independent ("reward_se" of each, 0 where absent): held-out answers are sampled
    with the same seeds at every evaluation, so the true one is smaller and the rule conservative."""
    start = evaluations[0]

    def eligible(e: dict) -> bool:
        noise = math.hypot(e.get("reward_se", 0.0), start.get("reward_se", 0.0))
        return (kl_budget <= 0 or e["kl"] <= kl_budget) and e["reward"] - start["reward"] > min_gain * noise

    candidates = [0] + [i for i, e in enumerate(evaluations) if i and eligible(e)]
    return max(candidates, key=lambda i: (evaluations[i]["reward"], -i))


def stopping_reason(evaluations: list[dict], patience: int, kl_budget: float) -> str | None:
    """Why the run stops after its latest held-out evaluation ({"reward", "kl"} each), or None."""
    if kl_budget > 0 and evaluations[-1]["kl"] > kl_budget:
        return f"held-out KL {evaluations[-1]['kl']:.2f} nats per response > the --kl-budget {kl_budget:g}"
    if early_stop([e["reward"] for e in evaluations], patience)[1]:
        return f"no held-out reward improvement in {patience} evaluations"
    return None


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, all_reduce=all_reduce_sum) -> float:
    """1 - Var(returns - values) / Var(returns) over the masked tokens of every process: 1 is a
    perfect value model, 0 one that predicts the mean, below 0 worse than that."""
    mask = mask.bool()
    def var(x):
        n = all_reduce(mask.sum().float())
        mean = all_reduce(torch.where(mask, x, 0.0).sum()) / n
        return all_reduce(torch.where(mask, (x - mean) ** 2, 0.0).sum()) / n
    target = var(returns.float())
    return float(1 - var((returns - values).float()) / target) if target > 0 else float("nan")


def standard_error(mean: float, mean_square: float, n: int) -> float:
    """The standard error of a mean of n values from their mean and mean square (the unbiased
    variance of one value, over n); 0 for fewer than two values."""
    if n < 2:
        return 0.0
    return math.sqrt(max(mean_square - mean * mean, 0.0) / (n - 1))
