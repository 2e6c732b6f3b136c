"""The World: one seeded object that hands out the corpus, prompt sets, demonstrations, GAtt
instructions and weekly batches, and that judges and annotates responses.

Construction only draws the entities and hazards (milliseconds); prompt sets are built on first
use and cached. Everything is a function of the seed: RNGs are `random.Random` instances seeded
with strings such as "0:entities" (string seeding is stable across processes, unlike hash()).
"""

import random
from functools import cached_property

from llamaforge.world import annotators, corpus, demos, gatt, judges, prompts
from llamaforge.world.entities import Entities, generate_entities
from llamaforge.world.hazards import Hazard, answer_templates, generate_hazards
from llamaforge.world.names import proper_name
from llamaforge.world.risky import adversarial_tasks, borderline_tasks
from llamaforge.world.skills import skill_tasks
from llamaforge.world.tasks import Task, fact_tasks

N_GATT = {"train": 200, "test": 50}


class World:
    def __init__(self, seed: int = 0):
        self.seed = seed
        self.entities: Entities = generate_entities(self._rng("entities"))
        self.hazards: tuple[Hazard, ...] = generate_hazards(self._rng("hazards"), self.entities)

    def _rng(self, purpose: str) -> random.Random:
        return random.Random(f"{self.seed}:{purpose}")

    # ---- prompt sets -------------------------------------------------------------------------

    @cached_property
    def pool(self) -> prompts.Pool:
        rng = self._rng("skills")
        taken = set(self.entities.taken) | {t for h in self.hazards for t in h.terms}
        words = [proper_name(rng, taken).lower() for _ in range(120)]
        by_category = {"helpful": fact_tasks(self.entities) + skill_tasks(rng, words),
                       "adversarial": adversarial_tasks(self.entities, self.hazards),
                       "borderline": borderline_tasks(self.entities, self.hazards)}
        return prompts.build_pool(self._rng("split"), by_category)

    def _record(self, task: Task, category: str, split: str, i: int) -> dict:
        """A prompt record; an adversarial one also names its risk category, as the paper's
        annotators labelled adversarial prompts (paper §4.2.4)."""
        record = prompts.prompt_record(task, category, split, i)
        if task.hazard >= 0:
            record["risk_category"] = self.hazards[task.hazard].risk
        return record

    def prompts(self, category: str, split: str) -> list[dict]:
        """Prompt records {"id", "messages", "category", "kind", "turns"} of one set, plus
        "risk_category" on adversarial ones."""
        if category not in prompts.CATEGORIES or split not in prompts.SPLITS:
            raise ValueError(f"no prompt set {category!r}/{split!r}; categories "
                             f"{prompts.CATEGORIES}, splits {prompts.SPLITS}")
        return [self._record(t, category, split, i)
                for i, t in enumerate(self.pool.tasks[(category, split)])]

    def batch(self, k: int, size: int = 200) -> list[dict]:
        """Weekly batch k: `size` fresh training prompts (70% helpful, 20% adversarial, 10%
        borderline), never from the test sets, different for every k."""
        return [dict(self._record(t, category, "train", i), id=f"batch{k}-{i:05d}", batch=k)
                for i, (category, t) in enumerate(prompts.batch_tasks(self.pool, self.seed, k,
                                                                       size))]

    def risk_category(self, prompt_messages) -> str | None:
        """The risk category of a prompt ("poisoning", ...), None unless it is adversarial."""
        task = self.task(prompt_messages)
        return self.hazards[task.hazard].risk if task.hazard >= 0 else None

    def answer_templates(self) -> dict[str, str]:
        """Risk category -> how a safe answer handles it (paper §4.2.4, Table 13)."""
        return answer_templates()

    def gatt_instructions(self, split: str, n: int | None = None) -> list[gatt.GattInstruction]:
        """GAtt instructions of a split (train and test use disjoint parameters)."""
        return gatt.gatt_instructions(self._rng(f"gatt:{split}"), self.entities, split,
                                      n or N_GATT[split])

    # ---- gold judges -------------------------------------------------------------------------

    def task(self, prompt_messages) -> Task:
        """The hidden task behind a prompt (messages as in the exported files)."""
        return self.pool.lookup(prompt_messages)

    def helpfulness(self, prompt_messages, response: str) -> float:
        """Gold helpfulness in [0, 1] of `response` to the last user turn (judges.py)."""
        return judges.helpfulness_score(self.task(prompt_messages), response, self.hazards)

    def safety(self, prompt_messages, response: str) -> float:
        """Gold safety in [0, 1]: 0 when a hazard is substantially leaked (judges.py)."""
        self.task(prompt_messages)  # the same contract as helpfulness: unknown prompts raise
        return judges.safety_score(response, self.hazards)

    def is_safe(self, prompt_messages, response: str) -> bool:
        return self.safety(prompt_messages, response) >= judges.SAFE_THRESHOLD

    # ---- data --------------------------------------------------------------------------------

    def corpus_documents(self, target_bytes: int = corpus.TARGET_BYTES) -> list[str]:
        return corpus.documents(self._rng("corpus"), self.entities, self.hazards, self.pool,
                                target_bytes)

    def sft_dialogs(self, split: str = "train", mix: demos.DemoMix | None = None) -> list[dict]:
        """Vendor-style demonstrations (paper §3.1) with a quality mix; the test split is clean.
        Instructed demonstrations use the split's own GAtt instructions (paper §3.3)."""
        return demos.sft_dialogs(self._rng(f"sft:{split}"), self.pool, self.hazards, split,
                                 mix or demos.DemoMix(), self.gatt_instructions(split))

    # ---- simulated annotators ----------------------------------------------------------------

    def sample_response(self, prompt_messages, rng: random.Random,
                        leak_propensity: float = 0.4) -> str:
        """A response from a simulated chat model of mixed quality (annotators.py)."""
        return annotators.simulated_response(self.task(prompt_messages), rng, self.hazards,
                                             leak_propensity)

    def utility(self, prompt_messages, response: str, guideline: str) -> float:
        """What an annotator of `guideline` ("helpfulness" | "safety") maximizes."""
        return annotators.utility(self.task(prompt_messages), response, self.hazards, guideline)

    def annotate(self, prompt_messages, response_a: str, response_b: str, guideline: str,
                 rng: random.Random, config: annotators.AnnotatorConfig | None = None
                 ) -> dict | None:
        """One preference record, or None for a dropped pair (paper §3.2.1)."""
        return annotators.annotate(self.task(prompt_messages), list(prompt_messages), response_a,
                                   response_b, guideline, rng, self.hazards,
                                   config or annotators.AnnotatorConfig())

    def preference_pairs(self, n: int, guideline: str, rng: random.Random,
                         config: annotators.AnnotatorConfig | None = None) -> list[dict]:
        """`n` annotated pairs on training prompts, two simulated responses each."""
        return annotators.collect(self, n, guideline, rng, config or annotators.AnnotatorConfig())
