"""Pretraining and supervised fine-tuning as pipeline stages: each runs its command's preset
(`llamaforge pretrain`, `llamaforge sft`) on the world's data; SFT is then evaluated by gold."""

from __future__ import annotations

import dataclasses
import json

from llamaforge.pipeline.evaluation import evaluate_checkpoints, gold_judges, held_out_prompts
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
    sft.main(run)
    summary = json.loads((ctx.out / "summary.json").read_text())
    prompt_sets = held_out_prompts(world, ctx.preset.eval_prompts)
    checkpoints = {"pretrained": pretrained, "sft": ctx.out / "model"}
    evaluation = evaluate_checkpoints(checkpoints, prompt_sets, gold_judges(World(ctx.seed)), ctx.seed, ctx.out)
    with (ctx.out / "metrics.jsonl").open("a") as f:
        f.write(json.dumps({"step": summary["steps"], "split": "eval", **evaluation["sft"]}, sort_keys=True) + "\n")
    metrics = {"steps": summary["steps"], "val_answer_loss": summary["val_loss"], "elapsed_s": summary["elapsed_s"], **evaluation}
    return {"model": ctx.out / "model", "eval": ctx.out / "eval.json"}, metrics


PRETRAIN = Stage("pretrain", ("world", "tokenizer"), lambda preset, seed: command_settings(preset.pretrain, seed), pretrain_stage)
SFT = Stage(
    "sft", ("world", "pretrain"),
    lambda preset, seed: {"sft": command_settings(preset.sft, seed), "eval_prompts": preset.eval_prompts},
    sft_stage,
)
