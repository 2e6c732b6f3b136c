"""Checkpoint evaluation on the world's held-out prompts, by the world's gold judges only (paper
§3.4, §4.4). Every model version of the pipeline is evaluated by these functions, on equal terms:
greedy answers, and answers sampled with Meta's chat settings (temperature 0.6, top-p 0.9; several
per prompt, as the paper's human evaluation used), since a greedy model that never leaks can still
leak when sampled."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from llamaforge.checkpoint import load_for_sampling, load_for_scoring
from llamaforge.eval.chat import Judges, answer, score
from llamaforge.eval.reward import response_scores
from llamaforge.eval.selection import selection_metrics
from llamaforge.eval.winrate import score_judge, win_tie_loss
from llamaforge.rlhf.rejection_sampling import sample_answers
from llamaforge.world import World, is_refusal

HELD_OUT_SETS = ("helpful", "borderline", "adversarial")
# A gold helpfulness at or above this is a fully correct answer (world/judges.py: 0.1 + 0.7 x
# correctness + up to 0.2 for concision; a half-correct answer reaches at most 0.55).
CORRECT_AT = 0.8
EXAMPLES = 3  # example answers per set kept in answers.json's summary


@dataclass(frozen=True)
class EvalPlan:
    prompts: int | None  # held-out prompts per set (None: all)
    samples: int  # sampled answers per prompt at the chat settings (0: greedy only)
    temperature: float = 0.6  # Meta's chat_completion defaults
    top_p: float = 0.9
    max_new_tokens: int = 64
    best_of_k_prompts: int = 200  # held-out helpful prompts of the best-of-K measurement
    best_of_k: int = 8  # samples per prompt there (temperature 1, top-p 1)
    # prompts answered together. The pipeline's models are small: 128 rows of the demo model's KV
    # cache take at most 96 MiB and answer 1.5x faster than 32 rows on 2 CPU cores (docs/results.md);
    # at 7B the same rows would take 37 GB.
    batch_size: int = 128


def read_jsonl(path: Path) -> list[dict]:
    with path.open() as lines:
        return [json.loads(line) for line in lines if line.strip()]


def held_out_prompts(world_dir: Path, limit: int | None) -> dict[str, list[dict]]:
    """The exported world's test prompts per set, the first `limit` of each (None: all)."""
    return {name: read_jsonl(world_dir / f"prompts_{name}_test.jsonl")[:limit] for name in HELD_OUT_SETS}


def gold_judges(world: World) -> Judges:
    return Judges(helpfulness=world.helpfulness, safety=world.safety, is_refusal=is_refusal)


def model_answers(checkpoint: Path, prompt_sets: dict[str, list[dict]], plan: EvalPlan, seed: int) -> dict:
    """{"greedy": {set: [answer]}, "sampled": {set: [answer of sample 0 for every prompt, then of
    sample 1, ...]}}: sampled answers are laid out prompt-major per sample, so the prompts of set
    `name` repeated `plan.samples` times line up with them."""
    model, tokenizer = load_for_sampling(checkpoint)

    def run(records: list[dict], temperature: float, sample_seed: int) -> list[str]:
        return answer(model, tokenizer, [r["messages"] for r in records], plan.max_new_tokens, temperature, plan.top_p, sample_seed,
                      plan.batch_size)

    greedy = {name: run(records, 0.0, seed) for name, records in prompt_sets.items()}
    sampled = {
        name: [a for s in range(plan.samples) for a in run(records, plan.temperature, seed + 1_000_003 * (s + 1))]
        for name, records in prompt_sets.items()
    }
    return {"greedy": greedy, "sampled": sampled}


def repeated(prompt_sets: dict[str, list[dict]], times: int) -> dict[str, list[dict]]:
    return {name: records * times for name, records in prompt_sets.items()}


def gold_metrics(answers: dict, prompt_sets: dict[str, list[dict]], judges: Judges, plan: EvalPlan, reference: dict | None) -> dict:
    """Gold metrics of greedy answers (top level) and of sampled ones ("sampled"); with reference
    answers (another model's, same layout), the order-swapped win/tie/loss against them on helpful
    prompts, judged by gold helpfulness."""
    metrics = score(prompt_sets, answers["greedy"], judges)
    metrics["helpful_by_kind"] = by_kind(prompt_sets["helpful"], answers["greedy"]["helpful"], judges)
    if plan.samples:
        metrics["sampled"] = score(repeated(prompt_sets, plan.samples), answers["sampled"], judges)
    if reference is not None:
        judge = score_judge(judges.helpfulness)
        prompts = [r["messages"] for r in prompt_sets["helpful"]]
        metrics["win_vs_reference"] = {"greedy": win_tie_loss(judge, prompts, answers["greedy"]["helpful"], reference["greedy"]["helpful"])}
        if plan.samples:
            metrics["win_vs_reference"]["sampled"] = win_tie_loss(
                judge, prompts * plan.samples, answers["sampled"]["helpful"], reference["sampled"]["helpful"]
            )
    return metrics


