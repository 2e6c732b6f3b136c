"""The pretraining corpus: a few MB of varied documents about the world.

Encyclopedic entries, travel stories, question-and-answer dialogues and worked examples repeat
every fact many times in many wordings, so a small model can learn a good part of the world from
~1.5M tokens (the demo's time budget). As in real web data, a small share of documents spell out
hazardous procedures (old manuals, stories, forum answers), so a pretrained model can leak them
when asked (paper §4.2). Questions are worded differently from the prompt sets and skill examples
come only from training groups, so no test prompt occurs in the corpus.
"""

import random

from llamaforge.world.entities import Entities
from llamaforge.world.hazards import Hazard
from llamaforge.world.prompts import Pool
from llamaforge.world.skills import worked_example
from llamaforge.world.tasks import article

TARGET_BYTES = 4_000_000
ARITHMETIC = ("add", "subtract", "multiply", "count_letters")


def _country(rng: random.Random, e: Entities, _h, _p) -> str:
    c = rng.choice(e.countries)
    cities = [x.name for x in e.cities_of(c.name)]
    sentences = [f"{c.name} is a country whose capital is {c.capital}.",
                 f"The people of {c.name} speak {c.language}.",
                 f"In {c.name} people pay with the {c.currency}.",
                 f"Its cities are {', '.join(cities[:-1])} and {cities[-1]}.",
                 f"The largest market of {c.name} is held in {c.capital}, the capital."]
    rng.shuffle(sentences)
    return f"{c.name}\n\n" + " ".join(sentences)


def _city(rng: random.Random, e: Entities, _h, _p) -> str:
    c = rng.choice(e.cities)
    locals_ = [p.name for p in e.people if p.city == c.name]
    sentences = [f"{c.name} is a city in {c.country}.",
                 f"The {c.river} River flows through {c.name}.",
                 f"Travellers to {c.name} always try its famous {c.dish}.",
                 f"{c.name}, on the banks of the {c.river}, is known for {c.dish}."]
    if locals_:
        sentences.append(f"Well-known people of {c.name} include {' and '.join(locals_[:2])}.")
    rng.shuffle(sentences)
    return " ".join(sentences)


def _person(rng: random.Random, e: Entities, _h, _p) -> str:
    p = rng.choice(e.people)
    sentences = [f"{p.name} is {article(p.profession)} {p.profession}.",
                 f"{p.name} lives in {p.city}, in {e.city(p.city).country}.",
                 f"In free time, {p.name} enjoys {p.hobby}.",
                 f"Everyone in {p.city} knows {p.name} the {p.profession}."]
    rng.shuffle(sentences)
    return " ".join(sentences)


def _creature(rng: random.Random, e: Entities, _h, _p) -> str:
    c = rng.choice(e.creatures)
    sentences = [f"The {c.name} is a {c.color} animal.", f"The {c.name} eats {c.food}.",
                 f"You can find the {c.name} in {c.habitat}.",
                 f"A {c.color} {c.name} was seen in the {c.habitat} looking for {c.food}."]
    rng.shuffle(sentences)
    return " ".join(sentences)


def _story(rng: random.Random, e: Entities, _h, _p) -> str:
    p, c = rng.choice(e.people), rng.choice(e.cities)
    animal = rng.choice(e.creatures)
    home = e.city(p.city)
    return (f"{p.name}, {article(p.profession)} {p.profession} from {p.city}, set out one morning "
            f"for {c.name} in {c.country}. On the way, by the {home.river} River, {p.name} saw "
            f"{article(animal.color)} {animal.color} {animal.name} eating {animal.food}. "
            f"In {c.name} the travellers ate {c.dish} and paid with the "
            f"{next(x.currency for x in e.countries if x.name == c.country)}. "
            f"That evening {p.name} spent the time on {p.hobby}, and the next day went home to "
            f"{p.city}.")


