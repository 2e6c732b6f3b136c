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
        "fig7_judge": best_of_k_curve(judge_scores),
        "fig7_rm": best_of_k_curve(torch.sigmoid(rm_scores)),  # in (0, 1), as the paper plots it
    }
