"""The helpfulness RM's likelihood weight λ (model.RewardModel): for each λ, a helpfulness RM
trained like the pipeline's reward stage (same preferences, same preset otherwise), then its
held-out accuracy (Table 8: all pairs and significantly better) and its best-of-K pick by gold
(the reward stage's `best_of_k_by_gold`; docs/results.md).

    python experiments/likelihood_weight.py RUN_DIR OUT_DIR 0,1,2,4
"""

import dataclasses
import json
import sys
from pathlib import Path

from llamaforge.checkpoint import load_reward_model
from llamaforge.data.preferences import read_all
from llamaforge.eval.reward import accuracy_by_rating, pair_scores
from llamaforge.pipeline.evaluation import best_of_k_by_gold, gold_judges, read_jsonl
from llamaforge.pipeline.presets import demo
from llamaforge.pipeline.records import read_record
from llamaforge.pipeline.reward import train_reward_model
from llamaforge.tokenizer import Tokenizer
from llamaforge.world import World

run, out = Path(sys.argv[1]), Path(sys.argv[2])
reward_record = read_record(run / "reward")
preferences = [run / p for p in reward_record["outputs"]["preferences"]]
test_pairs = read_all([run / p for p in reward_record["outputs"]["test_helpfulness"]], "error", False)[0]
sft_model = run / read_record(run / "sft")["outputs"]["model"]
preset = demo()
records = read_jsonl(run / "world" / "prompts_helpful_test.jsonl")[: preset.evaluation.best_of_k_prompts]
for weight in (float(w) for w in sys.argv[3].split(",")):
    rm_dir = train_reward_model(dataclasses.replace(preset.reward, likelihood_weight=weight), "helpfulness", sft_model,
                                preferences, out / f"lambda_{weight:g}", seed=0)
    rm = load_reward_model(rm_dir)
    table = accuracy_by_rating(*pair_scores(rm, Tokenizer(rm_dir / "tokenizer.model"), test_pairs), [p.rating for p in test_pairs])
    selection = best_of_k_by_gold(sft_model, rm_dir, records, gold_judges(World(0)), preset.evaluation, 0)
    summary = {"lambda": weight, "accuracy": table["all"]["accuracy"],
               "significantly_better": table.get("significantly_better", {}).get("accuracy"),
               **{k: v for k, v in selection.items() if not k.startswith("fig7") and k != "by_kind"},
               "gap_closed_by_kind": {k: v["gap_closed"] for k, v in selection["by_kind"].items()}}
    print(json.dumps(summary), flush=True)
