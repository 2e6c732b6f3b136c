"""`llamaforge annotate`: one round of preference annotation (paper §3.2.1) with the built-in
world's simulated annotators.

Two responses per prompt are sampled from the policy (two temperatures, or two checkpoints); the
world's helpfulness annotator judges helpful prompts and its safety annotator adversarial and
borderline ones, each choosing a response and rating the gap on the paper's 4-level scale. Safety
pairs carry the paper's metadata, and those whose chosen response is unsafe are dropped. Real users
skip this command and bring their own preference files.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from llamaforge.checkpoint import load_model_and_tokenizer
from llamaforge.device import DeviceName, resolve_device
from llamaforge.errors import UserError
from llamaforge.eval.chat import answer


@dataclass
class AnnotateArgs:
    """Sample response pairs from a policy and have the built-in world's annotators rate them."""

    policy: Path
    """Chat checkpoint to sample from."""
    prompts: list[Path]
    """Prompt files of the built-in world ({"messages": [...], "category": ...} per line)."""
    out: Path
    """Directory for preferences.jsonl and annotate.json (statistics)."""
    policy_b: Path | None = None
    """Sample the second response from this checkpoint instead (same temperature)."""
    temperatures: tuple[float, float] = (0.7, 1.1)
    """Temperatures of the two responses (the paper varies temperature and model)."""
    max_new_tokens: int = 64
    """Most tokens per response."""
    world_seed: int = 0
    """Seed of the world the prompts come from."""
    seed: int = 0
    """Seed of sampling and of the annotators' noise."""
    device: DeviceName = "auto"
    """cpu, cuda, or auto."""


def guideline_of(record: dict) -> str:
    return "helpfulness" if record.get("category", "helpful") == "helpful" else "safety"


def main(args: AnnotateArgs) -> Path:
    from llamaforge.world import World  # the simulated annotators

    world = World(args.world_seed)
    records = []
    for path in args.prompts:
        if not path.is_file():
            raise UserError(f"{path}: file not found")
        records += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    device = resolve_device(args.device)
    model, tokenizer = load_model_and_tokenizer(args.policy, device=device)
    prompts = [r["messages"] for r in records]
    first = answer(model, tokenizer, prompts, args.max_new_tokens, args.temperatures[0], seed=args.seed)
    if args.policy_b is not None:
        model, tokenizer = load_model_and_tokenizer(args.policy_b, device=device)
    second_temperature = args.temperatures[0] if args.policy_b is not None else args.temperatures[1]
    second = answer(model, tokenizer, prompts, args.max_new_tokens, second_temperature, seed=args.seed + 1)

    rng = random.Random(args.seed)
    kept, stats = [], Counter()
    for record, a, b in zip(records, first, second):
        guideline = guideline_of(record)
        if a == b:  # nothing to compare
            stats["identical"] += 1
            continue
        if not a or not b:  # an immediate EOS: the chat format has no empty turns to score
            stats["empty_response"] += 1
            continue
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
