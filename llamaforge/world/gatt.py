"""Ghost Attention instructions (paper §3.3): system constraints a program can check on every
assistant turn.

Each constraint has a full form ("Always answer in capital letters.") and a shortened form
("Caps only."), like the paper's "Figure: Napoleon". An instruction combines one or two compatible
constraints. Both text forms parse back to the same instruction, so `constraint_followed` accepts
the object or either text, and exported files carry only text.
"""

import random
import re
from dataclasses import dataclass

from llamaforge.world.entities import Entities

# The word lists are split between train and test, so test instructions are new combinations with
# new parameters (paper §3.3 measures whether the constraint is kept, not whether it was memorized).
_END_WORDS = ("friend", "indeed", "truly", "onward", "cheers", "amen", "done", "farewell", "okay",
              "splendid")
_PREFIXES = ("Aye", "Well", "Listen", "Behold", "Hark", "So", "Right", "Look")
_MAX_WORDS = (8, 10, 15, 20, 12, 25)
KINDS = ("caps", "lower", "end_word", "prefix", "max_words", "character")
_CONFLICTS = {frozenset(("caps", "lower"))}
_WORD = re.compile(r"[A-Za-z0-9']+")  # what "a word" is, for checking and for writing answers
# The words an instruction names are written bare, never quoted: SentencePiece gives a word that
# opens a quote a different piece ('"Aye' -> '"', 'Aye') from the same word after a space ('▁Aye'),
# as it appears in the answer, and a small model then has to learn that mapping for every word
# before it can copy one: the 6M demo model followed quoted prefixes and end words 0% of the time.


@dataclass(frozen=True)
class Constraint:
    kind: str  # one of KINDS
    value: str = ""  # the word, prefix, limit or character name

    @property
    def full(self) -> str:
        return {
            "caps": "Always answer in capital letters.",
            "lower": "Always answer in lowercase letters only.",
            "end_word": f"End every answer with the word {self.value}.",
            "prefix": f"Begin every answer with the word {self.value}.",
            "max_words": f"Answer in at most {self.value} words.",
            "character": f"Speak as {self.value} and mention your name in every answer.",
        }[self.kind]

    @property
    def short(self) -> str:
        return {
            "caps": "Caps only.",
            "lower": "Lowercase only.",
            "end_word": f"Last word: {self.value}.",
            "prefix": f"First word: {self.value}.",
            "max_words": f"Max words: {self.value}.",
            "character": f"Character: {self.value}.",
        }[self.kind]

    def followed(self, response: str) -> bool:
        text = response.strip()
        words = _WORD.findall(text)
        letters = [ch for ch in text if ch.isalpha()]
        if not words:
            return False
        if self.kind == "caps":
            return all(ch.isupper() for ch in letters)
        if self.kind == "lower":
            return all(ch.islower() for ch in letters)
        if self.kind == "end_word":
            return words[-1].lower() == self.value.lower()
        if self.kind == "prefix":
            return words[0].lower() == self.value.lower()
        if self.kind == "max_words":
            return len(words) <= int(self.value)
        if self.kind == "character":  # the name as whole words: "Orla Venns" is someone else
            return f" {self.value.lower()} " in f" {' '.join(words).lower()} "
        raise ValueError(f"unknown constraint kind {self.kind!r}")


@dataclass(frozen=True)
class GattInstruction:
    constraints: tuple[Constraint, ...]

    @property
    def text(self) -> str:
        return " ".join(c.full for c in self.constraints)

    @property
    def short(self) -> str:
        return " ".join(c.short for c in self.constraints)

    def to_record(self) -> dict:
        return {"text": self.text, "short": self.short,
                "constraints": [{"kind": c.kind, "value": c.value} for c in self.constraints]}


# One pattern per constraint kind and form; the value is group 1 where there is one.
_PATTERNS = (
    ("caps", r"Always answer in capital letters\."), ("caps", r"Caps only\."),
    ("lower", r"Always answer in lowercase letters only\."), ("lower", r"Lowercase only\."),
    ("end_word", r"End every answer with the word ([A-Za-z]+)\."), ("end_word", r"Last word: ([A-Za-z]+)\."),
    ("prefix", r"Begin every answer with the word ([A-Za-z]+)\."), ("prefix", r"First word: ([A-Za-z]+)\."),
    ("max_words", r"Answer in at most (\d+) words\."), ("max_words", r"Max words: (\d+)\."),
    ("character", r"Speak as ([A-Z][a-z]+ [A-Z][a-z]+) and mention your name in every answer\."),
    ("character", r"Character: ([A-Z][a-z]+ [A-Z][a-z]+)\."),
)


