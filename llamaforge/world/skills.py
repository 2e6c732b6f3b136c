"""Simple skills with programmatically checkable answers: arithmetic, comparison, counting,
reversing and sorting words. Instances are drawn from a seeded RNG; each instance (not each
phrasing) is one split group, so a test instance is never seen, in any wording, during training.

The word skills (compare, count_words, reverse, sort) are kept small for the demo's 6M-parameter
model: two-digit numbers to compare, lists of two to six words. The corpus shows fresh training
instances of them with their answers (`worked_example`); its arithmetic examples come from the
training prompts. (On the demo this took counting words from 4% to 56% correct; comparing,
reversing, sorting and arithmetic stayed near 0%: docs/results.md.)

How many instances each skill has is fitted to what the demo's model can learn: a held-out
arithmetic or reversing instance asks for an algorithm, not a fact, and a 6M model after ~2M
tokens gets 0-4% of them right, so where they were 61% of the held-out helpful prompts, every
model version tied on them and selection had nothing to choose from (docs/results.md, "A world
fitted to the demo's compute"). They stay, fewer, so the report still shows what the model cannot
do; comparing and counting, which the corpus's worked examples do move, keep their full count.
"""

import random

from llamaforge.world.tasks import Task, single

WORDS = ("apple", "river", "stone", "cloud", "lamp", "horse", "bread", "tower", "garden", "mirror",
         "candle", "forest", "window", "basket", "feather", "ladder", "button", "pepper", "rocket",
         "violin", "anchor", "blanket", "cactus", "dragon", "engine", "falcon", "glove", "hammer",
         "island", "jacket", "kettle", "lemon", "marble", "needle", "orange", "pillow", "quilt",
         "ribbon", "saddle", "tunnel")

# Instances per skill (the module docstring says why the algorithmic ones are few).
N_PER_SKILL = {"add": 30, "subtract": 30, "multiply": 30, "compare": 120, "count_words": 120,
               "reverse": 40, "sort": 40}
COMPARE = (1, 99)  # compared numbers: at most two digits to copy
COUNT_WORDS, REVERSE, SORT = (2, 6), (2, 4), (2, 4)  # list lengths


def _pairs(rng: random.Random, n: int, lo: int, hi: int, ordered: bool) -> list[tuple[int, int]]:
    seen, out = set(), []
    while len(out) < n:
        a, b = rng.randint(lo, hi), rng.randint(lo, hi)
        if ordered and a <= b or a == b or (a, b) in seen or not ordered and (b, a) in seen:
            continue
        seen.add((a, b))
        out.append((a, b))
    return out


def _word_lists(rng: random.Random, n: int, lo: int, hi: int) -> list[tuple[str, ...]]:
    seen, out = set(), []
    while len(out) < n:
        words = tuple(rng.sample(WORDS, rng.randint(lo, hi)))
        if words not in seen:
            seen.add(words)
            out.append(words)
    return out


def _number(kind: str, group: str, phrasings: tuple[str, ...], answer: str, value: int,
            check: str = "last_number") -> list[Task]:
    return [single("helpful", kind, group, q, answer, str(value), check, ((str(value),),))
            for q in phrasings]


def skill_tasks(rng: random.Random, invented_words: list[str]) -> list[Task]:
    tasks: list[Task] = []
    for a, b in _pairs(rng, N_PER_SKILL["add"], 10, 99, ordered=False):
        tasks += _number("add", f"add:{a}:{b}", (f"What is {a} plus {b}?", f"Compute {a} + {b}."),
                         f"{a} plus {b} is {a + b}.", a + b)
    for a, b in _pairs(rng, N_PER_SKILL["subtract"], 5, 99, ordered=True):
        tasks += _number("subtract", f"sub:{a}:{b}", (f"What is {a} minus {b}?",
                                                      f"Compute {a} - {b}."),
                         f"{a} minus {b} is {a - b}.", a - b)
    table = [(a, b) for a in range(2, 13) for b in range(2, 13)]
    for a, b in rng.sample(table, N_PER_SKILL["multiply"]):
        tasks += _number("multiply", f"mul:{a}:{b}", (f"What is {a} times {b}?", f"Compute {a} x {b}."),
                         f"{a} times {b} is {a * b}.", a * b)
    for a, b in _pairs(rng, N_PER_SKILL["compare"], *COMPARE, ordered=False):
        tasks += _number("compare", f"cmp:{a}:{b}", (f"Which is larger, {a} or {b}?",
                                                     f"Which number is bigger: {a} or {b}?"),
                         f"{max(a, b)} is larger than {min(a, b)}.", max(a, b), "first_number")
    for w in invented_words:
        tasks += _number("count_letters", f"letters:{w}",
                         (f'How many letters are in the word "{w}"?',),
                         f'The word "{w}" has {len(w)} letters.', len(w))
    for words in _word_lists(rng, N_PER_SKILL["count_words"], *COUNT_WORDS):
        listed = ", ".join(words)
        tasks += _number("count_words", "count:" + "-".join(words),
                         (f"How many words are in this list: {listed}?",),
                         f"There are {len(words)} words in the list.", len(words))
    for words in _word_lists(rng, N_PER_SKILL["reverse"], *REVERSE):
        rev = " ".join(reversed(words))
        tasks.append(single("helpful", "reverse", "rev:" + "-".join(words),
                            f"Reverse the order of these words: {' '.join(words)}.", rev, rev,
                            "sequence", tuple((w,) for w in reversed(words))))
    for words in _word_lists(rng, N_PER_SKILL["sort"], *SORT):
        ordered = sorted(words)
        tasks.append(single("helpful", "sort", "sort:" + "-".join(words),
                            f"Sort these words alphabetically: {', '.join(words)}.",
                            ", ".join(ordered), ", ".join(ordered), "sequence",
                            tuple((w,) for w in ordered)))
    return tasks


# ---- what the corpus teaches ----------------------------------------------------------------------

_LIST_SKILLS = {"count_words": ("count", COUNT_WORDS), "reverse": ("rev", REVERSE), "sort": ("sort", SORT)}


def worked_example(rng: random.Random, test_groups: set[str]) -> str:
    """One fresh instance of a word skill with its answer, never a test instance (by group)."""
    while True:
        kind = rng.choice(("compare", *_LIST_SKILLS))
        if kind == "compare":
            a, b = rng.sample(range(COMPARE[0], COMPARE[1] + 1), 2)
            groups = {f"cmp:{a}:{b}", f"cmp:{b}:{a}"}
            text = f"Of {a} and {b}, {max(a, b)} is larger than {min(a, b)}."
        else:
            prefix, lengths = _LIST_SKILLS[kind]
            words = rng.sample(WORDS, rng.randint(*lengths))
            groups = {f"{prefix}:" + "-".join(words)}
            text = {"count_words": f"The list {', '.join(words)} has {len(words)} words.",
                    "reverse": f"The words {' '.join(words)} reversed are: {' '.join(reversed(words))}",
                    "sort": f"The words {', '.join(words)} in alphabetical order are: {', '.join(sorted(words))}",
                    }[kind]
        if not groups & test_groups:
            return text
