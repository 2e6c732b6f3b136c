"""`llamaforge pipeline`: the whole recipe as a resumable sequence of stages on the built-in world.

Each stage writes one folder under `--out` and marks it complete with `stage.json` (its headline
metrics), written last; a re-run skips completed stages and re-enters an interrupted one, which
resumes from its own checkpoints. `summary.json` gathers every stage's metrics.
Stages so far: world (export the built-in world's data files), tokenizer (a Llama-2-style BPE on
the world's corpus and demonstrations), pretrain, and sft (with the held-out chat evaluation of the
pretrained and the fine-tuned model), and reward (weekly annotation batches, both reward models
and their evaluation). RLHF joins as it lands.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from llamaforge import annotate
from llamaforge.checkpoint import load_model_and_tokenizer, load_reward_model
from llamaforge.config import MODEL_PRESETS
from llamaforge.data.preferences import read_all
from llamaforge.data.text import read_documents
from llamaforge.eval.chat import Judges, evaluate_chat
from llamaforge.eval.reward import accuracy_by_rating, markdown_table, pair_scores, plot_scores
from llamaforge.tokenizer import B_INST, E_INST, Tokenizer, train_tokenizer
from llamaforge.train import pretrain, reward, sft
from llamaforge.train.pretrain import PretrainArgs
from llamaforge.train.reward import RewardArgs
from llamaforge.train.sft import SftArgs
from llamaforge.world import World, is_refusal
from llamaforge.world.export import ExportArgs
from llamaforge.world.export import main as export_world



@dataclass
class PipelineArgs:
    """Run the Llama 2 recipe end to end on the built-in world: world data, tokenizer, pretraining,
    SFT and the reward models so far."""

    out: Path = Path("runs/pipeline")
    """Run directory: one folder per stage, plus summary.json."""
    preset: Literal["demo", "smoke"] = "demo"
    """demo: the full-size laptop run; smoke: seconds, proves wiring only."""
    seed: int = 0
    """Seed of the world and of every stage."""


def world_stage(args: PipelineArgs, out: Path) -> dict:
    export_world(ExportArgs(out=out, seed=args.seed))
    return {"files": len(list(out.iterdir())), "megabytes": round(sum(f.stat().st_size for f in out.iterdir()) / 1e6, 2)}


def chat_texts(path: Path) -> Iterator[str]:
    """Dialogs rendered with the chat tags, so the tokenizer learns compact pieces for them."""
    with path.open() as lines:
        for line in lines:
            turns = json.loads(line)["messages"]
            yield " ".join(
                f"{B_INST} {m['content']} {E_INST}" if m["role"] != "assistant" else m["content"] for m in turns
            )


def tokenizer_stage(args: PipelineArgs, out: Path) -> dict:
    world = args.out / "world"

    def documents() -> Iterator[str]:
        yield from read_documents([world / "corpus.jsonl"])
        yield from chat_texts(world / "sft_train.jsonl")

    vocab_size = MODEL_PRESETS[PretrainArgs.PRESETS[args.preset]().model]().vocab_size
    train_tokenizer(documents(), vocab_size, out)
    return {"vocab_size": vocab_size}


def pretrain_stage(args: PipelineArgs, out: Path) -> dict:
    preset = PretrainArgs.PRESETS[args.preset]()
    run = dataclasses.replace(
        preset,
        out=out,
        data=[str(args.out / "world" / "corpus.jsonl")],
        tokenizer=args.out / "tokenizer" / "tokenizer.model",
        seed=args.seed,
    )
    pretrain.main(run)
    summary = json.loads((out / "summary.json").read_text())
    keys = ("steps", "final_loss", "val_loss", "val_ppl", "tokens", "tokens_per_s", "elapsed_s", "tco2eq")
    return {key: summary[key] for key in keys}


def read_jsonl(path: Path) -> list[dict]:
    with path.open() as lines:
        return [json.loads(line) for line in lines if line.strip()]


def evaluate_checkpoints(args: PipelineArgs, checkpoints: dict[str, Path], out: Path) -> dict:
    """Each checkpoint's answers to the world's held-out prompts, scored by the world's gold judges
    (never by our own reward models)."""
    world = World(args.seed)
    judges = Judges(helpfulness=world.helpfulness, safety=world.safety, is_refusal=is_refusal)
    limit = EVAL_PROMPTS[args.preset]
    prompt_sets = {
        category: read_jsonl(args.out / "world" / f"prompts_{category}_test.jsonl")[:limit]
        for category in ("helpful", "borderline", "adversarial")
    }
    results = {}
    for name, checkpoint in checkpoints.items():
        model, tokenizer = load_model_and_tokenizer(checkpoint)
        results[name] = evaluate_chat(model, tokenizer, prompt_sets, judges, seed=args.seed)
    (out / "eval.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    return {name: {k: v for k, v in r.items() if k != "examples"} for name, r in results.items()}


def sft_stage(args: PipelineArgs, out: Path) -> dict:
    world = args.out / "world"
    run = dataclasses.replace(
        SftArgs.PRESETS[args.preset](),
        out=out,
        init=args.out / "pretrain" / "model",
        data=[world / "sft_train.jsonl"],
        val_data=[world / "sft_test.jsonl"],
        seed=args.seed,
    )
    sft.main(run)
    summary = json.loads((out / "summary.json").read_text())
    evaluation = evaluate_checkpoints(args, {"pretrained": run.init, "sft": out / "model"}, out)
    with (out / "metrics.jsonl").open("a") as f:
        f.write(json.dumps({"step": summary["steps"], "split": "eval", **evaluation["sft"]}, sort_keys=True) + "\n")
    return {"steps": summary["steps"], "val_answer_loss": summary["val_loss"], "elapsed_s": summary["elapsed_s"], **evaluation}


@dataclass(frozen=True)
class RewardPlan:
    batches: int  # weekly batches of fresh prompts annotated with the SFT model (>= 3: Fig. 6 points)
    batch_size: int  # prompts per weekly batch
    test_prompts: int | None  # held-out prompts per category for the test sets (None: all)


REWARD_PLANS = {"demo": RewardPlan(batches=3, batch_size=400, test_prompts=None), "smoke": RewardPlan(3, 10, 6)}


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
    return path


def annotate_round(args: PipelineArgs, records: list[dict], out: Path, seed: int) -> list[Path]:
    """One annotation round over prompt records; returns its preference files.

    Helpful prompts compare two samples of the SFT model (temperatures 0.7 and 1.1). Adversarial and
    borderline prompts compare the SFT model with the pretrained one, a model variant as in paper
    §3.2.1: two samples of the SFT model, which refuses nearly every hazardous request, made 96% of
    the safety pairs compare two safe answers, leaving the safety RM no unsafe answer to learn from.
    """
    sft, pretrained = args.out / "sft" / "model", args.out / "pretrain" / "model"
    groups = {
        "helpfulness": ([r for r in records if annotate.guideline_of(r) == "helpfulness"], None),
        "safety": ([r for r in records if annotate.guideline_of(r) == "safety"], pretrained),
    }
    files = []
    for guideline, (group, policy_b) in groups.items():
        if group:
            prompts = write_jsonl(out / guideline / "prompts.jsonl", group)
            annotate.main(annotate.AnnotateArgs(
                policy=sft, policy_b=policy_b, prompts=[prompts], out=out / guideline, world_seed=args.seed, seed=seed
            ))
            files.append(out / guideline / "preferences.jsonl")
    return files


def train_reward_model(args: PipelineArgs, kind: str, data: list[Path], out: Path, margin: str = "small") -> Path:
    run = dataclasses.replace(
        RewardArgs.PRESETS[args.preset](), kind=kind, init=args.out / "sft" / "model", data=data, out=out,
        margin=margin, seed=args.seed,
    )
    reward.main(run)
    return out / "model"


def reward_stage(args: PipelineArgs, out: Path) -> dict:
    """Weekly annotation batches with the SFT model, both reward models, and their evaluation:
    Table 8 with the gold judges' own agreement as the ceiling, accuracy against the number of
    batches (Fig. 6), the margin ablation (Table 28), and RM score against gold score."""
    world, plan = World(args.seed), REWARD_PLANS[args.preset]
    batch_files = [
        annotate_round(args, world.batch(k, plan.batch_size), out / f"batch_{k:02d}", seed=k) for k in range(plan.batches)
    ]
    test_prompts = {
        "helpfulness": world.prompts("helpful", "test")[: plan.test_prompts],
        "safety": world.prompts("adversarial", "test")[: plan.test_prompts] + world.prompts("borderline", "test")[: plan.test_prompts],
    }
    tests = {
        name: read_all(annotate_round(args, records, out / f"test_{name}", seed=1000), "error", False)[0]
        for name, records in test_prompts.items()
    }
    train_files = sum(batch_files, [])
    models = {kind: train_reward_model(args, kind, train_files, out / f"rm_{kind}") for kind in ("helpfulness", "safety")}

    rows, points, accuracy = {}, {}, {}
    for kind, rm_dir in models.items():
        rm, tokenizer = load_reward_model(rm_dir), Tokenizer(rm_dir / "tokenizer.model")
        for test, pairs in tests.items():
            chosen, rejected = pair_scores(rm, tokenizer, pairs)
            rows[f"{kind} RM / {test} test"] = accuracy_by_rating(chosen, rejected, [p.rating for p in pairs])
            if test == kind:  # RM score vs the gold score of the same guideline, every response
                gold = [world.utility(list(p.prompt), r, kind) for p in pairs for r in (p.chosen, p.rejected)]
                points[f"{kind} RM"] = (gold, torch.stack([chosen, rejected], dim=1).flatten().tolist())
    for test, pairs in tests.items():  # the ceiling: the gold judge itself, against the noisy annotators
        gold_chosen = torch.tensor([world.utility(list(p.prompt), p.chosen, test) for p in pairs])
        gold_rejected = torch.tensor([world.utility(list(p.prompt), p.rejected, test) for p in pairs])
        rows[f"gold judge / {test} test"] = accuracy_by_rating(gold_chosen, gold_rejected, [p.rating for p in pairs])
    plot_scores(out / "rm_vs_gold.png", points)

    def helpfulness_accuracy(rm_dir: Path) -> float:
        rm, tokenizer = load_reward_model(rm_dir), Tokenizer(rm_dir / "tokenizer.model")
        pairs = tests["helpfulness"]
        return accuracy_by_rating(*pair_scores(rm, tokenizer, pairs), [p.rating for p in pairs])["all"]["accuracy"]

    accuracy["by_batches"] = {
        str(k): helpfulness_accuracy(train_reward_model(args, "helpfulness", sum(batch_files[:k], []), out / f"scaling_{k}"))
        for k in range(1, plan.batches)
    }
    accuracy["by_batches"][str(plan.batches)] = rows["helpfulness RM / helpfulness test"]["all"]["accuracy"]
    accuracy["by_margin"] = {
        margin: helpfulness_accuracy(train_reward_model(args, "helpfulness", train_files, out / f"margin_{margin}", margin))
        for margin in ("none", "large")
    }
    accuracy["by_margin"]["small"] = accuracy["by_batches"][str(plan.batches)]
    table = markdown_table(rows)
    (out / "table8.md").write_text(table + "\n")
    print(table)
    (out / "reward_eval.json").write_text(json.dumps({"table8": rows, **accuracy}, indent=2, sort_keys=True) + "\n")
    return {
        "pairs": {f"batch_{k}": len(read_all(files, "error", False)[0]) for k, files in enumerate(batch_files)}
        | {f"test_{t}": len(p) for t, p in tests.items()},
        "accuracy": {name: table["all"]["accuracy"] for name, table in rows.items()},
        **accuracy,
    }


STAGES: list[tuple[str, Callable[[PipelineArgs, Path], dict]]] = [
    ("world", world_stage),
    ("tokenizer", tokenizer_stage),
    ("pretrain", pretrain_stage),
    ("sft", sft_stage),
    ("reward", reward_stage),
]

# Held-out prompts evaluated per set (the demo uses them all).
EVAL_PROMPTS = {"demo": None, "smoke": 8}


def main(args: PipelineArgs) -> Path:
    args.out.mkdir(parents=True, exist_ok=True)
    summary = {"preset": args.preset, "seed": args.seed, "stages": {}}
    for number, (name, stage) in enumerate(STAGES, start=1):
        stage_dir = args.out / name
        done = stage_dir / "stage.json"
        if done.is_file():
            record = json.loads(done.read_text())
            print(f"[{number}/{len(STAGES)}] {name}: already complete, skipping")
        else:
            print(f"[{number}/{len(STAGES)}] {name}...", flush=True)
            started = time.time()
            stage_dir.mkdir(parents=True, exist_ok=True)
            metrics = stage(args, stage_dir)
            record = {"stage": name, "seconds": round(time.time() - started, 1), "metrics": metrics}
            partial = stage_dir / "stage.json.tmp"
            partial.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
            partial.replace(done)  # atomic: a stage is complete only once this file exists
            print(f"[{number}/{len(STAGES)}] {name}: done in {record['seconds']}s {metrics}")
        summary["stages"][name] = record
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    print(f"wrote {args.out / 'summary.json'}")
    return args.out
