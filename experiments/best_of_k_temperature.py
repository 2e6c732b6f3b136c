"""Best of K by gold at several sampling temperatures: the gold helpfulness of a random sample, of
the helpfulness RM's pick and of gold's pick (the reward stage's `best_of_k_by_gold`, which the
pipeline runs at temperature 1 only; docs/results.md).

    python experiments/best_of_k_temperature.py POLICY RM_HELPFULNESS WORLD_DIR 1.0,0.7,0.5
"""

import json
import sys
from pathlib import Path

from llamaforge.pipeline.evaluation import EvalPlan, best_of_k_by_gold, gold_judges, read_jsonl
from llamaforge.world import World

policy, rm_dir, world_dir = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
plan = EvalPlan(prompts=None, samples=0)
records = read_jsonl(world_dir / "prompts_helpful_test.jsonl")[: plan.best_of_k_prompts]
for temperature in (float(t) for t in sys.argv[4].split(",")):
    metrics = best_of_k_by_gold(policy, rm_dir, records, gold_judges(World(0)), plan, 0, temperature)
    print(temperature, json.dumps({k: v for k, v in metrics.items() if not k.startswith("fig7") and k != "by_kind"}))
