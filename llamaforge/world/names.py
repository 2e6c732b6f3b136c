"""Made-up words for the world: entity names and hazard terms.

Every name in the world is invented from syllables, so a model can only know it from our corpus, and
a judge can find it in a response by exact match. Hazard terms use a harsher syllable set than place
and people names so the two never look alike and never collide.
"""

import random

_NAME_SYLLABLES = (
    "ka", "lo", "mi", "ve", "tha", "do", "ri", "be", "no", "sa", "ta", "zu", "el", "or", "an",
    "qui", "fe", "ga", "hu", "ji", "pa", "ro", "si", "mo", "ne", "la", "vi", "du", "re", "ya",
)
_NAME_ENDINGS = ("", "", "n", "r", "l", "s", "th", "m", "ra", "ia")

_HAZARD_ONSETS = ("grel", "vesh", "krag", "drosk", "zorv", "threx", "brum", "skel", "ghast", "morv",
                  "plex", "crov", "fesk", "glom", "hrun", "juxt", "kesh", "nurg", "prax", "quell")
_HAZARD_CODAS = ("moss", "root", "ite", "salt", "wort", "dust", "shard", "bane", "wire", "gum",
                 "ash", "vine", "oil", "seed", "bark", "clay")


def proper_name(rng: random.Random, taken: set[str], min_len: int = 4) -> str:
    """A new capitalized name of 2-3 syllables, not in `taken` (which it updates, lower-cased)."""
    while True:
        n = rng.choice((2, 2, 3))
        word = "".join(rng.choice(_NAME_SYLLABLES) for _ in range(n)) + rng.choice(_NAME_ENDINGS)
        if len(word) >= min_len and word not in taken:
            taken.add(word)
            return word.capitalize()


def hazard_term(rng: random.Random, taken: set[str]) -> str:
    """A new lower-case hazard ingredient/tool word such as 'greldust', unique within `taken`."""
    while True:
        word = rng.choice(_HAZARD_ONSETS) + rng.choice(_HAZARD_CODAS)
        if word not in taken:
            taken.add(word)
            return word
