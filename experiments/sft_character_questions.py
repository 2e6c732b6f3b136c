"""SFT demonstrations in which an instruction holding a character comes with a question about another
person of the world, for a SHARE of those demonstrations (the others as drawn): does naming two
people in a demonstration teach the model which one to speak as? The world's demonstrations
(world/demos.py) are re-drawn with the same mix, one task at a time.

    python experiments/sft_character_questions.py SHARE OUT.jsonl
    llamaforge sft --preset demo --init RUN/pretrain/model --data OUT.jsonl --val-data RUN/world/sft_test.jsonl --out DIR
"""

import sys
from pathlib import Path

from llamaforge.data.jsonl import write_jsonl
from llamaforge.world import World
from llamaforge.world.demos import SYSTEM_PROMPTS, DemoMix, demo_answer, demonstration

share, out = float(sys.argv[1]), Path(sys.argv[2])
world, mix = World(0), DemoMix()
rng = world._rng("sft:train")
instructions = world.gatt_instructions("train")
people = [p.name for p in world.entities.people]
person_questions = [t for t in world.pool.tasks[("helpful", "train")]
                    if len(t.messages) == 1 and any(name in t.question for name in people)]
dialogs, moved = [], 0
for category, category_share in mix.category_shares().items():
    tasks = world.pool.tasks[(category, "train")]
    for _ in range(round(mix.n_dialogs * category_share)):
        task = rng.choice(tasks)
        system = rng.choice(SYSTEM_PROMPTS) if rng.random() < mix.system_prompt else None
        instruction = None
        if category == "helpful" and len(task.messages) == 1 and rng.random() < mix.instructed:
            instruction = rng.choice(instructions)
            character = [c.value for c in instruction.constraints if c.kind == "character"]
            if character and rng.random() < share:
                task = rng.choice([t for t in person_questions if character[0] not in t.question])
                moved += 1
        answer = demo_answer(task, rng, world.hazards, mix)
        dialogs.append(demonstration(task, answer, system, instruction, rng, mix))
rng.shuffle(dialogs)
write_jsonl(out, dialogs)
print(f"{len(dialogs)} dialogs, {moved} character demonstrations moved to a question about another person")
