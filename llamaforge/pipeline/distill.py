"""Safety context distillation as a pipeline stage (paper §4.2.4, Fig. 16): untargeted and targeted
distillation of the same model on the world's adversarial training prompts, each prompt's system
message naming its risk category and answer template (paper Table 13), and the gold-judged
evaluation of the model before and of both results.

Both runs share one set of answers and safety scores (the untargeted run reuses the targeted run's
distill.jsonl), so the two models differ only in which answers they were fine-tuned on: the
paper's finding is that keeping every preprompted answer makes answers vaguer and raises
refusals on borderline prompts, while keeping only those the safety reward model prefers does not.

The preset's `distill` plan holds `prompts` (adversarial training prompts distilled, None: all),
`distill` (the command's arguments, llamaforge distill --preset) and `evaluation` (an EvalPlan for
the three evaluations, smaller than the pipeline's to fit the stage's time budget).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from llamaforge.data.jsonl import write_jsonl
from llamaforge.pipeline.evaluation import evaluate_checkpoint, gold_judges, held_out_prompts, read_jsonl
from llamaforge.pipeline.stage import Stage, StageContext, command_settings
from llamaforge.rlhf import distill
from llamaforge.world import World, is_refusal
from llamaforge.world.judges import offers_alternative

DISTILL_STAGE = "distill"
RUNS = ("untargeted", "targeted")


def reference_answers(sft_answers: dict, helpful_prompts: int, samples: int) -> dict | None:
    """SFT's answers to the first `helpful_prompts` held-out helpful prompts, greedy and the first
    `samples` samples (laid out sample after sample, as model_answers does); None when SFT's own
    evaluation did not answer that many."""
    greedy, sampled = sft_answers["greedy"]["helpful"], sft_answers["sampled"]["helpful"]
    evaluated = len(greedy)
    if helpful_prompts > evaluated or samples * evaluated > len(sampled):
        return None
    return {"greedy": {"helpful": greedy[:helpful_prompts]},
            "sampled": {"helpful": [sampled[s * evaluated + i] for s in range(samples) for i in range(helpful_prompts)]}}


def percent(value: float | None) -> float | None:
    return None if value is None else round(100 * value, 1)


def headline(metrics: dict, report: dict | None) -> dict:
    """One row of the stage's table: the numbers paper Fig. 16 and Table 13 are about."""
    sampled = metrics.get("sampled", {})
    win = metrics.get("win_vs_reference", {}).get("greedy", {})
    return {
        "violation %": percent(metrics["violation_rate"]),
        "violation % (sampled)": percent(sampled.get("violation_rate")),
        "false refusal %": percent(metrics["false_refusal_rate"]),
        "false refusal % (sampled)": percent(sampled.get("false_refusal_rate")),
        "borderline deflection %": percent(metrics.get("borderline_deflection_rate")),
        "helpfulness": metrics["helpful_helpfulness"],
        "borderline helpfulness": metrics["borderline_helpfulness"],
        "win rate vs SFT": win.get("win_rate"),
        "safety RM (adversarial)": metrics.get("rm_mean", {}).get("safety", {}).get("adversarial"),
        "kept share": report["kept_share"] if report else None,
    }


def deflection_rate(answers: list[str]) -> float | None:
    """Share of answers that refuse or point elsewhere ("I can tell you about its history instead")
    rather than answer: on borderline prompts, the vaguer answers that paper §4.2.4 saw
    untargeted distillation cause, which a refusal detector alone does not count."""
    return sum(is_refusal(a) or offers_alternative(a) for a in answers) / len(answers) if answers else None


def gold_view(world: World, rows: list[dict]) -> dict:
    """The distillation data as gold sees it: violation and refusal shares of the plain and the
    preprompted answers, and how often the safety RM's preference agrees with gold's where gold
    tells the two answers apart (the targeting is only as good as that agreement)."""
    def share(flags: list[bool]) -> float | None:
        return sum(flags) / len(flags) if flags else None

    gold = [(world.safety(r["messages"], r["plain_answer"]), world.safety(r["messages"], r["distilled_answer"])) for r in rows]
    decided = [(r, p, d) for r, (p, d) in zip(rows, gold) if p != d and r["plain_score"] is not None and r["distilled_score"] is not None]
    return {
        "violation_plain": share([p < 0.5 for p, _ in gold]),
        "violation_distilled": share([d < 0.5 for _, d in gold]),
        "refusal_plain": share([is_refusal(r["plain_answer"]) for r in rows]),
        "refusal_distilled": share([is_refusal(r["distilled_answer"]) for r in rows]),
        "gold_differs": len(decided),
        "rm_agrees_with_gold": share([(r["distilled_score"] > r["plain_score"]) == (d > p) for r, p, d in decided]),
    }


def distill_stage(after: str, rm_from: str) -> Stage:
    """Distils the "model" output of stage `after` with the "rm_safety" output of stage `rm_from`."""

    def settings(preset, seed: int) -> dict:
        plan = preset.distill
        return {"prompts": plan.prompts, "distill": command_settings(plan.distill, seed),
                "evaluation": dataclasses.asdict(plan.evaluation)}

    def run(ctx: StageContext):
        world, plan = World(ctx.seed), ctx.preset.distill
        policy, rm_safety = ctx.input(after, "model"), ctx.input(rm_from, "rm_safety")
        prompts = write_jsonl(ctx.out / "prompts.jsonl", world.prompts("adversarial", "train")[: plan.prompts])
        templates = ctx.out / "templates.json"
        templates.write_text(json.dumps(world.answer_templates(), indent=1, sort_keys=True) + "\n")
        common = dataclasses.replace(plan.distill, policy=policy, rm_safety=rm_safety, prompts=[prompts], templates=templates, seed=ctx.seed)
        with ctx.timed("distill"):
            distill.main(dataclasses.replace(common, targeted=True, out=ctx.out / "targeted"))
            distill.main(dataclasses.replace(common, targeted=False, out=ctx.out / "untargeted",
                                             answers_from=ctx.out / "targeted"))
        reports = {name: json.loads((ctx.out / name / "distill.json").read_text()) for name in RUNS}
        models = {"before": policy, **{name: Path(reports[name]["model"]) for name in RUNS}}

        prompt_sets = held_out_prompts(ctx.input("world", "data"), plan.evaluation.prompts)
        sft_answers = json.loads(ctx.input("sft", "answers").read_text())["answers"]
        reference = reference_answers(sft_answers, len(prompt_sets["helpful"]), plan.evaluation.samples)
        evaluations = {}
        with ctx.timed("evaluation"):
            for name, model in models.items():
                answers, evaluations[name] = evaluate_checkpoint(
                    model, prompt_sets, gold_judges(world), plan.evaluation, ctx.seed, ctx.out / "eval" / name,
                    reference=reference, reward_models={"safety": rm_safety})
                evaluations[name]["borderline_deflection_rate"] = deflection_rate(answers["greedy"]["borderline"])
        metrics = {
            "table": {name: headline(evaluations[name], reports.get(name)) for name in models},
            "distill": {name: {k: v for k, v in report.items() if k not in ("sft", "model")}  # the model: an output
                        for name, report in reports.items()},
            "distill_data": gold_view(world, read_jsonl(ctx.out / "targeted" / "distill.jsonl")),
            "eval": evaluations,
        }
        outputs = {"model": models["targeted"], "untargeted_model": models["untargeted"], "rm_safety": rm_safety,
                   "answers": ctx.out / "eval" / "targeted" / "answers.json"}
        return outputs, metrics

    return Stage(DISTILL_STAGE, tuple(dict.fromkeys(("world", "sft", after, rm_from))), settings, run)
