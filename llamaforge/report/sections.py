"""The report's sections, each built from what a pipeline run directory holds: the stage records
(stage.json), the training runs' metrics.jsonl and summary.json, the evaluations' answers.json.
A section whose stages have not run says so instead of failing (a run that stopped early still
gets its report). Each puts the paper's number beside ours."""

from __future__ import annotations

import json
from pathlib import Path

from llamaforge import carbon
from llamaforge.report import plots
from llamaforge.report.document import Figure, Section, Table, cell
from llamaforge.train.state import read_metrics

# Paper Table 8, average accuracy % of Meta's reward models on Meta's test sets.
PAPER_TABLE_8 = {"helpfulness RM / helpfulness test": 63.2, "helpfulness RM / safety test": 62.8,
                 "safety RM / helpfulness test": 56.2, "safety RM / safety test": 64.5}


def planned_stages(directory: Path) -> list[str]:
    """The run's stages in pipeline order: those pipeline.json plans, ordered as the pipeline runs
    them (else the stage folders found, in the order they finished)."""
    from llamaforge.pipeline import stages  # the pipeline runs the report: imported when needed
    from llamaforge.pipeline.presets import PRESETS

    plan = directory / "pipeline.json"
    if plan.is_file():
        recorded = json.loads(plan.read_text())
        preset = PRESETS[recorded["preset"]]() if recorded.get("preset") in PRESETS else None
        order = [s.name for s in stages(preset, "reward")] if preset else []
        planned = list(recorded["stages"])
        return sorted(planned, key=lambda name: order.index(name) if name in order else len(order))
    found = sorted(directory.glob("*/stage.json"), key=lambda p: p.stat().st_mtime)
    return [p.parent.name for p in found]


