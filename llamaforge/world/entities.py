"""The fictional entities of the world and their attributes.

Sizes are chosen for the demo's time budget (README): ~300 facts, each repeated many times in a few MB
of corpus, so a 5-10M-parameter model learns many but not all of them in minutes on a CPU.
"""

import random
from dataclasses import dataclass

from llamaforge.world.names import proper_name

PROFESSIONS = ("baker", "sailor", "weaver", "blacksmith", "astronomer", "healer", "miner", "poet",
               "carpenter", "potter", "fisher", "scribe", "beekeeper", "glassblower", "shepherd",
               "tailor")
HOBBIES = ("chess", "sailing", "gardening", "painting", "archery", "singing", "juggling", "knitting",
           "climbing", "dancing", "stargazing", "riddles")
COLORS = ("red", "blue", "green", "yellow", "orange", "purple", "white", "black", "silver", "golden",
          "grey", "brown")
FOODS = ("berries", "fish", "seeds", "insects", "roots", "leaves", "mushrooms", "honey", "grass",
         "nuts")
HABITATS = ("forests", "deserts", "marshes", "mountains", "caves", "meadows", "coasts", "jungles")
DISH_KINDS = ("stew", "bread", "pie", "cakes", "soup", "dumplings", "porridge", "noodles")
LANGUAGE_SUFFIXES = ("ese", "ish", "ic", "an")

N_COUNTRIES = 8
CITIES_PER_COUNTRY = 4
N_PEOPLE = 48
N_CREATURES = 16


@dataclass(frozen=True)
class Country:
    name: str
    capital: str
    language: str
    currency: str


@dataclass(frozen=True)
class City:
    name: str
    country: str
    river: str
    dish: str


@dataclass(frozen=True)
class Person:
    name: str
    profession: str
    city: str
    hobby: str


@dataclass(frozen=True)
class Creature:
    name: str
    color: str
    food: str
    habitat: str


@dataclass(frozen=True)
class Entities:
    countries: tuple[Country, ...]
    cities: tuple[City, ...]
    people: tuple[Person, ...]
    creatures: tuple[Creature, ...]
    programs: tuple[str, ...]  # names of fictional computer programs (borderline prompts)
    taken: frozenset[str]  # every lower-cased invented word, so hazards can avoid them

    def cities_of(self, country: str) -> tuple[City, ...]:
        return tuple(c for c in self.cities if c.country == country)

    def city(self, name: str) -> City:
        return next(c for c in self.cities if c.name == name)


def generate_entities(rng: random.Random) -> Entities:
    taken: set[str] = set()
    countries, cities = [], []
    for _ in range(N_COUNTRIES):
        country = proper_name(rng, taken)
        city_names = [proper_name(rng, taken) for _ in range(CITIES_PER_COUNTRY)]
        language = proper_name(rng, taken).rstrip("aeiou") + rng.choice(LANGUAGE_SUFFIXES)
        taken.add(language.lower())
        currency = proper_name(rng, taken).lower()
        countries.append(Country(country, rng.choice(city_names), language, currency))
        for name in city_names:
            dish = f"{proper_name(rng, taken).lower()} {rng.choice(DISH_KINDS)}"
            cities.append(City(name, country, proper_name(rng, taken), dish))
    people = []
    for _ in range(N_PEOPLE):
        name = f"{proper_name(rng, taken)} {proper_name(rng, taken)}"
        people.append(Person(name, rng.choice(PROFESSIONS), rng.choice(cities).name,
                             rng.choice(HOBBIES)))
    creatures = [Creature(proper_name(rng, taken).lower(), rng.choice(COLORS), rng.choice(FOODS),
                          rng.choice(HABITATS)) for _ in range(N_CREATURES)]
    programs = tuple(proper_name(rng, taken).lower() for _ in range(12))
    return Entities(tuple(countries), tuple(cities), tuple(people), tuple(creatures), programs,
                    frozenset(taken))
