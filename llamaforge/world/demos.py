"""SFT demonstrations, as if bought from an annotation vendor (paper §3.1).

The paper found a few thousand high-quality demonstrations enough; here the quality is a knob.
By default some answers are wrong, incomplete or verbose and some adversarial prompts are
answered unsafely, so the SFT model is measurably imperfect and rejection sampling and PPO have
room to improve it (paper §3.2.3). The test split is always clean: it measures what SFT learned.

A share of single-turn helpful prompts carry an instruction, at the end of the user message ("...
Caps only.") or as the system message, half each, and an answer that obeys it, as vendors'
instruction-following demonstrations do: Ghost Attention (paper §3.3) samples multi-turn data from
a model that follows an instruction placed in the current user message, so SFT must teach that
first. The instructions are the split's GAtt instructions (train for train), full or shortened,
half each. They stay single-turn: keeping an instruction over later turns is what GAtt adds.
"""

import dataclasses
import random
from dataclasses import dataclass

from llamaforge.world import responses
from llamaforge.world.gatt import GattInstruction, obeying_answer
from llamaforge.world.hazards import Hazard
from llamaforge.world.prompts import Pool
from llamaforge.world.tasks import Task

SYSTEM_PROMPTS = ("You are a helpful assistant.", "You are a friendly and concise assistant.",
                  "Answer the user's questions as well as you can.")


@dataclass(frozen=True)
class DemoMix:
    n_dialogs: int = 3000
    """number of training dialogs (the test split has a tenth, capped by the test prompts)"""
    adversarial: float = 0.15
    """share of dialogs on adversarial prompts"""
    borderline: float = 0.10
    """share of dialogs on borderline prompts (the rest are helpful prompts)"""
    system_prompt: float = 0.10
    """share of dialogs that start with a system message"""
    wrong: float = 0.10
    """share of helpful/borderline answers that are wrong"""
    incomplete: float = 0.08
    """share of helpful/borderline answers that are incomplete or vague"""
    verbose: float = 0.12
    """share of helpful/borderline answers that are correct but rambling"""
    unsafe: float = 0.30
    """share of adversarial prompts answered with the hazardous procedure"""
    curt_refusal: float = 0.40
    """share of safe answers to adversarial prompts that refuse without offering an alternative"""
    instructed: float = 0.35
    """share of single-turn helpful prompts given a GAtt instruction, answered obeying it"""
    instruction_as_system: float = 0.5
    """share of those whose instruction is the system message rather than the user message's end"""

    def category_shares(self) -> dict[str, float]:
        """Share of the dialogs on each prompt category (helpful prompts take the rest)."""
        return {"adversarial": self.adversarial, "borderline": self.borderline,
                "helpful": 1.0 - self.adversarial - self.borderline}


def demo_answer(task: Task, rng: random.Random, hazards: tuple[Hazard, ...], mix: DemoMix) -> str:
    r = rng.random()
    if task.category == "adversarial":
        if r < mix.unsafe:
            return responses.leak(hazards[task.hazard], rng, rng.randint(3, 6),
                                  rng.choice(responses.LEAK_STYLES[:3]))
        return responses.refusal(task, rng, rng.random() >= mix.curt_refusal, hazards)
    if r < mix.wrong:
        return responses.wrong(task, rng)
    if r < mix.wrong + mix.incomplete:
        return responses.incomplete(task, rng)
    if r < mix.wrong + mix.incomplete + mix.verbose:
        return responses.verbose(task, rng)
    return responses.gold(task)


def sft_dialogs(rng: random.Random, pool: Pool, hazards: tuple[Hazard, ...], split: str,
                mix: DemoMix, instructions: list[GattInstruction]) -> list[dict]:
    clean = split == "test"
    if clean:
        mix = dataclasses.replace(mix, n_dialogs=mix.n_dialogs // 10, wrong=0.0, incomplete=0.0,
                                  verbose=0.0, unsafe=0.0, curt_refusal=0.0)
    dialogs = []
    for category, share in mix.category_shares().items():
        tasks = pool.tasks[(category, split)]
        n = round(mix.n_dialogs * share)
        picked = rng.sample(tasks, min(n, len(tasks))) if clean else [rng.choice(tasks)
                                                                       for _ in range(n)]
        for task in picked:
            answer = demo_answer(task, rng, hazards, mix)
            system = rng.choice(SYSTEM_PROMPTS) if rng.random() < mix.system_prompt else None
            instruction = None
            if category == "helpful" and len(task.messages) == 1 and rng.random() < mix.instructed:
                instruction = rng.choice(instructions)
            dialogs.append(demonstration(task, answer, system, instruction, rng, mix))
    rng.shuffle(dialogs)
    return dialogs


def demonstration(task: Task, answer: str, system: str | None, instruction: GattInstruction | None,
                  rng: random.Random, mix: DemoMix) -> dict:
    """One demonstration dialog: the task's messages and the answer, after the system message if
    any. With an instruction, its full or short form (half each) becomes the system message or the
    user message's end (`mix.instruction_as_system`), and the answer obeys it."""
    messages = [{"role": role, "content": content} for role, content in task.messages]
    if instruction is not None:
        form = instruction.short if rng.random() < 0.5 else instruction.text
        if rng.random() < mix.instruction_as_system:
            system = form
        else:
            messages[0]["content"] += " " + form
        answer = obeying_answer(instruction, answer)
    messages.append({"role": "assistant", "content": answer})
    if system is not None:
        messages.insert(0, {"role": "system", "content": system})
    return {"messages": messages}
