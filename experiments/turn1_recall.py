"""Turn-1 instruction following by constraint kind: what GAtt (paper §3.3) has to carry over later
turns. Each of 120 held-out helpful questions gets one of the world's training instructions, once
as the system message and once appended to the user message; greedy answers are checked by the
world's `constraint_followed` for the whole instruction and for each constraint alone.

    python experiments/turn1_recall.py WORLD_DIR CHECKPOINT ...
"""

import sys
from collections import defaultdict
from pathlib import Path

from llamaforge.checkpoint import load_model_and_tokenizer
from llamaforge.data.prompts import read_prompts
from llamaforge.rlhf import gatt
from llamaforge.world import parse_instruction

DIALOGS, MAX_NEW_TOKENS = 120, 40

world_dir, checkpoints = Path(sys.argv[1]), sys.argv[2:]
instructions = gatt.read_instructions(world_dir / "gatt_instructions.jsonl", "train")
questions = gatt.user_messages(read_prompts([world_dir / "prompts_helpful_test.jsonl"]))
plans = gatt.plan_dialogs(instructions, questions, DIALOGS, 1, 1, seed=0, purpose="t1")  # the draw docs/results.md reports

for checkpoint in checkpoints:
    model, tokenizer = load_model_and_tokenizer(Path(checkpoint))
    for where in ("system", "user"):
        if where == "system":
            starts = [[{"role": "system", "content": p.instruction}] for p in plans]
            users = [[p.users[0]] for p in plans]
        else:
            starts = [[] for _ in plans]
            users = [[gatt.with_instruction(p.users[0], p.instruction)] for p in plans]
        dialogs, _ = gatt.converse(model, tokenizer, starts, users, MAX_NEW_TOKENS, 0.0, 1.0, 0, 64,
                                   model.config.max_seq_len)
        whole, by_kind = [], defaultdict(list)
        for plan, dialog in zip(plans, dialogs):
            answer = dialog[-1]["content"] if dialog and dialog[-1]["role"] == "assistant" else ""
            constraints = parse_instruction(plan.instruction).constraints
            whole.append(all(c.followed(answer) for c in constraints))
            for c in constraints:
                by_kind[c.kind].append(c.followed(answer))
        kinds = ", ".join(f"{kind} {sum(v) / len(v):.0%} of {len(v)}" for kind, v in sorted(by_kind.items()))
        print(f"{checkpoint}, instruction in the {where} message: whole {sum(whole) / len(whole):.0%}; {kinds}", flush=True)
