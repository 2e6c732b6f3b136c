"""The helpfulness RM's likelihood weight λ and learning rate (model.RewardModel, train/reward.py):
for each LR:λ, a helpfulness RM trained on a pipeline run's reward-stage preferences (the demo
preset otherwise), then its held-out accuracy (Table 8: all pairs and significantly better) and
its best-of-8 pick by gold (the reward stage's `best_of_k_by_gold`; docs/results.md). With
RESPONSES > 2, the stage's helpful prompts are annotated again with that many SFT samples each
(`llamaforge annotate --responses`) and those pairs replace the stage's helpfulness pairs.

    python experiments/likelihood_weight.py RUN_DIR OUT_DIR RESPONSES 3e-4:0 3e-4:1 3e-5:1 ...
"""

import dataclasses
import json
import sys
from pathlib import Path

from llamaforge import annotate
from llamaforge.checkpoint import load_reward_model
from llamaforge.data.preferences import read_all
from llamaforge.eval.reward import accuracy_by_rating, pair_scores
from llamaforge.pipeline.evaluation import best_of_k_by_gold, gold_judges, read_jsonl
from llamaforge.pipeline.presets import demo
from llamaforge.pipeline.records import read_record
from llamaforge.pipeline.reward import train_reward_model
from llamaforge.tokenizer import Tokenizer
from llamaforge.train import reward
from llamaforge.world import World

run, out, responses = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
preferences = [run / p for p in read_record(run / "reward")["outputs"]["preferences"]]
if responses > 2:
    helpful = [p for p in preferences if p.parent.name == "helpfulness"]
    for k, path in enumerate(helpful):
        annotate.main(annotate.AnnotateArgs(policy=run / "sft/model", prompts=[path.parent / "prompts.jsonl"],
                                            out=out / f"batch_{k}", responses=responses, seed=k))
    preferences = [p for p in preferences if p not in helpful] + [out / f"batch_{k}" / "preferences.jsonl" for k in range(len(helpful))]
test_pairs = read_all([run / "reward/test_helpfulness/helpfulness/preferences.jsonl"], "error", False)[0]
sft_model = run / read_record(run / "sft")["outputs"]["model"]
plan = demo().evaluation
records = read_jsonl(run / "world" / "prompts_helpful_test.jsonl")[: plan.best_of_k_prompts]
for spec in sys.argv[4:]:
    lr, weight = (float(x) for x in spec.split(":"))
    preset = dataclasses.replace(reward.demo(), lr=lr, likelihood_weight=weight)
    rm_dir = train_reward_model({"helpfulness": preset}, "helpfulness", sft_model, preferences, out / f"rm_{spec}", seed=0)
    rm = load_reward_model(rm_dir)
    table = accuracy_by_rating(*pair_scores(rm, Tokenizer(rm_dir / "tokenizer.model"), test_pairs), [p.rating for p in test_pairs])
    selection = best_of_k_by_gold(sft_model, rm_dir, records, gold_judges(World(0)), plan, 0)
    print(json.dumps({"responses": responses, "lr": lr, "lambda": weight, "accuracy": table["all"]["accuracy"],
                      "significantly_better": table["significantly_better"]["accuracy"],
                      **{k: v for k, v in selection.items() if isinstance(v, float)}}), flush=True)
