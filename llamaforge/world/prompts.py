"""Prompt sets, their train/test split, weekly batches, and the index the judges use.

The split is by group (one fact, one skill instance, one hazard framing, one borderline request
about one entity), never by phrasing, so no test entity-question pair appears in any training
prompt, demonstration or batch. Multi-turn prompts are built after the split from tasks of the
same split. Every prompt is keyed by its user turns, so the judges can find the hidden task from
exactly what the exported files contain.
"""

import random
from dataclasses import dataclass, field

from llamaforge.world.gatt import strip_instructions
from llamaforge.world.tasks import Task

CATEGORIES = ("helpful", "adversarial", "borderline")
SPLITS = ("train", "test")
TEST_FRACTION = 0.2
N_MULTI_TURN = {"train": 400, "test": 80}
_SEP = "\n\u241e\n"  # joins user turns into an index key; never appears in a prompt


class UnknownPromptError(KeyError):
    """The judges were asked about a prompt the world did not generate."""

    def __str__(self) -> str:
        return self.args[0]


def prompt_key(messages) -> str:
    """The index key of a prompt: its user turns (system prompts and assistant turns do not
    change the task). Accepts dicts {"role", "content"} or (role, content) pairs."""
    pairs = [(m["role"], m["content"]) if isinstance(m, dict) else tuple(m) for m in messages]
    return _SEP.join(content.strip() for role, content in pairs if role == "user")


def to_messages(task: Task) -> list[dict]:
    return [{"role": role, "content": content} for role, content in task.messages]


@dataclass
class Pool:
    """All prompts the world can pose, split, with an index from prompt key to task."""
    tasks: dict[tuple[str, str], list[Task]]  # (category, split) -> tasks, in a seeded order
    index: dict[str, Task] = field(default_factory=dict)

    def lookup(self, messages) -> Task:
        """The task behind a prompt: by all its user turns, else by its last user turn, else the
        same after removing GAtt instructions that were appended to user turns (paper §3.3)."""
        users = [c for c in prompt_key(messages).split(_SEP)]
        for candidate in (users, users[-1:], [strip_instructions(u) for u in users],
                          [strip_instructions(users[-1])]):
            task = self.index.get(_SEP.join(candidate))
            if task is not None:
                return task
        raise UnknownPromptError(
            f"unknown prompt (the world's judges only know prompts the world generated): "
            f"{users[-1][:80]!r}")


def _split_groups(rng: random.Random, tasks: list[Task]) -> set[str]:
    groups = sorted({t.group for t in tasks})
    rng.shuffle(groups)
    return set(groups[: round(len(groups) * TEST_FRACTION)])


def _multi_turn(rng: random.Random, singles: list[Task], n: int) -> list[Task]:
    """Two-turn helpful dialogs: a first question answered with gold, then a second question."""
    out, seen = [], set()
    while len(out) < n:
        first, last = rng.sample(singles, 2)
        if first.group == last.group or (first.question, last.question) in seen:
            continue
        seen.add((first.question, last.question))
        messages = (("user", first.question), ("assistant", first.answer), ("user", last.question))
        out.append(Task(last.category, last.kind, last.group, messages, last.answer, last.short,
                        last.check, last.required, last.wrong, last.hazard))
    return out


def build_pool(rng: random.Random, by_category: dict[str, list[Task]]) -> Pool:
    pool = Pool({})
    for category in CATEGORIES:
        tasks = by_category[category]
        test_groups = _split_groups(rng, tasks)
        for split in SPLITS:
            chosen = [t for t in tasks if (t.group in test_groups) == (split == "test")]
            if category == "helpful":
                chosen += _multi_turn(rng, chosen, N_MULTI_TURN[split])
            rng.shuffle(chosen)
            pool.tasks[(category, split)] = chosen
    for tasks in pool.tasks.values():
        for t in tasks:
            key = prompt_key(t.messages)
            if key in pool.index and pool.index[key] != t:
                raise AssertionError(f"two tasks share the prompt {key!r}")
            pool.index[key] = t
    return pool


def prompt_record(task: Task, category: str, split: str, i: int) -> dict:
    return {"id": f"{category}-{split}-{i:05d}", "messages": to_messages(task),
            "category": category, "kind": task.kind,
            "turns": sum(role == "user" for role, _ in task.messages)}


def batch_tasks(pool: Pool, seed: int, k: int, size: int,
                mix: tuple[float, float, float] = (0.7, 0.2, 0.1)) -> list[tuple[str, Task]]:
    """The k-th weekly batch (paper §3.2.1): `size` training prompts, mixed helpful / adversarial /
    borderline. Each category's training prompts are walked in a seeded order, one slice per
    week, so consecutive batches are fresh until a category is exhausted, then a new order starts.
    """
    out = []
    for category, share in zip(CATEGORIES, mix):
        tasks = pool.tasks[(category, "train")]
        n = round(size * share)
        orders: dict[int, list[int]] = {}
        for i in range(k * n, (k + 1) * n):
            epoch, pos = divmod(i, len(tasks))
            if epoch not in orders:
                orders[epoch] = list(range(len(tasks)))
                random.Random(f"{seed}:batch:{category}:{epoch}").shuffle(orders[epoch])
            out.append((category, tasks[orders[epoch][pos]]))
    random.Random(f"{seed}:batch:{k}").shuffle(out)
    return out
