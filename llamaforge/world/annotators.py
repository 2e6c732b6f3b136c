"""Simulated human annotators (paper §3.2.1): given a prompt and two responses, pick one and rate it
significantly better / better / slightly better / negligibly better.

An annotator maximizes a utility read from the gold judges. The helpfulness annotator's utility is
the helpfulness judge. The safety annotator's is safety first, then helpfulness among equally
safe answers: safety * (0.6 + 0.4 * helpfulness). So it prefers the safe response when exactly one
is safe, the refusal that offers an alternative over a curt one, a real answer to a borderline
prompt over a false refusal, and, when both leak, the lesser leak.

Choices are human-like noisy: a Bradley-Terry choice p(a) = sigmoid(gap / temperature), with a
small lapse rate of coin flips, and the rating reads the utility gap through Gaussian perception
noise. The defaults are calibrated so an
oracle reward model (the gold utility itself) agrees with the annotators ~94% on "significantly
better", ~77% on "better", ~61% on "slightly better" and near chance on "negligibly better", the pattern of the paper's Table 8
(docs/results.md has the measured table).
"""

import math
import random
from dataclasses import dataclass

from llamaforge.world import judges, responses
from llamaforge.world.hazards import Hazard
from llamaforge.world.tasks import Task

RATINGS = ("significantly_better", "better", "slightly_better", "negligibly_better")
SAFETY_META = ("chosen_safe_rejected_unsafe", "both_safe", "both_unsafe")
GUIDELINES = ("helpfulness", "safety")

# Share of each category among the prompts of each guideline's pairs. Safety pairs are mostly
# adversarial prompts (Meta Safety data); helpfulness pairs are mostly helpful prompts.
PROMPT_MIX = {"helpfulness": {"helpful": 0.85, "borderline": 0.10, "adversarial": 0.05},
              "safety": {"adversarial": 0.80, "borderline": 0.20}}

# How often the simulated chat model leaks is a per-prompt propensity ~ Beta(a, b): some prompts
# break most samples, most break none. The two answers of a pair therefore share their prompt's
# propensity, which reproduces the paper's safety metadata (18% / 47% / 35%) far better than
# independent answers would.
LEAK_BETA = (0.45, 0.40)

# (style, weight) of the simulated model's answers to helpful and borderline prompts.
_STYLES = {"helpful": (("gold", 30), ("paraphrase", 15), ("verbose", 15), ("incomplete", 10),
                       ("wrong", 25), ("refusal", 5)),
           "borderline": (("gold", 35), ("paraphrase", 10), ("verbose", 10), ("incomplete", 10),
                          ("wrong", 10), ("refusal", 25))}


@dataclass(frozen=True)
class AnnotatorConfig:
    temperature: float = 0.15
    """Bradley-Terry temperature of the choice: lower means more consistent annotators"""
    rating_noise: float = 0.12
    """standard deviation of the noise on the perceived utility gap before it becomes a rating"""
    thresholds: tuple[float, float, float] = (0.45, 0.2, 0.06)
    """perceived-gap cutoffs for significantly better, better, slightly better"""
    lapse: float = 0.1
    """probability of an inattentive coin-flip choice, so even clear pairs are sometimes wrong"""


def utility(task: Task, response: str, hazards: tuple[Hazard, ...], guideline: str) -> float:
    helpful = judges.helpfulness_score(task, response, hazards)
    if guideline == "helpfulness":
        return helpful
    if guideline == "safety":
        return judges.safety_score(response, hazards) * (0.6 + 0.4 * helpful)
    raise ValueError(f"unknown guideline {guideline!r}; expected one of {GUIDELINES}")


def rating_for(perceived_gap: float, thresholds: tuple[float, float, float]) -> str:
    for rating, cutoff in zip(RATINGS, thresholds):
        if perceived_gap >= cutoff:
            return rating
    return RATINGS[-1]


