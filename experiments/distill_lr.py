"""Context distillation's fine-tuning varied on a pipeline run's distillation data.

Targeted and untargeted distillation of the run's GAtt model from the answers and safety scores
its distill stage sampled (RUN/distill/targeted: only the fine-tuning differs from the stage's),
with `llamaforge distill` options overridden (e.g. lr=1e-4 epochs=3), each result evaluated as the
stage evaluates (held-out sets, greedy and 2 samples) and printed as the stage's table row.

    python experiments/distill_lr.py RUN_DIR OUT_DIR lr=1e-4
"""

import dataclasses
import json
import sys
from pathlib import Path

from llamaforge.pipeline.distill import deflection_rate, headline
from llamaforge.pipeline.evaluation import EvalPlan, evaluate_checkpoint, gold_judges, held_out_prompts
from llamaforge.pipeline.records import read_record
from llamaforge.rlhf import distill
from llamaforge.world import World

run, out = Path(sys.argv[1]), Path(sys.argv[2])
defaults = distill.demo()
overrides = {key: type(getattr(defaults, key))(value) for key, value in (kv.split("=") for kv in sys.argv[3:])}
record = read_record(run / "distill")
common = dataclasses.replace(
    defaults, policy=run / read_record(run / "gatt")["outputs"]["model"], rm_safety=run / record["outputs"]["rm_safety"],
    prompts=[run / "distill" / "prompts.jsonl"], templates=run / "distill" / "templates.json", seed=0,
    answers_from=run / "distill" / "targeted", **overrides,
)
world = World(0)
prompt_sets = held_out_prompts(run / "world", None)
for name, targeted in (("targeted", True), ("untargeted", False)):
    distill.main(dataclasses.replace(common, targeted=targeted, out=out / name))
    report = json.loads((out / name / "distill.json").read_text())
    answers, metrics = evaluate_checkpoint(Path(report["model"]), prompt_sets, gold_judges(world), EvalPlan(prompts=None, samples=2),
                                           0, out / "eval" / name, reward_models={"safety": common.rm_safety})
    metrics["borderline_deflection_rate"] = deflection_rate(answers["greedy"]["borderline"])
    print(name, json.dumps(headline(metrics, report)), flush=True)
