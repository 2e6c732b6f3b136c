"""Pairwise win/tie/loss of model A against model B on the same prompts (paper §3.4.2).

A judge sees a prompt and two responses in a given order and says which is better ("first",
"second" or "tie"). Each pair is judged in both orders, as the paper's human and model judges saw
responses in random order: A wins only if it is preferred in both orders, loses only if B is, and
anything else (a tie, or a verdict that flips with the order) is a tie. The win rate counts a tie
as half a win: (wins + ties / 2) / pairs, so that 50% means "as good as B".
"""

from __future__ import annotations

from collections.abc import Callable

Verdict = str  # "first" | "second" | "tie"
PairJudge = Callable[[list[dict], str, str], Verdict]


def score_judge(score: Callable[[list[dict], str], float]) -> PairJudge:
    """A pairwise judge from a pointwise score: the higher-scored response wins; equal scores tie."""

    def judge(prompt: list[dict], first: str, second: str) -> Verdict:
        a, b = score(prompt, first), score(prompt, second)
        return "first" if a > b else "second" if b > a else "tie"

    return judge


def order_swapped(judge: PairJudge, prompt: list[dict], a: str, b: str) -> int:
    """+1 if A wins in both orders, -1 if B does, 0 otherwise."""
    forward, backward = judge(prompt, a, b), judge(prompt, b, a)
    if forward == "first" and backward == "second":
        return 1
    if forward == "second" and backward == "first":
        return -1
    return 0


def win_tie_loss(judge: PairJudge, prompts: list[list[dict]], answers_a: list[str], answers_b: list[str]) -> dict:
    """{"win", "tie", "loss"} as fractions of the pairs, and "win_rate" = win + tie / 2."""
    if not (len(prompts) == len(answers_a) == len(answers_b)) or not prompts:
        raise ValueError("win_tie_loss needs one answer of each model per prompt, and at least one prompt")
    outcomes = [order_swapped(judge, p, a, b) for p, a, b in zip(prompts, answers_a, answers_b)]
    n = len(outcomes)
    win, loss = outcomes.count(1) / n, outcomes.count(-1) / n
    tie = 1.0 - win - loss
    return {"win": win, "tie": tie, "loss": loss, "win_rate": win + tie / 2, "pairs": n}
