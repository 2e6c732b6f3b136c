"""Simple skills with programmatically checkable answers: arithmetic, comparison, counting,
reversing and sorting words. Instances are drawn from a seeded RNG; each instance (not each
phrasing) is one split group, so a test sum is never seen, in any wording, during training.
"""

import random

from llamaforge.world.tasks import Task, single

WORDS = ("apple", "river", "stone", "cloud", "lamp", "horse", "bread", "tower", "garden", "mirror",
         "candle", "forest", "window", "basket", "feather", "ladder", "button", "pepper", "rocket",
         "violin", "anchor", "blanket", "cactus", "dragon", "engine", "falcon", "glove", "hammer",
         "island", "jacket", "kettle", "lemon", "marble", "needle", "orange", "pillow", "quilt",
         "ribbon", "saddle", "tunnel")

N_PER_SKILL = 120  # instances per skill: skills and facts get similar shares of the prompts


def _pairs(rng: random.Random, n: int, lo: int, hi: int, ordered: bool) -> list[tuple[int, int]]:
    seen, out = set(), []
    while len(out) < n:
        a, b = rng.randint(lo, hi), rng.randint(lo, hi)
        if ordered and a <= b or a == b or (a, b) in seen:
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
    for a, b in _pairs(rng, N_PER_SKILL, 10, 99, ordered=False):
        tasks += _number("add", f"add:{a}:{b}", (f"What is {a} plus {b}?", f"Compute {a} + {b}."),
                         f"{a} plus {b} is {a + b}.", a + b)
    for a, b in _pairs(rng, N_PER_SKILL, 5, 99, ordered=True):
        tasks += _number("subtract", f"sub:{a}:{b}", (f"What is {a} minus {b}?",
                                                      f"Compute {a} - {b}."),
                         f"{a} minus {b} is {a - b}.", a - b)
    for a in range(2, 13):
        for b in range(2, 13):
            tasks += _number("multiply", f"mul:{a}:{b}", (f"What is {a} times {b}?",
                                                          f"Compute {a} x {b}."),
                             f"{a} times {b} is {a * b}.", a * b)
    for a, b in _pairs(rng, N_PER_SKILL, 1, 999, ordered=False):
        tasks += _number("compare", f"cmp:{a}:{b}", (f"Which is larger, {a} or {b}?",
                                                     f"Which number is bigger: {a} or {b}?"),
                         f"{max(a, b)} is larger than {min(a, b)}.", max(a, b), "first_number")
    for w in invented_words:
        tasks += _number("count_letters", f"letters:{w}",
                         (f'How many letters are in the word "{w}"?',),
                         f'The word "{w}" has {len(w)} letters.', len(w))
    for words in _word_lists(rng, N_PER_SKILL, 3, 9):
        listed = ", ".join(words)
        tasks += _number("count_words", "count:" + "-".join(words),
                         (f"How many words are in this list: {listed}?",),
                         f"There are {len(words)} words in the list.", len(words))
    for words in _word_lists(rng, N_PER_SKILL, 3, 6):
        rev = " ".join(reversed(words))
        tasks.append(single("helpful", "reverse", "rev:" + "-".join(words),
                            f"Reverse the order of these words: {' '.join(words)}.", rev, rev,
                            "sequence", tuple((w,) for w in reversed(words))))
    for words in _word_lists(rng, N_PER_SKILL, 3, 6):
        ordered = sorted(words)
        tasks.append(single("helpful", "sort", "sort:" + "-".join(words),
                            f"Sort these words alphabetically: {', '.join(words)}.",
                            ", ".join(ordered), ", ".join(ordered), "sequence",
                            tuple((w,) for w in ordered)))
    return tasks
