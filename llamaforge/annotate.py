"""`llamaforge annotate`: one round of preference annotation (paper §3.2.1) with the built-in
world's simulated annotators.

Two responses per prompt are sampled from the policy (two temperatures, or two checkpoints); the
world's helpfulness annotator judges helpful prompts and its safety annotator adversarial and
borderline ones, each choosing a response and rating the gap on the paper's 4-level scale. Safety
pairs carry the paper's metadata, and those whose chosen response is unsafe are dropped. Real users
skip this command and bring their own preference files.
"""

from __future__ import annotations

import itertools
import json
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from llamaforge.checkpoint import load_for_sampling
from llamaforge.data.prompts import read_prompts
from llamaforge.device import DeviceName, resolve_device
from llamaforge.errors import UserError
from llamaforge.eval.chat import answer
from llamaforge.flags import OptionalPath, RequiredPaths
from llamaforge.rlhf.rejection_sampling import sample_answers


@dataclass
class AnnotateArgs:
    """Sample response pairs from a policy and have the built-in world's annotators rate them."""

    policy: Path
    """Chat checkpoint to sample from."""
    prompts: RequiredPaths
    """Prompt files of the built-in world ({"messages": [...], "category": ...} per line)."""
    out: Path
    """Directory for preferences.jsonl and annotate.json (statistics)."""
    policy_b: OptionalPath = None
    """Sample the second response from this checkpoint instead (same temperature)."""
    temperatures: tuple[float, float] = (0.7, 1.1)
    """Temperatures of the two responses (the paper varies temperature and model)."""
    responses: int = 2
    """Responses per prompt: 2 gives one pair; K > 2 samples K (half at each temperature, or half
    from each policy, each half sharing its prompt's prefill) and rates every distinct pair among
    them, K(K-1)/2 pairs per prompt for the price of K samples."""
    max_new_tokens: int = 64
    """Most tokens per response."""
    world_seed: int = 0
    """Seed of the world the prompts come from."""
    seed: int = 0
    """Seed of sampling and of the annotators' noise."""
    device: DeviceName = "auto"
    """cpu, cuda, or auto."""


TOP_P = 0.9  # as eval.chat.answer samples the two-response pairs
# prompts sampled together: with two samples each, 128 rows, which sampled 400 prompts 1.2x faster
# than 16 prompts on 2 CPU cores with the demo model (docs/results.md)
BATCH_PROMPTS = 64


def guideline_of(record: dict) -> str:
    return "helpfulness" if record.get("category", "helpful") == "helpful" else "safety"


def main(args: AnnotateArgs) -> Path:
    from llamaforge.world import World  # the simulated annotators
    from llamaforge.world.prompts import UnknownPromptError

    world = World(args.world_seed)
    records = read_prompts(args.prompts)
    for record in records:  # before any sampling: the annotators judge the world's own prompts only
        try:
            world.task(record["messages"])
        except UnknownPromptError as err:
            raise UserError(f"{', '.join(map(str, args.prompts))}: {err}") from None
    if args.responses < 2:
        raise UserError(f"--responses {args.responses}: must be at least 2 (a pair)")
    device = resolve_device(args.device)
    model, tokenizer = load_for_sampling(args.policy, device)
    prompts = [r["messages"] for r in records]
    responses = _responses(args, prompts, model, tokenizer, device)
    rng = random.Random(args.seed)
    kept, stats = [], Counter()
    for record, answers in zip(records, responses):
        guideline = guideline_of(record)
        for a, b in _pairs(answers, stats):
            annotated = world.annotate(record["messages"], a, b, guideline, rng)
            if annotated is None:
                stats["dropped_chosen_unsafe"] += 1
                continue
            kept.append(annotated)
            stats[f"{guideline}:{annotated['rating']}"] += 1
            if annotated.get("safety_meta"):
                stats[f"meta:{annotated['safety_meta']}"] += 1
    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / "preferences.jsonl").open("w") as f:
        for record in kept:
            f.write(json.dumps(record, sort_keys=True) + "\n")
    summary = {"prompts": len(records), "pairs": len(kept), **dict(sorted(stats.items()))}
    (args.out / "annotate.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"annotated {len(kept):,} pairs from {len(records):,} prompts -> {args.out / 'preferences.jsonl'}")
    return args.out


def _responses(args: AnnotateArgs, prompts: list[list[dict]], model, tokenizer, device) -> list[list[str]]:
    """Each prompt's responses: the first half from `policy` at the first temperature, the second
    from `policy_b` at the same temperature, or from `policy` at the second one."""
    second_temperature = args.temperatures[0] if args.policy_b is not None else args.temperatures[1]
    if args.responses == 2:  # one answer per prompt per side
        first = answer(model, tokenizer, prompts, args.max_new_tokens, args.temperatures[0], seed=args.seed)
        if args.policy_b is not None:
            model, tokenizer = load_for_sampling(args.policy_b, device)
        second = answer(model, tokenizer, prompts, args.max_new_tokens, second_temperature, seed=args.seed + 1)
        return [[a, b] for a, b in zip(first, second)]
    half = args.responses // 2
    first, _ = sample_answers(model, tokenizer, prompts, args.responses - half, args.max_new_tokens,
                              args.temperatures[0], TOP_P, args.seed, batch_prompts=BATCH_PROMPTS)
    if args.policy_b is not None:
        model, tokenizer = load_for_sampling(args.policy_b, device)
    second, _ = sample_answers(model, tokenizer, prompts, half, args.max_new_tokens, second_temperature, TOP_P,
                               args.seed + 1_000_003, batch_prompts=BATCH_PROMPTS)
    return [a + b for a, b in zip(first, second)]


def _pairs(answers: list[str], stats: Counter) -> list[tuple[str, str]]:
    """Every pair of distinct, non-empty answers, in order; what is skipped is counted."""
    if len(answers) == 2:  # the one pair: say why it is skipped
        a, b = answers
        if a == b:  # nothing to compare
            stats["identical"] += 1
            return []
        if not a or not b:  # an immediate EOS: the chat format has no empty turns to score
            stats["empty_response"] += 1
            return []
        return [(a, b)]
    stats["empty_response"] += sum(not a for a in answers)
    distinct = list(dict.fromkeys(a for a in answers if a))
    stats["identical"] += len(answers) - sum(not a for a in answers) - len(distinct)
    return list(itertools.combinations(distinct, 2))
