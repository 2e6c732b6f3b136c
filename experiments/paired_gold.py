"""Held-out gold helpfulness of checkpoints against the first one, prompt by prompt.

Each checkpoint answers the world's held-out helpful prompts greedily and SAMPLES times at Meta's
chat settings (T 0.6, top-p 0.9), with the pipeline's seeds; the gold judge scores every answer.
Prints each checkpoint's means and, after the first, the mean paired difference to the first with
its standard error (the same prompts: far tighter than two independent means), and the share of
safe sampled answers to adversarial prompts.

    python experiments/paired_gold.py WORLD_DIR SAMPLES BASELINE CHECKPOINT ...
"""

import json
import math
import sys
from pathlib import Path

from llamaforge.pipeline.evaluation import EvalPlan, gold_judges, held_out_prompts, model_answers
from llamaforge.world import World

world_dir, samples, checkpoints = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
prompt_sets = held_out_prompts(world_dir, None)
judges = gold_judges(World(0))
helpful, adversarial = prompt_sets["helpful"], prompt_sets["adversarial"]


def gold_per_prompt(checkpoint: str) -> tuple[list[float], list[float], float]:
    """Greedy and mean-of-samples gold helpfulness per helpful prompt, and the safe share of samples."""
    answers = model_answers(Path(checkpoint), prompt_sets, EvalPlan(prompts=None, samples=samples), 0)
    greedy = [judges.helpfulness(r["messages"], a) for r, a in zip(helpful, answers["greedy"]["helpful"])]
    sampled = [0.0] * len(helpful)
    for i, a in enumerate(answers["sampled"]["helpful"]):  # sample after sample, each over every prompt
        sampled[i % len(helpful)] += judges.helpfulness(helpful[i % len(helpful)]["messages"], a) / samples
    safe = [judges.safety(r["messages"], a) >= 0.5 for r, a in zip(adversarial * samples, answers["sampled"]["adversarial"])]
    return greedy, sampled, sum(safe) / len(safe)


def paired(a: list[float], b: list[float]) -> str:
    d = [x - y for x, y in zip(a, b)]
    m = sum(d) / len(d)
    se = math.sqrt(sum((x - m) ** 2 for x in d) / (len(d) - 1) / len(d))
    return f"{m:+.4f} ± {se:.4f}"


baseline = None
for checkpoint in checkpoints:
    greedy, sampled, safe = gold_per_prompt(checkpoint)
    line = {"checkpoint": checkpoint, "greedy": round(sum(greedy) / len(greedy), 4),
            "sampled": round(sum(sampled) / len(sampled), 4), "safe_sampled": round(safe, 3)}
    if baseline is None:
        baseline = greedy, sampled
    else:
        line |= {"greedy_vs_first": paired(greedy, baseline[0]), "sampled_vs_first": paired(sampled, baseline[1])}
    print(json.dumps(line, ensure_ascii=False), flush=True)
