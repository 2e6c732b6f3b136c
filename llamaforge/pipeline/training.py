"""Pretraining and supervised fine-tuning as pipeline stages: each runs its command's preset
(`llamaforge pretrain`, `llamaforge sft`) on the world's data; SFT is then evaluated by gold."""

from __future__ import annotations

import dataclasses
import json

from llamaforge.pipeline.evaluation import evaluate_checkpoint, gold_judges, held_out_prompts
from llamaforge.pipeline.stage import Stage, StageContext, command_settings
from llamaforge.train import pretrain, sft
from llamaforge.world import World


def pretrain_stage(ctx: StageContext):
    run = dataclasses.replace(
        ctx.preset.pretrain,
        out=ctx.out,
        data=[str(ctx.input("world", "data") / "corpus.jsonl")],
        tokenizer=ctx.input("tokenizer", "tokenizer"),
        seed=ctx.seed,
    )
    pretrain.main(run)
    summary = json.loads((ctx.out / "summary.json").read_text())
    keys = ("steps", "final_loss", "val_loss", "val_ppl", "tokens", "tokens_per_s", "elapsed_s", "tco2eq")
    return {"model": ctx.out / "model"}, {key: summary[key] for key in keys}


def sft_stage(ctx: StageContext):
    world = ctx.input("world", "data")
    pretrained = ctx.input("pretrain", "model")
    run = dataclasses.replace(
        ctx.preset.sft, out=ctx.out, init=pretrained, data=[world / "sft_train.jsonl"],
        val_data=[world / "sft_test.jsonl"], seed=ctx.seed,
    )
    with ctx.timed("fine-tuning"):
        sft.main(run)
    summary = json.loads((ctx.out / "summary.json").read_text())
    plan = ctx.preset.evaluation
    prompt_sets, judges = held_out_prompts(world, plan.prompts), gold_judges(World(ctx.seed))
    # the pretrained model, prompted in the chat format, greedy only: where SFT starts from
    with ctx.timed("evaluation"):
        _, pretrained_metrics = evaluate_checkpoint(
            pretrained, prompt_sets, judges, dataclasses.replace(plan, samples=0), ctx.seed, ctx.out / "eval" / "pretrained"
        )
        _, sft_metrics = evaluate_checkpoint(ctx.out / "model", prompt_sets, judges, plan, ctx.seed, ctx.out / "eval" / "sft")
    with (ctx.out / "metrics.jsonl").open("a") as f:
        f.write(json.dumps({"step": summary["steps"], "split": "eval", **sft_metrics}, sort_keys=True) + "\n")
    metrics = {
        "steps": summary["steps"], "val_answer_loss": summary["val_loss"], "elapsed_s": summary["elapsed_s"],
        "pretrained": pretrained_metrics, "sft": sft_metrics,
    }
    return {"model": ctx.out / "model", "answers": ctx.out / "eval" / "sft" / "answers.json"}, metrics


PRETRAIN = Stage("pretrain", ("world", "tokenizer"), lambda preset, seed: command_settings(preset.pretrain, seed), pretrain_stage)
SFT = Stage(
    "sft", ("world", "pretrain"),
    lambda preset, seed: {"sft": command_settings(preset.sft, seed), "evaluation": dataclasses.asdict(preset.evaluation)},
    sft_stage,
)
