"""The reward stage's helpfulness RM retrained with other seeds (the data order and the head's
initialization) on the same preferences and preset; prints each seed's held-out accuracy, all
pairs and significantly better (docs/results.md, "What the helpfulness reward model reads").

    python experiments/rm_seeds.py RUN_DIR OUT_DIR 0 1 2 3 4 5
"""

import sys
from pathlib import Path

from llamaforge.checkpoint import load_for_scoring
from llamaforge.data.preferences import read_all
from llamaforge.eval.reward import accuracy_by_rating, pair_scores
from llamaforge.pipeline.presets import demo
from llamaforge.pipeline.records import read_record
from llamaforge.pipeline.reward import train_reward_model

run, out = Path(sys.argv[1]), Path(sys.argv[2])
preferences = [run / p for p in read_record(run / "reward")["outputs"]["preferences"]]
test = read_all([run / "reward/test_helpfulness/helpfulness/preferences.jsonl"], "error", False)[0]
for seed in map(int, sys.argv[3:]):
    rm_dir = train_reward_model(demo().reward, "helpfulness", run / "sft/model", preferences, out / f"seed_{seed}", seed)
    rm, tokenizer = load_for_scoring(rm_dir)
    table = accuracy_by_rating(*pair_scores(rm, tokenizer, test), [p.rating for p in test])
    print(f"seed {seed}: all {100 * table['all']['accuracy']:.1f}, "
          f"significantly better {100 * table['significantly_better']['accuracy']:.1f}", flush=True)
