"""The pipeline presets: one object per preset holding every stage's settings.

`llamaforge pipeline --preset NAME` runs the stages with these values and writes them, stage by
stage, into `pipeline.json` in the run directory. Each stage's values come from that stage's own
command preset (`llamaforge pretrain --preset demo` trains exactly what the pipeline's pretraining
does), plus the few settings only the pipeline has: how many weekly batches are annotated and how
many held-out prompts the evaluations use.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from llamaforge.config import MODEL_PRESETS
from llamaforge.pipeline.evaluation import EvalPlan
from llamaforge.eval.gatt import RecallPlan
from llamaforge.rlhf import distill, gatt, ppo, rejection_sampling
from llamaforge.train import pretrain, reward, sft


@dataclass(frozen=True)
class AnnotationPlan:
    """Preference collection (paper §3.2.1): weekly batches of fresh prompts, annotated by the world's
    simulated annotators, and the held-out test prompts their test sets come from."""

    batches: int  # weekly batches annotated before the first reward models (each RLHF version adds one)
    batch_size: int  # prompts per weekly batch
    test_prompts: int | None  # held-out prompts per category for the test sets (None: all)
    helpful_responses: int = 2  # samples per helpful prompt, every distinct pair rated (annotate --responses)
    safety_responses: int = 2  # samples per safety prompt, half from the policy, half from the variant


@dataclass(frozen=True)
class RlhfPlan:
    """The RLHF versions (paper §3.2.3): each annotates a fresh weekly batch with the latest model,
    retrains both reward models and runs rejection sampling on that batch's prompts; then PPO, the
    last version, on the next batch's prompts with the last version's reward models."""

    versions: int  # RLHF-V1 ... Vn
    batch_size: int  # prompts of each version's weekly batch
    rejection_prompts: int  # of those, how many get K samples in rejection sampling
    pool_from: int  # from this version on, the best answers of all earlier versions join (paper: V4)
    rejection_sampling: rejection_sampling.RejectionSamplingArgs
    ppo: ppo.PpoArgs
    # "retrain": each version's reward models start from its latest chat model and train on every
    # batch so far; "continue": they train the previous version's reward models further on the new
    # batch alone (a fraction of the time, which otherwise grows with every batch)
    reward_models: Literal["retrain", "continue"] = "retrain"


@dataclass(frozen=True)
class DistillPlan:
    """Safety context distillation (paper §4.2.4): untargeted and targeted from one model, and the
    evaluation of the model before and of both results."""

    prompts: int | None  # adversarial training prompts distilled (None: all)
    distill: distill.DistillArgs
    evaluation: EvalPlan  # the stage's three evaluations


@dataclass(frozen=True)
class PipelinePreset:
    name: str
    vocab_size: int  # the tokenizer the pipeline trains (the pretraining model's vocabulary)
    pretrain: pretrain.PretrainArgs
    sft: sft.SftArgs
    reward: dict[str, reward.RewardArgs]  # each reward model's settings, by kind (helpfulness, safety)
    annotation: AnnotationPlan
    evaluation: EvalPlan  # how every model version is evaluated on the held-out prompts
    rlhf: RlhfPlan
    gatt: gatt.GattArgs  # Ghost Attention after the RLHF versions (paper §3.3)
    gatt_eval: RecallPlan  # its held-out recall-by-turn and attention evaluation
    distill: DistillPlan


def _vocab_size(args: pretrain.PretrainArgs) -> int:
    return MODEL_PRESETS[args.model]().vocab_size


def demo() -> PipelinePreset:
    """The laptop run of the whole recipe (docs/results.md has its measured time on 2 CPU cores)."""
    pretraining = pretrain.demo()
    return PipelinePreset(
        name="demo", vocab_size=_vocab_size(pretraining), pretrain=pretraining, sft=sft.demo(),
        reward={"helpfulness": reward.demo_helpfulness(), "safety": reward.demo()},
        annotation=AnnotationPlan(batches=3, batch_size=400, test_prompts=None, helpful_responses=4,
                                  safety_responses=4),
        evaluation=EvalPlan(prompts=None, samples=2),
        # reward models continued on each new batch: on 2026-12-07 retraining them on every batch took
        # 441 s of the three versions, continuing 91 s, with equal held-out RM accuracy and gold (docs/results.md)
        rlhf=RlhfPlan(versions=3, batch_size=400, rejection_prompts=200, pool_from=3, rejection_sampling=rejection_sampling.demo(),
                     ppo=ppo.demo(), reward_models="continue"),
        gatt=gatt.demo(), gatt_eval=RecallPlan(),
        distill=DistillPlan(prompts=None, distill=distill.demo(), evaluation=EvalPlan(prompts=None, samples=2)),
    )


def smoke() -> PipelinePreset:
    """Every stage in seconds: proves the wiring, not the quality."""
    pretraining = pretrain.smoke()
    return PipelinePreset(
        name="smoke", vocab_size=_vocab_size(pretraining), pretrain=pretraining, sft=sft.smoke(),
        reward={"helpfulness": dataclasses.replace(reward.smoke(), likelihood_weight=1.0), "safety": reward.smoke()},
        annotation=AnnotationPlan(batches=3, batch_size=10, test_prompts=6, helpful_responses=3, safety_responses=3),
        evaluation=EvalPlan(prompts=8, samples=1, best_of_k_prompts=6, best_of_k=2),
        rlhf=RlhfPlan(versions=2, batch_size=10, rejection_prompts=6, pool_from=2, rejection_sampling=rejection_sampling.smoke(),
                     ppo=ppo.smoke(), reward_models="continue"),
        gatt=gatt.smoke(), gatt_eval=RecallPlan(dialogs=4, turns=(1, 2), max_new_tokens=12, attention_dialogs=2,
                                                attribute_dialogs=2),
        distill=DistillPlan(prompts=8, distill=distill.smoke(), evaluation=EvalPlan(prompts=4, samples=1)),
    )


PRESETS = {"demo": demo, "smoke": smoke}
