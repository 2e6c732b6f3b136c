"""How well a reward model selects among K samples, measured by a judge it was not trained on
(the paper's Fig. 7 question, asked of gold): the judge's score of one random sample, of the
sample the reward model ranks first, and of the judge's own best, per prompt.

If the reward model tracked the judge perfectly, its pick would score as the judge's best; if it
were noise, as a random sample. `gap_closed` = (rm pick - random) / (best - random) says where
between the two it sits.
"""

from __future__ import annotations

import torch


def best_of_k_curve(rewards: torch.Tensor) -> dict[str, dict[str, float]]:
    """Paper Fig. 7: the mean over prompts of the max and of the median reward among the first k
    samples, for k = 1, 2, 4, ..., K (and K). rewards: (P, K)."""
    K = rewards.shape[1]
    ks = sorted({2**i for i in range(K.bit_length()) if 2**i <= K} | {K})
    curve = {}
    for k in ks:
        first = rewards[:, :k]
        curve[str(k)] = {
            "max": float(first.max(dim=1).values.mean()),
            # the median of an even count is the mean of its two middle values
            "median": float(first.quantile(0.5, dim=1).mean()),
        }
    return curve


def within_prompt_agreement(judge_scores: torch.Tensor, rm_scores: torch.Tensor) -> float | None:
    """Of the pairs of samples of one prompt that the judge scores differently, the share the reward
    model orders the same way (an RM tie counts one half; pairs with an empty, -inf answer are left
    out): what selection among a prompt's samples needs, where a correlation over all samples also
    rewards knowing which prompts are easy. 0.5 is a coin."""
    dj = judge_scores.unsqueeze(2) - judge_scores.unsqueeze(1)  # (P, K, K): judge i minus judge j
    dr = rm_scores.unsqueeze(2) - rm_scores.unsqueeze(1)
    upper = torch.ones_like(dj, dtype=torch.bool).triu(diagonal=1)
    counted = upper & (dj != 0) & torch.isfinite(dr)
    if not counted.any():
        return None
    agree = torch.where(dr == 0, 0.5, (torch.sign(dr) == torch.sign(dj)).float())
    return float(agree[counted].mean())


def selection_metrics(judge_scores: torch.Tensor, rm_scores: torch.Tensor, correct_at: float) -> dict:
    """judge_scores, rm_scores: (P, K) for P prompts with K samples each (raw reward-model scores;
    the Fig. 7 curve shows their sigmoid). A sample is correct when its judge score is at least
    `correct_at`."""
    P = judge_scores.shape[0]
    random = judge_scores.mean(dim=1)  # (P,) the expected score of one random sample
    rm_pick = judge_scores[torch.arange(P), rm_scores.argmax(dim=1)]  # (P,)
    best = judge_scores.max(dim=1).values  # (P,)
    gap = float((best - random).mean())
    finite = torch.isfinite(rm_scores.flatten())  # an empty answer scores -inf (eval.reward)
    pairs = torch.stack([judge_scores.flatten()[finite], rm_scores.flatten()[finite]])
    correlation = torch.corrcoef(pairs)[0, 1]
    return {
        "prompts": P,
        "random": float(random.mean()),
        "rm_pick": float(rm_pick.mean()),
        "best": float(best.mean()),
        "gap_closed": float((rm_pick - random).mean()) / gap if gap > 0 else None,
        "share_with_a_correct_sample": float((best >= correct_at).float().mean()),
        "correlation": float(correlation) if torch.isfinite(correlation) else None,
        "within_prompt_agreement": within_prompt_agreement(judge_scores, rm_scores),
        "fig7_judge": best_of_k_curve(judge_scores),
        "fig7_rm": best_of_k_curve(torch.sigmoid(rm_scores)),  # in (0, 1), as the paper plots it
    }