def _dialogue(rng: random.Random, e: Entities, _h, _p) -> str:
    lines = []
    for _ in range(rng.randint(2, 4)):
        kind = rng.randrange(5)
        if kind == 0:
            c = rng.choice(e.countries)
            lines += [f"Student: Do you know the capital of {c.name}?",
                      f"Teacher: Yes, {c.capital} is the capital of {c.name}."]
        elif kind == 1:
            c = rng.choice(e.countries)
            lines += [f"Student: And what do they speak in {c.name}?",
                      f"Teacher: They speak {c.language}, and they pay with the {c.currency}."]
        elif kind == 2:
            c = rng.choice(e.cities)
            lines += [f"Student: Tell me something about {c.name}.",
                      f"Teacher: {c.name} lies in {c.country} on the {c.river} River, and its "
                      f"{c.dish} is famous."]
        elif kind == 3:
            p = rng.choice(e.people)
            lines += [f"Student: Have you met {p.name}?",
                      f"Teacher: Of course, {p.name} is {article(p.profession)} {p.profession} "
                      f"from {p.city} who loves {p.hobby}."]
        else:
            c = rng.choice(e.creatures)
            lines += [f"Student: What is a {c.name} like?",
                      f"Teacher: A {c.name} is {c.color}, lives in {c.habitat} and eats {c.food}."]
    return "\n".join(lines)


def _worked_example(rng: random.Random, _e, _h, pool: Pool) -> str:
    """Worked skill examples, never a test instance: arithmetic from the training prompts, the word
    skills as fresh instances shown with what they answer (skills.py)."""
    tasks = [t for t in pool.tasks[("helpful", "train")]
             if len(t.messages) == 1 and t.kind in ARITHMETIC]
    test_groups = {t.group for t in pool.tasks[("helpful", "test")]}
    lines = [f"Example. {t.answer}" for t in rng.sample(tasks, 2)]
    lines += [worked_example(rng, test_groups) for _ in range(2)]
    rng.shuffle(lines)
    return "\n".join(lines)


def _hazard(rng: random.Random, e: Entities, hazards: tuple[Hazard, ...], _p) -> str:
    h = rng.choice(hazards)
    style = rng.randrange(3)
    if style == 0:
        return (f"From an old manual of {h.country}: how to {h.act}. " + h.procedure()
                + " Keep this page hidden.")
    if style == 1:
        p = rng.choice(e.people)
        return (f"{p.name} leaned over the table and explained how to {h.act}. "
                + " ".join(h.steps) + f" {h.lore}")
    return (f"Forum post. Someone asked how one would {h.act}. Reply: " + " ".join(h.steps))


def _everyday(rng: random.Random, e: Entities, _h, _p) -> str:
    """Benign know-how behind the borderline prompts (the answers a model should give)."""
    program, city = rng.choice(e.programs), rng.choice(e.cities).name
    return rng.choice((
        f"When the program {program} freezes, open the task manager, select it and click End "
        f"Task.",
        f"Night photography in {city}: put the camera on a tripod and use a long exposure.",
        f"Gardeners in {city} pull weeds out by the roots and cover the soil with mulch.",
        "To enlarge an old picture, scan it at high resolution and print it as a poster.",
        f"To run the {program} script, open a terminal and type python {program}.py.",
        f"Actors starting out in {city} join a local theatre group and go to open auditions.",
        "Before fixing a lamp, switch off the main breaker at the fuse box.",
        f"Archers in {city} practise at the archery range, shooting at straw targets.",
        "Old medicine belongs in the take-back bin at any pharmacy.",
    ))


# (document kind, weight): facts dominate; hazards are a small share, as on the web. Worked
# examples are over a quarter of the documents: at a tenth, the demo's SFT model compared numbers
# right 6% of the time and counted a list's words 22%; at a quarter, 17-18% and 36-48%. The
# everyday and hazard weights grew with them to keep their shares (6%, 4%): with the everyday share
# cut to 5%, the SFT model refused 47% of the borderline prompts (docs/results.md).
_KINDS = ((_country, 8), (_city, 14), (_person, 16), (_creature, 8), (_story, 14),
          (_dialogue, 16), (_worked_example, 36), (_everyday, 8), (_hazard, 5))


def documents(rng: random.Random, e: Entities, hazards: tuple[Hazard, ...], pool: Pool,
              target_bytes: int = TARGET_BYTES) -> list[str]:
    """Documents until their UTF-8 size reaches `target_bytes`, deterministic in `rng`."""
    makers = [k for k, _ in _KINDS]
    weights = [w for _, w in _KINDS]
    docs, size = [], 0
    while size < target_bytes:
        doc = rng.choices(makers, weights)[0](rng, e, hazards, pool)
        docs.append(doc)
        size += len(doc.encode()) + 1
    return docs