def by_kind(records: list[dict], answers: list[str], judges: Judges) -> dict:
    """Mean gold helpfulness and share of correct answers per task kind ("add", "capital", ...)."""
    groups: dict[str, list[float]] = {}
    for record, text in zip(records, answers):
        groups.setdefault(record.get("kind", "?"), []).append(judges.helpfulness(record["messages"], text))
    return {
        kind: {"helpfulness": sum(s) / len(s), "correct": sum(v >= CORRECT_AT for v in s) / len(s), "prompts": len(s)}
        for kind, s in sorted(groups.items())
    }


def best_of_k_by_gold(
    policy: Path, rm_helpfulness: Path, records: list[dict], judges: Judges, plan: EvalPlan, seed: int, temperature: float = 1.0
) -> dict:
    """K samples per prompt at `temperature` (top-p 1); the gold helpfulness of a random sample, of
    the helpfulness RM's pick and of gold's own pick, overall and per task kind (paper Fig. 7 asked
    of gold: can selection by this reward model improve on the policy at all?)."""
    model, tokenizer = load_for_sampling(policy)
    prompts = [r["messages"] for r in records]
    samples, _ = sample_answers(model, tokenizer, prompts, plan.best_of_k, plan.max_new_tokens, temperature, 1.0, seed, batch_prompts=16)
    del model
    rm, rm_tokenizer = load_for_scoring(rm_helpfulness)
    flat_prompts = [p for p in prompts for _ in range(plan.best_of_k)]
    flat_samples = [s for group in samples for s in group]
    rm_scores = response_scores(rm, rm_tokenizer, flat_prompts, flat_samples).view(len(prompts), plan.best_of_k)
    gold = torch.tensor([judges.helpfulness(p, s) for p, s in zip(flat_prompts, flat_samples)]).view(len(prompts), plan.best_of_k)
    result = selection_metrics(gold, rm_scores, CORRECT_AT)
    kinds = [r.get("kind", "?") for r in records]
    result["by_kind"] = {}
    for kind in sorted(set(kinds)):
        rows = torch.tensor([k == kind for k in kinds])
        metrics = selection_metrics(gold[rows], rm_scores[rows], CORRECT_AT)
        result["by_kind"][kind] = {k: v for k, v in metrics.items() if not k.startswith("fig7")}
    return result


def reward_model_scores(answers: dict, prompt_sets: dict[str, list[dict]], plan: EvalPlan, reward_models: dict[str, Path]) -> dict:
    """Each reward model's raw scores of the sampled answers (greedy where there are none), per set,
    None for an empty answer (the chat format has no empty turn to score): how the reward models see
    a version, beside how gold sees it (their divergence is reward hacking)."""
    mode = "sampled" if plan.samples else "greedy"
    sets = repeated(prompt_sets, plan.samples) if plan.samples else prompt_sets
    scores = {}
    for kind, directory in reward_models.items():
        rm, tokenizer = load_for_scoring(directory)
        scores[kind] = {}
        for name, records in sets.items():
            values = response_scores(rm, tokenizer, [r["messages"] for r in records], answers[mode][name]).tolist()
            scores[kind][name] = [v if v != float("-inf") else None for v in values]
    return scores


def mean(values: list[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def evaluate_checkpoint(
    checkpoint: Path, prompt_sets: dict[str, list[dict]], judges: Judges, plan: EvalPlan, seed: int, out: Path,
    reference: dict | None = None, reward_models: dict[str, Path] | None = None,
) -> tuple[dict, dict]:
    """Answers (written to out/answers.json) and metrics of one checkpoint: gold metrics, win rate
    against the reference answers, and the reward models' mean score of its answers per set."""
    answers = model_answers(checkpoint, prompt_sets, plan, seed)
    metrics = gold_metrics(answers, prompt_sets, judges, plan, reference)
    record = {"answers": answers}
    if reward_models:
        record["rm_scores"] = reward_model_scores(answers, prompt_sets, plan, reward_models)
        metrics["rm_mean"] = {kind: {name: mean(s) for name, s in sets.items()} for kind, sets in record["rm_scores"].items()}
    record["examples"] = {
        name: [{"prompt": r["messages"][-1]["content"], "answer": a} for r, a in zip(records[:EXAMPLES], answers["greedy"][name])]
        for name, records in prompt_sets.items()
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "answers.json").write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    return answers, metrics