def annotate(task: Task, prompt: list, response_a: str, response_b: str, guideline: str,
             rng: random.Random, hazards: tuple[Hazard, ...], config: AnnotatorConfig
             ) -> dict | None:
    """A preference record, or None when the safety guideline drops the pair (chosen unsafe and
    rejected safe: the paper excludes those, §3.2.1)."""
    gap = (utility(task, response_a, hazards, guideline)
           - utility(task, response_b, hazards, guideline))
    if rng.random() < config.lapse:
        pick_a = rng.random() < 0.5
    else:
        pick_a = rng.random() < 1.0 / (1.0 + math.exp(-gap / config.temperature))
    chosen, rejected = (response_a, response_b) if pick_a else (response_b, response_a)
    perceived = abs(gap) + rng.gauss(0.0, config.rating_noise)
    record = {"prompt": prompt, "chosen": chosen, "rejected": rejected,
              "rating": rating_for(perceived, config.thresholds),
              "is_safety": guideline == "safety"}
    if guideline == "safety":
        chosen_safe = judges.safety_score(chosen, hazards) >= judges.SAFE_THRESHOLD
        rejected_safe = judges.safety_score(rejected, hazards) >= judges.SAFE_THRESHOLD
        if not chosen_safe and rejected_safe:
            return None
        record["safety_meta"] = ("both_safe" if chosen_safe and rejected_safe
                                 else "chosen_safe_rejected_unsafe" if chosen_safe
                                 else "both_unsafe")
    return record


def simulated_response(task: Task, rng: random.Random, hazards: tuple[Hazard, ...],
                       leak_propensity: float) -> str:
    """One answer of a simulated chat model of mixed quality (a stand-in for 'different model
    variants and temperatures', paper §3.2.1)."""
    if task.category == "adversarial":
        if rng.random() < leak_propensity:
            return responses.leak(hazards[task.hazard], rng, rng.randint(2, 6),
                                  rng.choice(responses.LEAK_STYLES))
        return responses.refusal(task, rng, rng.random() < 0.5, hazards)
    styles = _STYLES[task.category]
    style = rng.choices([s for s, _ in styles], [w for _, w in styles])[0]
    if style == "gold":
        return responses.gold(task)
    if style == "refusal":
        return responses.refusal(task, rng, rng.random() < 0.3, hazards)
    return getattr(responses, style)(task, rng)


def collect(world, n: int, guideline: str, rng: random.Random, config: AnnotatorConfig
            ) -> list[dict]:
    """`n` kept preference records of one guideline on training prompts: two distinct simulated
    answers per prompt, then one annotation (dropped pairs are replaced by new ones). Two identical
    answers are no comparison: `llamaforge annotate` skips them and `reward` refuses them."""
    mix = PROMPT_MIX[guideline]
    categories, weights = list(mix), list(mix.values())
    records = []
    while len(records) < n:
        category = rng.choices(categories, weights)[0]
        task = rng.choice(world.pool.tasks[(category, "train")])
        propensity = rng.betavariate(*LEAK_BETA)
        a = simulated_response(task, rng, world.hazards, propensity)
        b = simulated_response(task, rng, world.hazards, propensity)
        if a == b:
            continue
        prompt = [{"role": role, "content": content} for role, content in task.messages]
        record = annotate(task, prompt, a, b, guideline, rng, world.hazards, config)
        if record is not None:
            records.append(record)
    return records


def agreement_by_rating(world, records: list[dict], guideline: str) -> dict[str, dict]:
    """Per rating: how often an oracle reward model (the annotator's own gold utility) ranks the
    chosen response above the rejected one; ties count one half. The analogue of Table 8."""
    table = {r: {"n": 0, "accuracy": 0.0} for r in RATINGS}
    for rec in records:
        u_chosen = world.utility(rec["prompt"], rec["chosen"], guideline)
        u_rejected = world.utility(rec["prompt"], rec["rejected"], guideline)
        row = table[rec["rating"]]
        row["n"] += 1
        row["accuracy"] += 1.0 if u_chosen > u_rejected else 0.5 if u_chosen == u_rejected else 0.0
    for row in table.values():
        row["accuracy"] = row["accuracy"] / row["n"] if row["n"] else float("nan")
    return table


def safety_meta_shares(records: list[dict]) -> dict[str, float]:
    safety = [r for r in records if r["is_safety"]]
    return {m: sum(r["safety_meta"] == m for r in safety) / max(1, len(safety))
            for m in SAFETY_META}
