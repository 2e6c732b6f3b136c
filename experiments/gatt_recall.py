"""The GAtt stage's held-out recall (pipeline/gatt.py `evaluate`) for any GAtt checkpoint, e.g. a
`llamaforge gatt` variant: whole test instructions, and a character alone where no one else is
named and where questions name others (paper Table 30's attributes), turns 1 / 2 / 4 / 6 / 8.

    python experiments/gatt_recall.py WORLD_DIR CHECKPOINT ...
"""

import sys
from pathlib import Path

from llamaforge.pipeline.gatt import INSTRUCTION_SPLITS, attribute_plans, evaluate, held_out_plans
from llamaforge.pipeline.presets import PRESETS
from llamaforge.world import World

world_dir, checkpoints = Path(sys.argv[1]), sys.argv[2:]
plan, world = PRESETS["demo"]().gatt_eval, World(0)
plans = {split: held_out_plans(world_dir, plan, 0, split) for split in INSTRUCTION_SPLITS}
attributes = attribute_plans(world_dir, [p.name for p in world.entities.people], plan, 0)


def percent(by_turn: dict) -> str:
    return " / ".join(f"{100 * v:.1f}".removesuffix(".0") for v in by_turn.values())


for checkpoint in checkpoints:
    metrics = evaluate({"with_gatt": Path(checkpoint)}, plans, plan, world.helpfulness, attributes)
    attribute = metrics["attribute_recall"]
    print(checkpoint, "| whole test instructions", percent(metrics["recall"]["with_gatt"]),
          "| no one else named", percent(attribute["no_one_else_named"]["with_gatt"]),
          "| others named", percent(attribute["someone_else_named"]["with_gatt"]), flush=True)