def parse_instruction(text: str) -> GattInstruction:
    """The instruction written in `text` (full or short forms, in any order); ValueError if none."""
    found = []
    for kind, pattern in _PATTERNS:
        for m in re.finditer(pattern, text):
            found.append((m.start(), Constraint(kind, m.group(1) if m.groups() else "")))
    if not found:
        raise ValueError(f"no GAtt constraint found in {text!r}")
    return GattInstruction(tuple(c for _, c in sorted(found, key=lambda x: x[0])))


def strip_instructions(text: str) -> str:
    """`text` with every constraint sentence removed (GAtt appends them to user turns)."""
    for _, pattern in _PATTERNS:
        text = re.sub(r"\s*" + pattern, "", text)
    return text.strip()


def constraint_followed(instruction: "GattInstruction | str", response: str) -> bool:
    """Whether `response` obeys every constraint of `instruction` (an object or its text, full or
    short). Checked on one assistant turn; GAtt evaluation calls it on every turn (paper §3.3)."""
    if isinstance(instruction, str):
        instruction = parse_instruction(instruction)
    return all(c.followed(response) for c in instruction.constraints)


def obeying_answer(instruction: GattInstruction, answer: str) -> str:
    """`answer` rewritten to obey every constraint of `instruction`, as an annotator writing a
    demonstration for an instructed prompt would (the SFT demos, paper §3.1): the character
    introduces itself, the prefix opens, the end word closes, the word limit cuts the answer's own
    words (never the ones the other constraints need), and the letter case applies last."""
    values = {c.kind: c.value for c in instruction.constraints}
    # one way to introduce oneself, ending in a colon that says the answer follows: a small model
    # given "I am X." learned to stop there
    intro = f"{values['character']} here:" if "character" in values else ""

    def compose(body: str) -> str:
        opening = values["prefix"] + "," if "prefix" in values else ""
        text = " ".join(part for part in (opening, intro, body) if part)
        if "end_word" in values:
            text = text.rstrip(" .!?,;:") + f", {values['end_word']}."
        if "caps" in values:
            text = text.upper()
        if "lower" in values:
            text = text.lower()
        return text

    body = answer.strip()
    if "max_words" in values:
        while len(_WORD.findall(compose(body))) > int(values["max_words"]) and len(body.split()) > 1:
            body = " ".join(body.split()[:-1])
    return compose(body)


def _compatible(a: Constraint, b: Constraint) -> bool:
    return a.kind != b.kind and frozenset((a.kind, b.kind)) not in _CONFLICTS


def split_share(values: tuple | list, split: str) -> tuple | list:
    """A split's share of an instruction parameter list: the first three quarters train, the rest test."""
    cut = len(values) * 3 // 4
    return values[cut:] if split == "test" else values[:cut]


def gatt_instructions(rng: random.Random, e: Entities, split: str, n: int) -> list[GattInstruction]:
    """`n` distinct instructions of one or two constraints, from the split's parameter lists."""

    # one list per kind, and the kind drawn first: drawing from the pooled list would make nearly
    # every instruction a character (there are far more names than letter cases)
    pools = {"caps": [Constraint("caps")], "lower": [Constraint("lower")],
             "end_word": [Constraint("end_word", w) for w in split_share(_END_WORDS, split)],
             "prefix": [Constraint("prefix", p) for p in split_share(_PREFIXES, split)],
             "max_words": [Constraint("max_words", str(m)) for m in split_share(_MAX_WORDS, split)],
             "character": [Constraint("character", p.name) for p in split_share(e.people, split)]}

    def draw() -> Constraint:
        return rng.choice(pools[rng.choice(KINDS)])

    out, seen = [], set()
    while len(out) < n:
        first = draw()
        cs = (first,)
        if rng.random() < 0.5:
            second = draw()
            if not _compatible(first, second):
                continue
            cs = (first, second)
        inst = GattInstruction(cs)
        # caps/lower alone carry no split-specific parameter; keep them out of test so every test
        # instruction is new.
        if split == "test" and all(c.kind in ("caps", "lower") for c in cs):
            continue
        if inst.text not in seen:
            seen.add(inst.text)
            out.append(inst)
    return out
