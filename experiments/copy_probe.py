"""Does a pretrained checkpoint copy from its context? Greedy completions of the corpus's own
worked-example formats on fresh instances (world/skills.py):

- sort: "The words cloud, mirror, candle in alphabetical order are:" must continue with the same
  words in order (copying words back);
- compare: "Of 65 and 50," must continue with "65 is larger than 50" (copying two numbers).

A model that has not learned to copy writes frequent words and numbers instead. Prints the exact
share of each per checkpoint.

    python experiments/copy_probe.py CHECKPOINT ...
"""

import random
import sys
from pathlib import Path

from llamaforge.checkpoint import load_model_and_tokenizer
from llamaforge.generate import generate
from llamaforge.world.skills import WORDS

INSTANCES = 60
rng = random.Random(7)
word_lists = [rng.sample(WORDS, rng.randint(2, 4)) for _ in range(INSTANCES)]
number_pairs = [rng.sample(range(1, 100), 2) for _ in range(INSTANCES)]


def completions(model, tokenizer, texts: list[str], max_new_tokens: int) -> list[str]:
    prompts = [tokenizer.encode(t, bos=True) for t in texts]
    new, _ = generate(model, prompts, max_new_tokens, temperature=0.0, eos_id=tokenizer.eos_id)
    return [tokenizer.decode(ids).strip() for ids in new]


for checkpoint in sys.argv[1:]:
    model, tokenizer = load_model_and_tokenizer(Path(checkpoint))
    model.eval()
    sorted_back = completions(model, tokenizer, [f"The words {', '.join(w)} in alphabetical order are:" for w in word_lists], 16)
    compared = completions(model, tokenizer, [f"Of {a} and {b}," for a, b in number_pairs], 8)
    sort_ok = sum(out.startswith(", ".join(sorted(w))) for out, w in zip(sorted_back, word_lists)) / INSTANCES
    compare_ok = sum(out.startswith(f"{max(a, b)} is larger than {min(a, b)}") for out, (a, b) in zip(compared, number_pairs)) / INSTANCES
    print(f"{checkpoint}: sort {sort_ok:.0%}, compare {compare_ok:.0%}", flush=True)
