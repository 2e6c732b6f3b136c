"""Character recall by turn (paper §3.3, Table 30's attributes) in held-out dialogs whose questions
name no person of the world, and in dialogs whose questions each name one: the instruction is
"Speak as X ..." (full or short form) with X any of the world's test-split people, and each model
answers eight questions greedily, checked by the world's `constraint_followed`.

    python experiments/character_probe.py WORLD_DIR CHECKPOINT ...
"""

import random
import sys
from pathlib import Path

from llamaforge.checkpoint import load_for_sampling
from llamaforge.data.prompts import read_prompts
from llamaforge.eval import gatt as gatt_eval
from llamaforge.rlhf.gatt import DialogPlan, user_messages
from llamaforge.world import World, constraint_followed
from llamaforge.world.gatt import Constraint, split_share

DIALOGS, TURNS, MAX_NEW_TOKENS = 40, (1, 2, 4, 6, 8), 40

world_dir, checkpoints = Path(sys.argv[1]), sys.argv[2:]
people = [p.name for p in World(0).entities.people]
test_people = split_share(people, "test")  # the characters of the world's test instructions
users = user_messages(read_prompts([world_dir / "prompts_helpful_test.jsonl"]))
named = [u for u in users if any(name in u for name in people)]
pools = {"no one else named": [u for u in users if u not in named], "another person named": named}


def plans(pool: list[str]) -> list[DialogPlan]:
    out = []
    for i in range(DIALOGS):
        rng = random.Random(f"character-probe:{i}")
        character = Constraint("character", rng.choice(test_people))
        questions = [u for u in pool if character.value not in u]
        out.append(DialogPlan(character.short if rng.random() < 0.5 else character.full,
                              tuple(rng.sample(questions, max(TURNS)))))
    return out


for checkpoint in checkpoints:
    model, tokenizer = load_for_sampling(Path(checkpoint))
    for condition, pool in pools.items():
        dialogs, empty_at = gatt_eval.system_dialogs(model, tokenizer, plans(pool), MAX_NEW_TOKENS)
        recall = gatt_eval.recall_by_turn(dialogs, empty_at, constraint_followed, TURNS)["recall"]
        print(checkpoint, condition, " / ".join(f"{100 * recall[str(t)]:.0f}" for t in TURNS), flush=True)
