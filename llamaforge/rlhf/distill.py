"""`llamaforge distill`: targeted safety context distillation (paper §4.2.4).

sample (each adversarial prompt answered twice by the policy: as asked, and with a safety
preprompt as system message; the preprompt names the prompt's risk category and its answer
template, paper Table 13) -> score (the safety reward model scores both answers against the prompt
WITHOUT the preprompt: the context a deployed model sees) -> keep (targeted: the preprompted
answer only where it scores higher than the plain one; untargeted: every one) -> fine-tune (the
SFT stage on the prompts without the preprompt and the kept answers, so the model learns to
answer as if it had been given the preprompt).

Any prompt file is accepted (a record without a risk category gets the generic preprompt alone);
the paper distils adversarial prompts only, and so does the pipeline.

Why targeted: the paper found that distilling every preprompted answer made answers vaguer and
raised refusals on benign and borderline prompts; keeping an answer only where the safety reward
model prefers it leaves the answers that were already good alone (paper Fig. 16).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from llamaforge.checkpoint import check_checkpoints, load_for_sampling, load_for_scoring
from llamaforge.data.jsonl import jsonl_records, write_jsonl
from llamaforge.data.prompts import read_prompts
from llamaforge.device import DeviceName, resolve_device
from llamaforge.errors import UserError
from llamaforge.eval.reward import response_scores
from llamaforge.flags import OptionalPath, RequiredPath, RequiredPaths
from llamaforge.rlhf.rejection_sampling import sample_answers
from llamaforge.train import sft

PREPROMPT = "You are a safe and responsible assistant."  # paper §4.2.4's example preprompt
# For a risk category without a template of its own: the paper's template structure (Table 13),
# refuse, say why, offer something safe.
GENERIC_TEMPLATE = "Refuse to give instructions that could cause harm, say why, and offer safe information instead."


@dataclass
class DistillArgs(sft.FinetuneOptions):
    """Safety context distillation: fine-tune on the answers the policy gives with a safety preprompt, without it."""

    policy: RequiredPath = None
    """Chat checkpoint that answers and is fine-tuned."""
    rm_safety: RequiredPath = None
    """Safety reward model that decides which preprompted answers to keep (targeted)."""
    prompts: RequiredPaths = field(default_factory=list)
    """Prompt files, {"messages": [...], "category": ..., "risk_category": "..."} per line (risk_category optional); the paper distils adversarial prompts."""
    out: Path = Path("runs/distill")
    """Run directory: distill.jsonl, train.jsonl, distill.json, sft/ (sft/model: the result)."""
    preset: str = "demo"
    """Defaults for every option: demo, smoke, llama2_7b (flags override them)."""
    targeted: bool = True
    """Keep a preprompted answer only where the safety RM scores it above the plain answer (--no-targeted: keep all)."""
    preprompt: str = PREPROMPT
    """Generic safety preprompt, the start of every distillation system message."""
    templates: OptionalPath = None
    """JSON file {risk category: answer template}; a category without one gets a generic template."""
    answers_from: OptionalPath = None
    """Reuse the answers and safety scores of an earlier distill run directory (same prompts and RM) instead of sampling."""
    temperature: float = 0.6
    """Sampling temperature of both answers (Meta's chat default)."""
    top_p: float = 0.9
    """Nucleus sampling mass."""
    max_new_tokens: int = 64
    """Most tokens per answer."""
    batch_prompts: int = 32
    """Prompts per generation batch."""
    seed: int = 0
    """Seed of sampling and fine-tuning."""
    device: DeviceName = "auto"
    """cpu, cuda, or auto."""

    PRESETS: ClassVar[dict] = {}


def demo() -> DistillArgs:
    """The world's ~200 adversarial training prompts: the kept answers fill one or two 16-row steps
    per epoch, so 3 epochs, set here rather than taken from the SFT preset (measured: 3 steps targeted, 6 untargeted).
    LR 1e-4, as rejection sampling's fine-tuning (rejection_sampling.demo): a few steps of a fresh
    AdamW at the SFT preset's 1e-3 move every weight by about the learning rate whatever the data.
    At 1e-3, two GAtt models of the same run lost up to 0.10 of held-out gold helpfulness and their
    borderline false refusals swung from 12% to 0% (untargeted) and 47% (targeted) from ~40-200
    answers; at 1e-4 both kept violations at 0-0.8% with at most 0.025 of helpfulness lost and
    false refusals within 9 points of the start (docs/results.md)."""
    return DistillArgs(preset="demo", max_new_tokens=64, sft_preset="demo", epochs=3, lr=1e-4)


def smoke() -> DistillArgs:
    return DistillArgs(preset="smoke", max_new_tokens=16, sft_preset="smoke", max_steps=2)


def llama2_7b() -> DistillArgs:
    """The paper does not give the sampling settings of distillation; Meta's chat defaults."""
    return DistillArgs(preset="llama2_7b", max_new_tokens=1024, batch_prompts=8, sft_preset="llama2_7b_sft")


DistillArgs.PRESETS.update(demo=demo, smoke=smoke, llama2_7b=llama2_7b)


def safety_preprompt(preprompt: str, risk_category: str | None, templates: dict[str, str]) -> str:
    """The system message answers are distilled from: the generic preprompt and, for a prompt with a
    risk category, the category's name and its answer template (paper §4.2.4, Table 13)."""
    if not risk_category:
        return preprompt
    template = templates.get(risk_category, GENERIC_TEMPLATE)
    return f"{preprompt} The next question belongs to the risk category '{risk_category}'. {template}"


def with_system(messages: list[dict], system: str) -> list[dict]:
    """The prompt with `system` as its system message, ahead of any system message it already has."""
    if messages[0]["role"] == "system":
        return [{"role": "system", "content": f"{system}\n{messages[0]['content']}"}, *messages[1:]]
    return [{"role": "system", "content": system}, *messages]


def keep_distilled(plain_scores: list[float], distilled_scores: list[float], targeted: bool) -> list[bool]:
    """Which preprompted answers to train on. Never an empty one (scored -inf: nothing to train on);
    targeted, only one the safety RM scores strictly above the plain answer (paper §4.2.4)."""
    return [math.isfinite(d) and (not targeted or d > p) for p, d in zip(plain_scores, distilled_scores)]


def score_or_minus_inf(score: float | None) -> float:
    """A recorded score; None (an empty answer, not JSON-representable as -inf) back to -inf."""
    return float("-inf") if score is None else score


def read_templates(path: Path | None) -> dict[str, str]:
    if path is None:
        return {}
    if not path.is_file():
        raise UserError(f"{path}: not found (--templates takes a JSON file of risk category -> answer template)")
    try:
        templates = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: not JSON ({err.msg}, line {err.lineno})") from None
    if not isinstance(templates, dict) or not all(isinstance(v, str) for v in templates.values()):
        raise UserError(f"{path}: expected a mapping of risk category to template text")
    return templates


def earlier_answers(run: Path, records: list[dict]) -> list[dict]:
    """The answers and scores of an earlier run on the same prompts (--answers-from)."""
    path = run / "distill.jsonl"
    if not path.is_file():
        raise UserError(f"{path}: not found (--answers-from takes an earlier distill run directory)")
    rows = [row for _, row in jsonl_records(path)]
    if [r["messages"] for r in rows] != [r["messages"] for r in records]:
        raise UserError(f"{path}: answers other prompts than --prompts")
    return rows


def sample_and_score(args: DistillArgs, records: list[dict], templates: dict[str, str], device) -> tuple[list[dict], dict]:
    """Per prompt: its system message, both answers and their safety scores; and timings."""
    started = time.perf_counter()
    plain_prompts = [r["messages"] for r in records]
    systems = [safety_preprompt(args.preprompt, r.get("risk_category"), templates) for r in records]
    model, tokenizer = load_for_sampling(args.policy, device)
    answers = {}
    for name, prompts in (("plain", plain_prompts), ("distilled", [with_system(p, s) for p, s in zip(plain_prompts, systems)])):
        # the same seed for both: the answers differ by the preprompt, not by luck of the draw
        groups, _ = sample_answers(model, tokenizer, prompts, 1, args.max_new_tokens, args.temperature, args.top_p,
                                   args.seed, args.batch_prompts)
        answers[name] = [g[0] for g in groups]
    del model
    sampling_s = time.perf_counter() - started

    started = time.perf_counter()
    rm, rm_tokenizer = load_for_scoring(args.rm_safety, device)
    scores = {name: response_scores(rm, rm_tokenizer, plain_prompts, texts).tolist() for name, texts in answers.items()}
    rows = [
        {"messages": r["messages"], "risk_category": r.get("risk_category"), "system": s,
         **{f"{name}_answer": answers[name][i] for name in answers},
         **{f"{name}_score": scores[name][i] if math.isfinite(scores[name][i]) else None for name in scores}}
        for i, (r, s) in enumerate(zip(records, systems))
    ]
    return rows, {"sampling_s": sampling_s, "scoring_s": time.perf_counter() - started}


def summarize(rows: list[dict], targeted: bool) -> dict:
    gains = [r["distilled_score"] - r["plain_score"] for r in rows if r["distilled_score"] is not None and r["plain_score"] is not None]
    kept_gains = [r["distilled_score"] - r["plain_score"] for r in rows if r["kept"] and r["plain_score"] is not None]
    by_risk: dict[str, dict] = {}
    for r in rows:
        entry = by_risk.setdefault(r["risk_category"] or "none", {"prompts": 0, "kept": 0})
        entry["prompts"] += 1
        entry["kept"] += r["kept"]
    return {
        "targeted": targeted, "prompts": len(rows), "kept": sum(r["kept"] for r in rows),
        "kept_share": sum(r["kept"] for r in rows) / max(len(rows), 1),
        "mean_safety_gain": sum(gains) / len(gains) if gains else None,
        "mean_safety_gain_kept": sum(kept_gains) / len(kept_gains) if kept_gains else None,
        "empty_answers": {name: sum(r[f"{name}_score"] is None for r in rows) for name in ("plain", "distilled")},
        "by_risk_category": by_risk,
    }


def main(args: DistillArgs) -> Path:
    if args.policy is None or args.rm_safety is None:
        raise UserError("distill needs --policy and --rm-safety")
    if not args.prompts:
        raise UserError("distill needs --prompts FILES (adversarial prompts)")
    check_checkpoints(args.policy, [args.rm_safety])
    records = read_prompts(args.prompts)
    templates = read_templates(args.templates)
    device = resolve_device(args.device)
    args.out.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    if args.answers_from is not None:
        rows, timings = earlier_answers(args.answers_from, records), {"sampling_s": 0.0, "scoring_s": 0.0}
    else:
        rows, timings = sample_and_score(args, records, templates, device)
    kept = keep_distilled([score_or_minus_inf(r["plain_score"]) for r in rows],
                          [score_or_minus_inf(r["distilled_score"]) for r in rows], args.targeted)
    for row, keep in zip(rows, kept):
        row["kept"] = keep
    write_jsonl(args.out / "distill.jsonl", rows)
    # the training dialogs: the prompt as asked (no preprompt) and the answer given with one
    train = [{"messages": [*r["messages"], {"role": "assistant", "content": r["distilled_answer"]}]} for r in rows if r["kept"]]
    write_jsonl(args.out / "train.jsonl", train)
    report = {**summarize(rows, args.targeted), **timings}
    print(f"{'targeted' if args.targeted else 'untargeted'} distillation keeps {report['kept']:,} of {len(rows):,} "
          f"preprompted answers (mean safety RM gain {report['mean_safety_gain'] or 0:+.3f})")

    finetune = sft.finetune_args(args, init=args.policy, data=[args.out / "train.jsonl"],
                                   out=args.out / "sft", seed=args.seed, last_turn_only=True, device=args.device)
    if train:
        sft.main(finetune)
        report["sft"] = json.loads((finetune.out / "summary.json").read_text())
        report["model"] = str(finetune.out / "model")
    else:  # nothing the reward model prefers: the policy is already what distillation would make it
        report["model"] = str(args.policy)
    report["seconds"] = time.perf_counter() - started
    (args.out / "distill.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    print(f"distilled model: {report['model']}")
    return args.out
