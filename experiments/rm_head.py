"""The helpfulness reward model's head: its initialization and its learning rate (docs/results.md,
"What the helpfulness reward model reads"). Each spec INIT:HEAD_SCALE:TRUNK_SCALE trains a
helpfulness RM with the pipeline's demo_helpfulness preset on weekly batches 0 and 1 of a run's
reward stage, its head initialized as the model does ("normal") or at zero ("zero"), the head's
and the trunk's learning rates scaled by the given factors (train/optim.py's lr_scales); it then
prints the accuracy (all pairs, significantly better) on batch 2's helpfulness pairs (validation)
and on the held-out test pairs.

    python experiments/rm_head.py RUN_DIR OUT_DIR normal:1:1 zero:1:1 zero:100:1 zero:100:0 ...
"""

import dataclasses
import json
import sys
from pathlib import Path

import torch

import llamaforge.model
import llamaforge.train.loop
from llamaforge.checkpoint import load_for_scoring
from llamaforge.data.preferences import read_all
from llamaforge.eval.reward import accuracy_by_rating, pair_scores
from llamaforge.train import reward

run, out = Path(sys.argv[1]), Path(sys.argv[2])
evaluation = {
    "validation": read_all([run / "reward/batch_02/helpfulness/preferences.jsonl"], "error", False)[0],
    "test": read_all([run / "reward/test_helpfulness/helpfulness/preferences.jsonl"], "error", False)[0],
}
model_init, loop_setup = llamaforge.model.RewardModel.__init__, llamaforge.train.loop.setup

for spec in sys.argv[3:]:
    init, head_scale, trunk_scale = spec.split(":")

    def reward_model_init(self, *args, **kwargs):
        model_init(self, *args, **kwargs)
        if init == "zero":
            torch.nn.init.zeros_(self.head.weight)

    def setup(*args, **kwargs):
        return loop_setup(*args, **kwargs, lr_scales={"head.": float(head_scale), "trunk.": float(trunk_scale)})

    llamaforge.model.RewardModel.__init__, llamaforge.train.loop.setup = reward_model_init, setup
    data = [run / f"reward/batch_{b:02d}/{kind}/preferences.jsonl"
            for b in (0, 1) for kind in ("helpfulness", "safety")]
    args = dataclasses.replace(reward.demo_helpfulness(), kind="helpfulness", init=run / "sft/model", data=data,
                               out=out / spec.replace(":", "_"), seed=0)
    reward.main(args)
    rm, tokenizer = load_for_scoring(args.out / "model")
    result = {"spec": spec}
    for name, pairs in evaluation.items():
        table = accuracy_by_rating(*pair_scores(rm, tokenizer, pairs), [p.rating for p in pairs])
        result[name] = [round(100 * table[r]["accuracy"], 1) for r in ("all", "significantly_better")]
    print(json.dumps(result), flush=True)
