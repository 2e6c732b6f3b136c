"""SFT with the demo preset on a fixed pretrained model, from the world's demonstrations at a chosen
instructed share, gold-evaluated greedily on the held-out prompts (docs/results.md: where the SFT
regression came from).

    python experiments/sft_mix.py PRETRAINED_MODEL WORLD_DIR OUT INSTRUCTED_SHARE
"""

import dataclasses
import json
import sys
from pathlib import Path

from llamaforge.data.jsonl import write_jsonl
from llamaforge.pipeline.evaluation import EvalPlan, evaluate_checkpoint, gold_judges, held_out_prompts
from llamaforge.train import sft
from llamaforge.world import World
from llamaforge.world.demos import DemoMix

pretrained, world_dir, out, instructed = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), float(sys.argv[4])
world, mix = World(0), DemoMix(instructed=instructed)
train = write_jsonl(out / "sft_train.jsonl", world.sft_dialogs("train", mix))
val = write_jsonl(out / "sft_test.jsonl", world.sft_dialogs("test", mix))
sft.main(dataclasses.replace(sft.demo(), out=out / "sft", init=pretrained, data=[train], val_data=[val], seed=0))
_, metrics = evaluate_checkpoint(out / "sft" / "model", held_out_prompts(world_dir, None), gold_judges(world),
                                 EvalPlan(prompts=None, samples=0), 0, out / "eval")
print(json.dumps({k: v for k, v in metrics.items() if not isinstance(v, dict)}, indent=1))
print({kind: round(v["correct"], 2) for kind, v in metrics["helpful_by_kind"].items()})
