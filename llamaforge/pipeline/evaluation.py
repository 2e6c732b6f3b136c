"""Checkpoint evaluation on the world's held-out prompts, by the world's gold judges only (paper
§3.4, §4.4). Every model version of the pipeline is evaluated by these functions, on equal terms."""

from __future__ import annotations

import json
from pathlib import Path

from llamaforge.checkpoint import load_model_and_tokenizer
from llamaforge.eval.chat import Judges, evaluate_chat
from llamaforge.world import World, is_refusal

HELD_OUT_SETS = ("helpful", "borderline", "adversarial")


def read_jsonl(path: Path) -> list[dict]:
    with path.open() as lines:
        return [json.loads(line) for line in lines if line.strip()]


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
    return path


def held_out_prompts(world_dir: Path, limit: int | None) -> dict[str, list[dict]]:
    """The exported world's test prompts per set, the first `limit` of each (None: all)."""
    return {name: read_jsonl(world_dir / f"prompts_{name}_test.jsonl")[:limit] for name in HELD_OUT_SETS}


def gold_judges(world: World) -> Judges:
    return Judges(helpfulness=world.helpfulness, safety=world.safety, is_refusal=is_refusal)


def evaluate_checkpoints(checkpoints: dict[str, Path], prompt_sets: dict[str, list[dict]], judges: Judges, seed: int, out: Path) -> dict:
    """Each checkpoint's greedy answers to the prompt sets, scored by the judges; the full results
    (with example answers) go to out/eval.json, the headline metrics are returned."""
    results = {}
    for name, checkpoint in checkpoints.items():
        model, tokenizer = load_model_and_tokenizer(checkpoint)
        results[name] = evaluate_chat(model, tokenizer, prompt_sets, judges, seed=seed)
    (out / "eval.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    return {name: {k: v for k, v in r.items() if k != "examples"} for name, r in results.items()}
