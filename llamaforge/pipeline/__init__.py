"""`llamaforge pipeline`: the whole recipe as a resumable sequence of stages on the built-in world.

Each stage writes one folder under `--out` and its record (`stage.json`, see records.py) last. A
re-run skips a stage whose record holds the settings and upstream records it would be given now,
re-enters an interrupted stage (which resumes from its own checkpoints), and refuses, naming the
stage and the setting, a run directory made with other settings — unless `--from STAGE` asks to
re-run that stage and every stage after it. `pipeline.json` holds every stage's settings,
`summary.json` every stage's record.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import tyro

from llamaforge.errors import UserError
from llamaforge.pipeline.foundation import TOKENIZER, WORLD
from llamaforge.pipeline.presets import PRESETS, PipelinePreset
from llamaforge.pipeline.records import RECORD, first_difference, normalized, read_record, record_hash, write_record
from llamaforge.pipeline.reward import MARGIN_ABLATION, REWARD
from llamaforge.pipeline.distill import distill_stage
from llamaforge.pipeline.gatt import GATT_STAGE, gatt_stage
from llamaforge.pipeline.ppo import PPO_STAGE, ppo_stage
from llamaforge.pipeline.report import report_stage
from llamaforge.pipeline.rlhf import version_stage
from llamaforge.pipeline.stage import Stage, StageContext
from llamaforge.pipeline.training import PRETRAIN, SFT

PLAN = "pipeline.json"


def stages(preset: PipelinePreset, ablation: str = "none") -> list[Stage]:
    """The recipe's stages in order; the preset says how many RLHF versions there are. The reward
    ablation adds the margin ablation of the helpfulness RM (Table 28) and PPO with each reward model
    alone, from the same start (paper §4.2)."""
    versions = [version_stage(n) for n in range(1, preset.rlhf.versions + 1)]
    ablations = ([MARGIN_ABLATION] + [ppo_stage(preset.rlhf.versions, reward) for reward in ("helpfulness", "safety")]
                 if ablation == "reward" else [])
    recipe = [WORLD, TOKENIZER, PRETRAIN, SFT, REWARD, *versions, ppo_stage(preset.rlhf.versions),
              gatt_stage(PPO_STAGE), distill_stage(GATT_STAGE, PPO_STAGE), *ablations]
    return [*recipe, report_stage([stage.name for stage in recipe])]


@dataclass
class PipelineArgs:
    """Run the Llama 2 recipe end to end on the built-in world: world data, tokenizer, pretraining,
    SFT, the reward models, the RLHF versions (rejection sampling, then PPO), Ghost Attention,
    safety context distillation and the report."""

    out: Path = Path("runs/pipeline")
    """Run directory: one folder per stage, plus pipeline.json (settings) and summary.json."""
    preset: Literal["demo", "smoke"] = "demo"
    """demo: the full-size laptop run; smoke: seconds, proves wiring only."""
    seed: int = 0
    """Seed of the world and of every stage."""
    ablation: Literal["none", "reward"] = "none"
    """reward: also the helpfulness RM without and with a large rating margin (Table 28), and PPO with the helpfulness RM
    alone and with the safety RM alone (paper §4.2); outside the demo's time budget."""
    from_stage: Annotated[str | None, tyro.conf.arg(name="from")] = None
    """Re-run this stage and every stage after it (world, tokenizer, pretrain, sft, reward, rlhf_v1, ..., rlhf_ppo, gatt, distill, report)."""


def recorded_settings(run_dir: Path, stage: Stage) -> dict | None:
    """The settings a stage folder was made with: its record's, or, for a stage that was started but
    not finished, those pipeline.json holds for it."""
    record = read_record(run_dir / stage.name)
    if record is not None:
        return record["settings"]
    plan = run_dir / PLAN
    if (run_dir / stage.name).is_dir() and plan.is_file():
        return json.loads(plan.read_text())["stages"].get(stage.name)
    return None


def refusal(run_dir: Path, stage: Stage, what: str) -> UserError:
    return UserError(f"{run_dir / stage.name}: {what}; use a new --out or --from {stage.name}")


