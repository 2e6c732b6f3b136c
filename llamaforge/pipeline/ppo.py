"""The last RLHF version: PPO on the last rejection-sampling model (paper §3.2.3), with the last
version's reward models, on a fresh weekly batch of prompts; evaluated like every version (gold
helpfulness, violation and false-refusal %, order-swapped win rate against SFT, the reward models'
scores of its answers), plus the shift of the reward distribution from SFT to PPO (paper Fig. 20).
"""

from __future__ import annotations

import dataclasses
import json

from llamaforge.data.jsonl import write_jsonl
from llamaforge.pipeline.evaluation import (
    evaluate_checkpoint, gold_judges, held_out_prompts, reward_model_scores,
)
from llamaforge.pipeline.rlhf import version_name
from llamaforge.pipeline.stage import Stage, StageContext, command_settings
from llamaforge.rlhf import ppo
from llamaforge.train.state import read_metrics
from llamaforge.world import World

PPO_STAGE = "rlhf_ppo"
TIME_KEYS = ("generate_s", "score_s", "train_s")


def quantiles(values: list[float | None]) -> dict:
    """Mean and the 10/25/50/75/90th percentiles of the non-missing values (Fig. 20's distribution)."""
    values = sorted(v for v in values if v is not None)
    if not values:
        return {}
    at = lambda q: values[min(int(q * len(values)), len(values) - 1)]  # noqa: E731
    return {"mean": sum(values) / len(values), **{f"p{round(100 * q)}": at(q) for q in (0.1, 0.25, 0.5, 0.75, 0.9)}}


def ppo_report(out) -> dict:
    """PPO's headline numbers from its run directory: iterations, KL spent, reward, time split."""
    summary = json.loads((out / "summary.json").read_text())
    steps = [r for r in read_metrics(out / "metrics.jsonl") if r.get("split") != "val"]
    seconds = {key: sum(r[key] for r in steps) / max(len(steps), 1) for key in TIME_KEYS}
    return {
        "iterations": summary["iterations"], "stopped_early": summary["stopped_early"], "stop_reason": summary["stop_reason"],
        "held_out_kl": summary["held_out_kl"],
        "best_iteration": summary["best_iteration"], "held_out_reward": summary["held_out_reward"],
        "kl_last": steps[-1]["kl"] if steps else None, "rc_first": steps[0]["rc"] if steps else None,
        "rc_last": steps[-1]["rc"] if steps else None, "seconds_per_iteration": seconds,
        "alerts": sum("alert" in r for r in steps),
    }


def ppo_run(reward: str):
    def run(ctx: StageContext):
        world, plan, last = World(ctx.seed), ctx.preset.rlhf, version_name(ctx.preset.rlhf.versions)
        rms = {"helpfulness": ctx.input(last, "rm_helpfulness"), "safety": ctx.input(last, "rm_safety")}
        batch = ctx.preset.annotation.batches + plan.versions  # the next weekly batch after the last version's
        prompts = write_jsonl(ctx.out / "prompts.jsonl", world.batch(batch, plan.batch_size))
        with ctx.timed("ppo"):
            ppo.main(dataclasses.replace(
                plan.ppo, policy=ctx.input(last, "model"), rm_helpfulness=rms["helpfulness"], rm_safety=rms["safety"],
                prompts=[prompts], out=ctx.out / "ppo", seed=ctx.seed, reward=reward,
            ))
        model = ctx.out / "ppo" / "model"

        sft_answers = json.loads(ctx.input("sft", "answers").read_text())["answers"]
        prompt_sets = held_out_prompts(ctx.input("world", "data"), ctx.preset.evaluation.prompts)
        with ctx.timed("evaluation"):
            _, metrics = evaluate_checkpoint(
                model, prompt_sets, gold_judges(world), ctx.preset.evaluation, ctx.seed, ctx.out / "eval",
                reference=sft_answers, reward_models=rms,
            )
        # Fig. 20: the same reward models' scores of SFT's and PPO's answers
        answers = json.loads((ctx.out / "eval" / "answers.json").read_text())
        sft_scores = reward_model_scores(sft_answers, prompt_sets, ctx.preset.evaluation, rms)
        metrics["reward_distribution"] = {
            kind: {"sft": quantiles([v for s in sft_scores[kind].values() for v in s]),
                   "ppo": quantiles([v for s in answers["rm_scores"][kind].values() for v in s])}
            for kind in rms
        }
        metrics["ppo"] = ppo_report(ctx.out / "ppo")
        outputs = {"model": model, "rm_helpfulness": rms["helpfulness"], "rm_safety": rms["safety"],
                   "answers": ctx.out / "eval" / "answers.json"}
        return outputs, metrics

    return run


def ppo_stage(versions: int, reward: str = "piecewise") -> Stage:
    """PPO after the last rejection-sampling version; `reward` other than piecewise: an ablation
    stage (paper §4.2: one reward model alone), named after it."""
    name = PPO_STAGE if reward == "piecewise" else f"ablation_ppo_{reward}"

    def settings(preset, seed: int) -> dict:
        return {"ppo": command_settings(dataclasses.replace(preset.rlhf.ppo, reward=reward), seed),
                "evaluation": dataclasses.asdict(preset.evaluation)}

    return Stage(name, ("world", "sft", version_name(versions)), settings, ppo_run(reward))
