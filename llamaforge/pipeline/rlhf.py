"""RLHF versions V1 ... Vn as pipeline stages (paper §3.2.3, "Iterative Fine-Tuning").

Each version: a fresh weekly batch of prompts -> preference pairs sampled from the latest chat
model (two temperatures on helpful prompts; against the pretrained model, a variant, on safety
prompts) -> the world's simulated annotators -> both reward models retrained on all batches so far
(one epoch, from the latest chat model: the paper initializes its reward models from chat model
checkpoints and samples each batch from the latest model so that the reward models stay
on-distribution; or, with the plan's `reward_models: continue`, the previous version's reward models
trained further on the new batch alone) -> rejection sampling from the latest model on that batch's
prompts, pooling the best answers of all earlier versions from the version the preset names (the
paper does from V4) -> the gold-judged evaluation every version gets (pipeline/evaluation.py), with
the order-swapped win rate against the SFT model, and its reward models' accuracy on the reward
stage's test pairs (a point of Fig. 6).
"""

from __future__ import annotations

import dataclasses
import json

from llamaforge.data.jsonl import write_jsonl
from llamaforge.pipeline.evaluation import evaluate_checkpoint, gold_judges, held_out_prompts
from llamaforge.pipeline.reward import KINDS, annotate_round, held_out_accuracy, reward_settings, train_reward_model
from llamaforge.pipeline.stage import Stage, StageContext, command_settings
from llamaforge.rlhf import rejection_sampling
from llamaforge.world import World


def version_name(n: int) -> str:
    return f"rlhf_v{n}"


def version_stage(n: int):
    def run(ctx: StageContext):
        world, plan = World(ctx.seed), ctx.preset.rlhf
        before = version_name(n - 1) if n > 1 else None  # the previous version's stage
        latest = ctx.input(before, "model") if before else ctx.input("sft", "model")
        batch = ctx.preset.annotation.batches + n - 1  # the reward stage annotated batches 0 .. batches - 1
        prompts = world.batch(batch, plan.batch_size)

        # preference data from the latest model, and both reward models on all batches so far
        with ctx.timed("annotation"):
            new_pairs = annotate_round(prompts, latest, ctx.input("pretrain", "model"), ctx.out / "annotation", ctx.seed,
                                       seed=batch, helpful_responses=ctx.preset.annotation.helpful_responses,
                                       safety_responses=ctx.preset.annotation.safety_responses)
        preferences = ctx.input(before or "reward", "preferences") + new_pairs
        with ctx.timed("reward models"):
            continuing = plan.reward_models == "continue"
            data = new_pairs if continuing else preferences
            rms = {kind: train_reward_model(ctx.preset.reward, kind, ctx.input(before or "reward", f"rm_{kind}") if continuing
                                            else latest, data, ctx.out / f"rm_{kind}", ctx.seed)
                   for kind in KINDS}
        with ctx.timed("evaluation"):  # paper Fig. 6: accuracy against the weekly batches trained on
            rm_accuracy = {"batches": batch + 1} | {
                kind: held_out_accuracy(rms[kind], ctx.input("reward", f"test_{kind}")) for kind in KINDS}

        # rejection sampling from the latest model on this batch's prompts
        rs_prompts = write_jsonl(ctx.out / "prompts.jsonl", prompts[: plan.rejection_prompts])
        earlier_runs = ctx.input(before, "rejection_sampling_runs") if before else []
        run_dir = ctx.out / "rejection_sampling"
        with ctx.timed("rejection sampling"):
            rejection_sampling.main(dataclasses.replace(
                plan.rejection_sampling, policy=latest, rm_helpfulness=rms["helpfulness"], rm_safety=rms["safety"],
                prompts=[rs_prompts], out=run_dir, pool=earlier_runs if n >= plan.pool_from else [], seed=ctx.seed + n,
            ))
        model = run_dir / "sft" / "model"
        report = json.loads((run_dir / "rejection_sampling.json").read_text())

        # gold-judged evaluation, against the SFT model's answers
        sft_answers = json.loads(ctx.input("sft", "answers").read_text())["answers"]
        prompt_sets = held_out_prompts(ctx.input("world", "data"), ctx.preset.evaluation.prompts)
        with ctx.timed("evaluation"):
            _, metrics = evaluate_checkpoint(
                model, prompt_sets, gold_judges(world), ctx.preset.evaluation, ctx.seed, ctx.out / "eval",
                reference=sft_answers, reward_models=rms,
            )
        metrics["rm_accuracy"] = rm_accuracy
        metrics["rejection_sampling"] = {k: v for k, v in report.items() if k != "sft"} | {"sft_steps": report["sft"]["steps"]}
        outputs = {
            "model": model, "rm_helpfulness": rms["helpfulness"], "rm_safety": rms["safety"], "preferences": preferences,
            "rejection_sampling_runs": earlier_runs + [run_dir], "answers": ctx.out / "eval" / "answers.json",
        }
        return outputs, metrics

    inputs = ("world", "pretrain", "sft", "reward") + ((version_name(n - 1),) if n > 1 else ())
    return Stage(version_name(n), inputs, lambda preset, seed: rlhf_settings(preset, seed, n), run)


def rlhf_settings(preset, seed: int, n: int) -> dict:
    plan = preset.rlhf
    return {
        "version": n,
        "rlhf": {k: v for k, v in dataclasses.asdict(plan).items() if k not in ("rejection_sampling", "ppo")},
        "rejection_sampling": command_settings(plan.rejection_sampling, seed),
        "reward": reward_settings(preset, seed),
        "evaluation": dataclasses.asdict(preset.evaluation),
    }