def check_settings(run_dir: Path, stages: list[Stage], settings: dict[str, dict]) -> None:
    """Refuse, before anything is written, a run directory whose stages were made with other settings."""
    for stage in stages:
        recorded = recorded_settings(run_dir, stage)
        difference = first_difference(recorded, settings[stage.name]) if recorded is not None else None
        if difference:
            key, was, asked = difference
            raise refusal(run_dir, stage, f"recorded {key} {json.dumps(was)}, asked {json.dumps(asked)}")


def main(args: PipelineArgs) -> Path:
    preset: PipelinePreset = PRESETS[args.preset]()
    all_stages = stages(preset, args.ablation)
    names = [stage.name for stage in all_stages]
    if args.from_stage is not None and args.from_stage not in names:
        raise UserError(f"--from {args.from_stage!r}: unknown stage (stages: {', '.join(names)})")
    first_rerun = names.index(args.from_stage) if args.from_stage else len(all_stages)
    settings = {stage.name: normalized(stage.settings(preset, args.seed)) for stage in all_stages}
    recorded_preset = json.loads((args.out / PLAN).read_text()).get("preset") if (args.out / PLAN).is_file() else None
    if first_rerun and recorded_preset not in (None, preset.name):  # say so before some setting it changes
        raise UserError(f"{args.out}: made with --preset {recorded_preset}, asked {preset.name}; "
                        f"use a new --out or --from {names[0]}")
    check_settings(args.out, all_stages[:first_rerun], settings)

    args.out.mkdir(parents=True, exist_ok=True)
    for stage in all_stages[first_rerun:]:  # --from: these start over, with nothing of the old run
        shutil.rmtree(args.out / stage.name, ignore_errors=True)
    plan = {"preset": preset.name, "seed": args.seed, "stages": settings}
    (args.out / PLAN).write_text(json.dumps(plan, indent=2, sort_keys=True) + "\n")

    records: dict[str, dict] = {}
    for number, stage in enumerate(all_stages, start=1):
        label = f"[{number}/{len(all_stages)}] {stage.name}"
        inputs = {name: record_hash(records[name]) for name in stage.inputs}
        record = read_record(args.out / stage.name)
        if record is not None:
            if record["inputs"] != inputs:
                changed = next(name for name in inputs if record["inputs"].get(name) != inputs[name])
                raise refusal(args.out, stage, f"its input {changed} changed since it ran")
            print(f"{label}: already complete, skipping")
        else:
            record = run_stage(args, preset, stage, settings[stage.name], inputs, records, label)
        records[stage.name] = record
    summary = {"preset": preset.name, "seed": args.seed, "stages": records}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    print(f"wrote {args.out / 'summary.json'}; report: {args.out / records['report']['outputs']['html']}")
    return args.out


def run_stage(args: PipelineArgs, preset: PipelinePreset, stage: Stage, settings: dict, inputs: dict,
              records: dict[str, dict], label: str) -> dict:
    out = args.out / stage.name
    unfinished = out.is_dir() and any(out.iterdir())  # a run stopped inside this stage
    print(f"{label}..." + (" (an earlier attempt did not finish: running it again; training resumes from its last "
                           "checkpoint)" if unfinished else ""), flush=True)
    started = time.time()
    out.mkdir(parents=True, exist_ok=True)
    context = StageContext(args.out, out, preset, args.seed, {name: records[name] for name in stage.inputs})
    outputs, metrics = stage.run(context)
    if context.parts:
        metrics["seconds"] = {part: round(seconds, 1) for part, seconds in context.parts.items()}
    record = {
        "stage": stage.name,
        "settings": settings,
        "inputs": inputs,
        "outputs": {key: relative(args.out, value) for key, value in outputs.items()},
        "metrics": metrics,
        "seconds": round(time.time() - started, 1),
    }
    write_record(out, record)
    # the headline numbers only: every metric, nested ones too, is in the record
    headline = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items()
                         if isinstance(v, (int, float, str)) and not isinstance(v, bool))
    print(f"{label}: done in {record['seconds']}s{': ' + headline if headline else ''} (metrics: {out / RECORD})")
    return record


def relative(run_dir: Path, value: Path | list[Path]) -> str | list[str]:
    if isinstance(value, list):
        return [relative(run_dir, v) for v in value]
    return str(Path(value).relative_to(run_dir))
