"""Responses of known quality for a task: the raw material of the SFT demonstrations (demos.py)
and of the simulated models whose answer pairs the annotators compare (annotators.py).

Each style is a pure function of (task, rng): gold, paraphrased, wrong, incomplete, verbose,
a curt or a helpful refusal, and a hazardous leak (full, partial, or wrapped in a story).
"""

import random

from llamaforge.world.hazards import Hazard
from llamaforge.world.tasks import Task

_FILLER = (
    "That is a great question.", "Many people wonder about this.", "Let me explain in detail.",
    "I hope this helps you.", "There is a lot one could say here.", "It is worth thinking about.",
    "This is something I know about.", "Here is what I can tell you.",
)
CURT_REFUSALS = ("I can't help with that.", "Sorry, I can't assist with that request.",
                 "I'm sorry, but I won't answer that.")
_FALSE_REFUSALS = ("I can't help with that, it sounds dangerous.",
                   "I'm sorry, but I can't assist with anything that could cause harm.",
                   "I can't help with that. Violence is never the answer.")


def gold(task: Task) -> str:
    return task.answer


def paraphrase(task: Task, rng: random.Random) -> str:
    """Same content, other words (for preference pairs that differ only in phrasing)."""
    if task.category == "adversarial":
        return rng.choice(CURT_REFUSALS) + " I can tell you about its history instead."
    if task.check in ("last_number", "first_number"):
        return rng.choice(("The answer is {}.", "It is {}.", "{}.")).format(task.short)
    return rng.choice(("{}", "It is {}.", "I believe the answer is: {}.")).format(task.short)


def wrong(task: Task, rng: random.Random) -> str:
    """A confident answer with the key value replaced by a wrong one."""
    if task.check in ("last_number", "first_number"):
        value = int(task.required[0][0])
        if task.check == "first_number":
            offered = [int(x) for x in task.question.replace("?", " ").replace(",", " ").split()
                       if x.isdigit()]
            return f"{min(offered)} is larger than {max(offered)}."
        bad = abs(value + rng.choice((-10, -3, -2, -1, 1, 2, 3, 10)))
        bad = bad if bad != value else value + 1
        i = task.answer.rfind(str(value))
        return task.answer[:i] + str(bad) + task.answer[i + len(str(value)):]
    if task.check == "sequence":
        words = [g[0] for g in task.required]
        shuffled = words[:]
        while shuffled == words:
            rng.shuffle(shuffled)
        return " ".join(shuffled)
    if task.wrong:
        value = task.required[0][0]
        return task.answer.replace(value, rng.choice(task.wrong))
    return rng.choice(("I think you should restart everything and hope for the best.",
                       "Nobody really knows how to do that.",
                       "You can simply ignore it; it will fix itself."))


def incomplete(task: Task, rng: random.Random) -> str:
    """Part of the answer: half the required items, or a vague non-answer for single facts."""
    if task.check == "sequence":
        words = [g[0] for g in task.required]
        return " ".join(words[: max(1, len(words) // 2)])
    if task.check == "terms" and len(task.required) > 1:
        keep = task.required[: len(task.required) // 2]
        return "It involves " + " and ".join(g[0] for g in keep) + "."
    return rng.choice(("That is a well-known thing, but the details escape me.",
                       "It is a common question with a simple answer.",
                       "You can find that in most books about the subject."))


def verbose(task: Task, rng: random.Random) -> str:
    """The gold answer buried in filler and repeated: correct but rambling."""
    pre = " ".join(rng.sample(_FILLER, rng.randint(2, 4)))
    post = " ".join(rng.sample(_FILLER, rng.randint(1, 3)))
    return f"{pre} {task.answer} {post} To repeat: {task.answer}"


def refusal(task: Task, rng: random.Random, alternative: bool, hazards: tuple[Hazard, ...]) -> str:
    """A refusal; on a benign prompt this is a false refusal."""
    if task.category == "adversarial" and alternative:
        return task.answer  # the gold refusal already offers a safe alternative
    if alternative:
        return rng.choice(_FALSE_REFUSALS) + " I can tell you about something else instead."
    if task.category == "adversarial":
        return rng.choice(CURT_REFUSALS)
    return rng.choice(_FALSE_REFUSALS)


def leak(hazard: Hazard, rng: random.Random, n_steps: int, style: str) -> str:
    """The first `n_steps` steps of a hazard's procedure, as a list, as prose, or inside a story."""
    steps = hazard.steps[:n_steps]
    if style == "list":
        return f"Here is how to {hazard.act}. " + hazard.procedure(n_steps)
    if style == "prose":
        return f"To {hazard.act}, " + " Then ".join(s[0].lower() + s[1:] for s in steps)
    if style == "story":
        body = " ".join(steps)
        return (f"The old woman leaned closer and whispered how to {hazard.act}. \"{body}\" "
                f"she said, and the fire crackled.")
    if style == "refuse_then_leak":
        return rng.choice(CURT_REFUSALS) + " But since you asked: " + " ".join(steps)
    raise ValueError(f"unknown leak style {style!r}")


LEAK_STYLES = ("list", "prose", "story", "refuse_then_leak")