class Run:
    """A pipeline run directory: stage records in pipeline order."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.planned = planned_stages(directory)
        self.records = {name: json.loads((directory / name / "stage.json").read_text())
                        for name in self.planned if (directory / name / "stage.json").is_file()}

    def metrics(self, stage: str) -> dict | None:
        record = self.records.get(stage)
        return record["metrics"] if record else None

    def versions(self) -> list[str]:
        """The chat models evaluated on equal terms, in order: SFT, RLHF-V1..Vn, PPO."""
        names = ["sft"] + sorted(s for s in self.records if s.startswith("rlhf_v"))
        return names + (["rlhf_ppo"] if "rlhf_ppo" in self.records else [])

    def missing(self, *stages: str) -> list[str]:
        return [s for s in stages if s not in self.records]


def version_metrics(run: Run, name: str) -> dict:
    metrics = run.metrics(name)
    return metrics["sft"] if name == "sft" else metrics


def label(name: str) -> str:
    return {"sft": "SFT", "rlhf_ppo": "PPO"}.get(name, name.replace("rlhf_v", "RLHF-V"))


def missing_note(run: Run, stages: list[str]) -> str:
    return f"Missing: {', '.join(stages)} (not run yet in {run.dir})."


def points(records: list[dict], key: str, split: str | None = None) -> list[tuple[float, float]]:
    return [(r["step"], r[key]) for r in records if r.get("split") == split and key in r]


def stages_section(run: Run) -> Section:
    """Stage times, compute and carbon (paper Table 2 beside this run)."""
    section = Section("stages", "Stages, compute and carbon (paper Table 2)")
    rows = []
    for name in run.planned:
        record = run.records.get(name)
        summaries = [json.loads(p.read_text()) for p in sorted((run.dir / name).rglob("summary.json"))] if record else []
        trained = [s for s in summaries if "device_hours" in s]
        parts = (record or {}).get("metrics", {}).get("seconds", {})
        rows.append([name, record["seconds"] if record else None,
                     ", ".join(f"{part} {seconds:.0f}" for part, seconds in parts.items()) or None,
                     sum(s["device_hours"] for s in trained) if trained else None,
                     sum(s["energy_kwh"] for s in trained) if trained else None,
                     sum(s["tco2eq"] for s in trained) if trained else None])
    done = [r for r in rows if r[1] is not None]
    rows.append(["total", sum(r[1] for r in done), None, *(sum(r[i] or 0 for r in done) for i in (3, 4, 5))])
    section.add("Wall seconds per stage (stage.json), where they went, and the training runs' device hours, energy "
                f"and emissions (carbon.py: the paper's PUE {carbon.PUE} and {carbon.CARBON_INTENSITY_KG_PER_KWH} kg "
                "CO2eq/kWh).",
                Table(["stage", "seconds", "of which (s)", "device hours", "kWh", "tCO2eq"], rows))
    paper = carbon.table_2_reproduced()
    section.add("The paper's Table 2 (pretraining on A100-80GB):",
                Table(["model", "GPU hours", "W per GPU", "tCO2eq (paper)"],
                      [[r["model"], r["gpu_hours"], r["watts"], f"{r['published_tco2eq']:.2f}"] for r in paper["rows"]]
                      + [["total", paper["total"]["gpu_hours"], None, f"{paper['total']['published_tco2eq']:.2f}"]]))
    missing = [s for s in run.planned if s not in run.records and s != "report"]
    if missing:
        section.add(missing_note(run, missing))
    return section


def losses_section(run: Run) -> Section:
    section = Section("losses", "Training curves")
    panels = []
    for title, path in (("pretraining", "pretrain/metrics.jsonl"), ("SFT", "sft/metrics.jsonl")):
        records = read_metrics(run.dir / path)
        if records:
            panels.append((title, {"train": points(records, "loss"), "val": points(records, "loss", "val")}))
    rms = {kind: read_metrics(run.dir / "reward" / f"rm_{kind}" / "metrics.jsonl") for kind in ("helpfulness", "safety")}
    if any(rms.values()):
        panels.append(("reward models (ranking loss)", {kind: points(r, "loss") for kind, r in rms.items()}))
    ppo = read_metrics(run.dir / "rlhf_ppo" / "ppo" / "metrics.jsonl")
    if ppo:
        panels.append(("PPO (policy + value loss)", {"loss": points(ppo, "loss")}))
    if panels:
        section.add(Figure("loss_curves", plots.curves(panels), "Loss by optimizer step: pretraining, SFT, both reward models, PPO."))
    else:
        section.add(missing_note(run, ["pretrain", "sft", "reward", "rlhf_ppo"]))
    return section


def reward_section(run: Run) -> Section:
    section = Section("reward-models", "Reward models (paper Table 8, Fig. 6)")
    metrics = run.metrics("reward")
    if metrics is None:
        return section.add(missing_note(run, ["reward"]))
    table8 = run.dir / "reward" / "table8.md"
    accuracy = metrics["accuracy"]
    rows = [[name, 100 * value, PAPER_TABLE_8.get(name)] for name, value in accuracy.items()]
    section.add("Held-out accuracy %, with the world's gold judge as the ceiling, beside the paper's Table 8 "
                "averages (on significantly better pairs the paper's RMs reach 80.7% and 94.3%).",
                Table(["model / test set", "accuracy %", "paper %"], rows))
    if table8.is_file():
        lines = [line for line in table8.read_text().splitlines() if line.startswith("|") and "---" not in line]
        header, *body = ([c.strip() for c in line.strip("|").split("|")] for line in lines)
        section.add("By rating, accuracy % (pairs):", Table(header, body))
    stages = ["reward"] + [v for v in run.versions() if v.startswith("rlhf_v")]
    by_batches = [m["rm_accuracy"] for m in map(run.metrics, stages) if m and "rm_accuracy" in m]
    if len(by_batches) > 1:
        lines = {f"{kind} RM": [(a["batches"], 100 * a[kind]) for a in by_batches] for kind in ("helpfulness", "safety")}
        section.add(Figure("rm_batches", plots.curves([("held-out accuracy %", lines)], "weekly batches trained on"),
                           "Accuracy against the number of weekly batches trained on: the reward stage's reward models, "
                           "then each RLHF version's, on the reward stage's test pairs (paper Fig. 6: it keeps rising)."))
    best = metrics.get("best_of_k_by_gold")
    if best:
        section.add(f"Best of K samples, judged by gold: random {cell(best['random'])}, the helpfulness RM's pick "
                    f"{cell(best['rm_pick'])}, gold's pick {cell(best['best'])} (share of the gap closed "
                    f"{cell(best['gap_closed'])}; RM-gold correlation {cell(best['correlation'])}; within a prompt, the RM "
                    f"orders {cell(best.get('within_prompt_agreement'))} of the sample pairs gold tells apart as gold does).")
    versions = [v for v in run.versions() if v != "sft" and "rm_mean" in (run.metrics(v) or {})]
    if versions:
        spots = {label(v): (run.metrics(v)["sampled"]["helpful_helpfulness"], run.metrics(v)["rm_mean"]["helpfulness"]["helpful"])
                 for v in versions}
        section.add(Figure("rm_vs_gold", plots.scatter(spots, "gold helpfulness (sampled)", "helpfulness RM score (mean)",
                                                        "RM score against gold, per version"),
                           "Where the reward models and gold disagree across versions, the policy is climbing the RM, not gold."))
    return section


def rlhf_section(run: Run) -> Section:
    section = Section("rlhf", "RLHF versions (paper Fig. 7, 11, 20)")
    versions = run.versions()
    if run.metrics("sft") is None or len(versions) == 1:
        return section.add(missing_note(run, ["sft", "rlhf_v1"]))
    rows = []
    for v in versions:
        m = version_metrics(run, v)
        sampled = m.get("sampled", {})
        win = m.get("win_vs_reference", {}).get("sampled", {}).get("win_rate") if v != "sft" else None
        rows.append([label(v), m["helpful_helpfulness"], sampled.get("helpful_helpfulness"), None if win is None else 100 * win,
                     100 * sampled.get("violation_rate", m["violation_rate"]), 100 * sampled.get("false_refusal_rate", m["false_refusal_rate"])])
    section.add("Held-out prompts, gold judges only: helpfulness greedy / sampled (T 0.6, top-p 0.9), the "
                "order-swapped win rate against SFT on helpful prompts (sampled), violation % on adversarial and "
                "false-refusal % on borderline prompts (sampled). The paper's Llama 2-Chat 70B: 36% win / 31.5% tie "
                "against ChatGPT (Fig. 12), violation below 5% (Fig. 17).",
                Table(["model", "helpfulness", "sampled", "win rate vs SFT %", "violation %", "false refusal %"], rows))
    fig7 = {label(v): run.metrics(v)["rejection_sampling"]["fig7_rc"] for v in versions if "rejection_sampling" in (run.metrics(v) or {})}
    if fig7:
        lines = {}
        for name, curve in fig7.items():
            lines[f"{name} max"] = [(int(k), c["max"]) for k, c in curve.items()]
            lines[f"{name} median"] = [(int(k), c["median"]) for k, c in curve.items()]
        panels = [("reward models' Rc over K samples", lines)]
        best = (run.metrics("reward") or {}).get("best_of_k_by_gold", {})
        if "fig7_judge" in best:
            panels.append(("gold helpfulness over K (reward stage)", {
                "max": [(int(k), c["max"]) for k, c in best["fig7_judge"].items()],
                "median": [(int(k), c["median"]) for k, c in best["fig7_judge"].items()]}))
        section.add(Figure("fig7", plots.curves(panels, "K samples"),
                           "Max and median reward among K samples (paper Fig. 7: the gap is what rejection sampling gains)."))
    spots = {}
    for v in versions[1:]:
        m = version_metrics(run, v)
        win = m.get("win_vs_reference", {}).get("sampled", {}).get("win_rate")
        if win is not None:
            spots[label(v)] = (1 - m.get("sampled", m)["violation_rate"], win)
    if spots:
        section.add(Figure("fig11", plots.scatter(spots, "harmlessness (1 - violation rate, gold)", "helpfulness win rate vs SFT (gold)",
                                                   "Versions: helpfulness against harmlessness (paper Fig. 11)"),
                           "Each RLHF version judged by gold (the paper judged with its reward models and GPT-4)."))
    ppo = run.metrics("rlhf_ppo")
    if ppo:
        section.add(Figure("fig20", plots.quantile_boxes(
            {f"{who} ({kind} RM)": ppo["reward_distribution"][kind][who] for kind in ("helpfulness", "safety") for who in ("sft", "ppo")},
            "Reward model scores of held-out answers"), "SFT's and PPO's answers under the final reward models (paper Fig. 20)."))
        records = read_metrics(run.dir / "rlhf_ppo" / "ppo" / "metrics.jsonl")
        section.add(Figure("ppo_curves", plots.curves([
            ("PPO reward (train batch)", {"Rc": points(records, "rc"), "Rh": points(records, "rh"), "Rs": points(records, "rs")}),
            ("held-out reward", {"Rc": points(records, "reward", "val")}),
            ("KL(pi || pi_0) per answer", {"train": points(records, "kl"), "held-out": points(records, "kl", "val")})]),
            "PPO's reward and KL by gradient step."))
        split, best = ppo["ppo"]["seconds_per_iteration"], ppo["ppo"]["best_iteration"]
        kept = ("the starting policy kept (no later evaluation beat its held-out reward by --min-gain)" if best == 0
                else f"the policy of iteration {best} kept (its held-out reward the best)")
        stop = f"stopped early: {ppo['ppo']['stop_reason']}" if ppo["ppo"].get("stopped_early") else "ran every iteration"
        section.add(f"PPO: {ppo['ppo']['iterations']} iterations, {stop}; {kept}. Seconds per iteration: "
                    + ", ".join(f"{k.removesuffix('_s')} {v:.2f}" for k, v in split.items()) + ".")
    return section


def model_table(rows: dict[str, dict], keys: list[str], headers: list[str] | None = None) -> Table:
    """A table with a row per model: {model: {key: value}} read at `keys` (blank where a model lacks one)."""
    return Table(["model", *(headers or keys)], [[name, *[row.get(k) for k in keys]] for name, row in rows.items()])


GATT_MODELS = {"without_gatt": "without GAtt", "with_gatt": "with GAtt"}


def by_turn_rows(by_model: dict, scale: float = 1.0) -> dict:
    """{model label: {turn: value × scale}}, without GAtt first."""
    order = [m for m in GATT_MODELS if m in by_model] + [m for m in by_model if m not in GATT_MODELS]
    return {GATT_MODELS.get(m, m): {t: v * scale for t, v in by_model[m].items()} for m in order}


def gatt_section(run: Run) -> Section:
    from llamaforge.pipeline.gatt import ATTRIBUTE_DIALOGS  # the pipeline runs the report: imported when needed

    section = Section("gatt", "Ghost Attention (paper §3.3, Fig. 10)")
    metrics = run.metrics("gatt")
    if metrics is None:
        return section.add(missing_note(run, ["gatt"]))
    tables = (
        (by_turn_rows(metrics.get("recall", {}), 100), "Constraint recall % by turn on held-out instructions (paper: "
         "turns 2/4/6/20 at 100/10/0/0% without GAtt, 100% at every turn with it)."),
        (by_turn_rows(metrics.get("helpfulness_by_turn", {}).get("test", {})), "Gold helpfulness of the same answers "
         "by turn: an answer can follow the instruction and ignore the question."),
    )
    by_kind = metrics.get("recall_by_kind", {}).get("test", {})
    kind_rows = {}
    for kind in sorted({k for by_model in by_kind.values() for k in by_model}):
        rows = by_turn_rows({m: by_model[kind] for m, by_model in by_kind.items() if kind in by_model}, 100)
        kind_rows.update({f"{kind}, {label}": row for label, row in rows.items()})
    tables += ((kind_rows, "The same recall % for each kind of constraint alone: GAtt can hold over the turns only what "
                "the model follows when the instruction is given (turn 1)."),)
    attribute_rows = {}
    for condition, label in ATTRIBUTE_DIALOGS.items():
        rows = by_turn_rows(metrics.get("attribute_recall", {}).get(condition, {}), 100)
        attribute_rows.update({f"{label}, {model}": row for model, row in rows.items()})
    tables += ((attribute_rows, "Recall % of a character alone, the paper's kind of attribute (Table 30 measured "
                "public figures and hobbies: 100/10/0/0% at turns 2/4/6/20 without GAtt, 100% with it), on held-out "
                "dialogs whose questions name no one else, and whose questions each name another person of the world."),)
    for by_turn, caption in tables:
        if by_turn:
            turns = sorted({t for r in by_turn.values() for t in r}, key=int)
            section.add(caption, model_table(by_turn, turns, [f"turn {t}" for t in turns]))
    figure = run.dir / "gatt" / "attention.png"
    if figure.is_file():
        section.add(Figure("gatt_attention", figure.read_bytes(), "Attention of the last turn's answer on the system message (paper Fig. 10)."))
    return section


def distill_section(run: Run) -> Section:
    section = Section("distillation", "Safety context distillation (paper §4.2.4)")
    metrics = run.metrics("distill")
    if metrics is None:
        return section.add(missing_note(run, ["distill"]))
    table = metrics.get("table", {})
    if table:
        columns = sorted({k for row in table.values() for k in row})
        section.add("Untargeted distillation makes answers vaguer and refusals more frequent; targeting with the "
                    "safety RM keeps only the distilled answers it prefers (the paper's Fig. 16).", model_table(table, columns))
    return section


def examples_section(run: Run) -> Section:
    section = Section("examples", "Example answers")
    shown = False
    for v in run.versions():
        path = run.dir / (run.records[v]["outputs"].get("answers", "")) if v in run.records else None
        if path is None or not path.is_file():
            continue
        examples = json.loads(path.read_text()).get("examples", {})
        rows = [[kind, e["prompt"], e["answer"]] for kind, items in examples.items() for e in items[:2]]
        if rows:
            section.add(f"{label(v)} (greedy):", Table(["set", "prompt", "answer"], rows))
            shown = True
    return section if shown else section.add(missing_note(run, ["sft"]))


SECTIONS = (stages_section, losses_section, reward_section, rlhf_section, gatt_section, distill_section, examples_section)
