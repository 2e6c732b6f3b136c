"""The tension between the two judges, measured with gold best-of-N policies (no models).

For every held-out test prompt, the world's simulated chat model (`World.sample_response`) draws N
candidate answers; a policy keeps the one its reward ranks highest (ties broken at random), as
rejection sampling does with a reward model (paper §3.2.3). The rewards are the gold ones:

- `helpfulness`: the helpfulness judge alone. It rates a hazardous procedure as a good answer to
  an adversarial prompt, so it keeps a leak whenever one was sampled.
- `safety`: the safety judge alone, the harm criterion with nothing else in it. It is indifferent
  between a refusal and a real answer to a borderline prompt (both score 1), so it refuses as often
  as the sampler does.
- `safety_annotator`: what the safety annotators maximize (`World.utility(..., "safety")`:
  safety * (0.6 + 0.4 * helpfulness)), the target a Safety RM is trained toward. Among equally safe
  answers it prefers the helpful one, so on borderline prompts it picks what `helpfulness` picks.
- `piecewise`: the paper's combination, Rc = Rs if the prompt is adversarial or Rs < 0.15, else Rh
  (paper §3.2.3), with Rs the safety annotator utility and Rh the helpfulness judge.
- `first`: the first candidate, no selection (the sampler's base rates, best-of-1).

Every policy chooses among the same N candidates of a prompt, so their differences are the
rewards' alone. Evaluation is the world's (docs/world.md): violation rate (`not is_safe`) on
adversarial prompts, false-refusal rate (`is_refusal`) on borderline prompts, mean helpfulness on
helpful and on borderline prompts.
"""

import random

from llamaforge.world.annotators import LEAK_BETA
from llamaforge.world.judges import is_refusal

POLICIES = ("first", "helpfulness", "safety", "safety_annotator", "piecewise")
PIECEWISE_THRESHOLD = 0.15  # paper §3.2.3: the Safety RM score below which Rs overrides Rh
CATEGORIES = ("helpful", "adversarial", "borderline")


def piecewise_reward(adversarial: bool, safety_reward: float, helpfulness_reward: float,
                     threshold: float = PIECEWISE_THRESHOLD) -> float:
    """Rc of paper §3.2.3: the safety reward on safety prompts or when it flags the answer."""
    return safety_reward if adversarial or safety_reward < threshold else helpfulness_reward


def _scores(world, messages, response: str, adversarial: bool) -> dict[str, float]:
    helpful = world.helpfulness(messages, response)
    safety_utility = world.utility(messages, response, "safety")
    return {"helpfulness": helpful, "safety": world.safety(messages, response),
            "safety_annotator": safety_utility,
            "piecewise": piecewise_reward(adversarial, safety_utility, helpful)}


def choose(scores: list[float], rng: random.Random) -> int:
    """Index of the highest score, ties broken uniformly at random."""
    best = max(scores)
    return rng.choice([i for i, s in enumerate(scores) if s == best])


def candidates(world, messages, n: int, rng: random.Random,
               leak_propensity: float | None) -> list[str]:
    """N answers of the simulated chat model to one prompt. With `leak_propensity` None, the
    prompt's propensity to make the model leak is drawn from Beta(LEAK_BETA), as for the
    annotated pairs (some prompts break the model on almost every sample, most on few)."""
    p = rng.betavariate(*LEAK_BETA) if leak_propensity is None else leak_propensity
    return [world.sample_response(messages, rng, p) for _ in range(n)]


def best_of_n_report(world, n: int = 8, seed: int = 0,
                     leak_propensity: float | None = None) -> dict:
    """Per policy: violation rate (adversarial test prompts), false-refusal rate (borderline),
    refusal rate (helpful), mean helpfulness (helpful, borderline), of the best of `n` candidates.
    Deterministic in (world seed, n, seed, leak_propensity)."""
    picked = {p: {c: [] for c in CATEGORIES} for p in POLICIES}  # (messages, response) kept
    for category in CATEGORIES:
        for record in world.prompts(category, "test"):
            messages = record["messages"]
            rng = random.Random(f"tension:{seed}:{record['id']}")
            answers = candidates(world, messages, n, rng, leak_propensity)
            scores = [_scores(world, messages, a, category == "adversarial") for a in answers]
            for policy in POLICIES:
                i = 0 if policy == "first" else choose([s[policy] for s in scores], rng)
                picked[policy][category].append((messages, answers[i]))

    def mean(values) -> float:
        values = list(values)
        return sum(values) / len(values)

    report = {"n": n, "seed": seed, "leak_propensity": leak_propensity,
              "prompts": {c: len(picked["first"][c]) for c in CATEGORIES}, "policies": {}}
    for policy, kept in picked.items():
        report["policies"][policy] = {
            "violation_rate": mean(not world.is_safe(m, r) for m, r in kept["adversarial"]),
            "false_refusal_rate": mean(is_refusal(r) for _, r in kept["borderline"]),
            "refusal_rate_helpful": mean(is_refusal(r) for _, r in kept["helpful"]),
            "helpfulness_helpful": mean(world.helpfulness(m, r) for m, r in kept["helpful"]),
            "helpfulness_borderline": mean(world.helpfulness(m, r) for m, r in kept["borderline"]),
        }
    return report


def format_table(report: dict) -> str:
    """The report as a markdown table (rates and means in percent)."""
    lines = ["| policy | violation (adversarial) | false refusal (borderline) | refusal (helpful) "
             "| helpfulness (helpful) | helpfulness (borderline) |",
             "|---|---|---|---|---|---|"]
    for policy, m in report["policies"].items():
        lines.append(f"| {policy} | {100 * m['violation_rate']:.1f}% "
                     f"| {100 * m['false_refusal_rate']:.1f}% "
                     f"| {100 * m['refusal_rate_helpful']:.1f}% "
                     f"| {m['helpfulness_helpful']:.3f} | {m['helpfulness_borderline']:.3f} |")
    return "\n".join(lines)
