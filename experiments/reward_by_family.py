"""Held-out accuracy of a helpfulness RM by task family (facts vs skills) and rating, beside the gold
judge's (docs/results.md: does the RM use what its trunk knows?).

    python experiments/reward_by_family.py RM_HELPFULNESS TEST_PREFERENCES
"""

import collections
import sys
from pathlib import Path

from llamaforge.checkpoint import TOKENIZER_FILE, load_reward_model
from llamaforge.data.preferences import read_all
from llamaforge.eval.reward import pair_scores
from llamaforge.tokenizer import Tokenizer
from llamaforge.world import World

SKILLS = {"add", "subtract", "multiply", "compare", "reverse", "sort", "count_words", "count_letters"}
rm_dir, test = Path(sys.argv[1]), Path(sys.argv[2])
world = World(0)
pairs = read_all([test], "error", False)[0]
chosen, rejected = pair_scores(load_reward_model(rm_dir), Tokenizer(rm_dir / TOKENIZER_FILE), pairs)
counts = collections.defaultdict(lambda: [0, 0.0, 0.0])  # pairs, RM right, gold right (ties half)
for pair, c, r in zip(pairs, chosen.tolist(), rejected.tolist()):
    prompt = list(pair.prompt)
    family = "skill" if world.task(prompt).kind in SKILLS else "fact"
    gap = world.utility(prompt, pair.chosen, "helpfulness") - world.utility(prompt, pair.rejected, "helpfulness")
    for key in (family, f"{family} / {pair.rating}", "all", f"all / {pair.rating}"):
        row = counts[key]
        row[0] += 1
        row[1] += (c > r) + 0.5 * (c == r)
        row[2] += (gap > 0) + 0.5 * (gap == 0)
for key, (n, rm_right, gold_right) in sorted(counts.items()):
    print(f"{key:34s} {n:5d} pairs   RM {100 * rm_right / n:5.1f}%   gold {100 * gold_right / n:5.1f}%")
