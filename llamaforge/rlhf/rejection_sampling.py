"""`llamaforge rejection-sampling`: best-of-K answers under the two reward models, then SFT on them
(paper §3.2.3, "Rejection Sampling fine-tuning").

sample (K answers per prompt, each prompt's prefill shared by its K samples) -> score (both reward
models; Rc = the piecewise reward of eq. 3) -> select (the highest Rc per prompt, over this
version's samples and, with --pool, the best answers of earlier versions) -> fine-tune (the SFT
stage on the selected answers: same loss, packing and LoRA option).

The paper: "we sample K answers for each prompt from the most recent model, score each with the
best reward model, and select the best answer"; up to RLHF V3 only the previous iteration's samples
were used, from V4 the best samples of all prior iterations (--pool), which fixed regressions.
The gain of selection is the gap between the max and the median reward over K samples (Fig. 7),
reported here for K = 1, 2, 4, ..., K.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch

from llamaforge.checkpoint import check_checkpoints, load_for_sampling, load_for_scoring
from llamaforge.data.jsonl import write_jsonl
from llamaforge.data.prompts import is_safety_prompt, prompt_key, read_prompts, read_samples
from llamaforge.device import DeviceName, resolve_device
from llamaforge.errors import UserError
from llamaforge.eval.reward import response_scores
from llamaforge.eval.selection import best_of_k_curve
from llamaforge.flags import OptionalPath, OptionalPaths, RequiredPath
from llamaforge.generate import generate
from llamaforge.model import Llama
from llamaforge.rlhf.rewards import piecewise_reward
from llamaforge.tokenizer import Tokenizer
from llamaforge.train import sft


@dataclass
class RejectionSamplingArgs(sft.FinetuneOptions):
    """Sample K answers per prompt, keep the one the reward models rank first, fine-tune on those."""

    policy: RequiredPath = None
    """Chat checkpoint that samples and is fine-tuned."""
    rm_helpfulness: RequiredPath = None
    """Helpfulness reward model (llamaforge reward --kind helpfulness)."""
    rm_safety: RequiredPath = None
    """Safety reward model."""
    prompts: OptionalPaths = field(default_factory=list)
    """Prompt files: {"messages": [...], "category": "helpful"|"adversarial"|"borderline"} per line."""
    out: Path = Path("runs/rejection_sampling")
    """Run directory: samples.jsonl, best.jsonl, rejection_sampling.json, sft/ (sft/model: the result)."""
    preset: str = "demo"
    """Defaults for every option: demo, smoke, llama2_7b (flags override them)."""
    k: int = 8
    """Answers sampled per prompt."""
    temperature: float = 1.0
    """Sampling temperature (paper Fig. 8: the best lies in 1.2-1.3 for K in 10-100 and moves between versions)."""
    top_p: float = 1.0
    """Nucleus sampling mass."""
    max_new_tokens: int = 64
    """Most tokens per answer."""
    batch_prompts: int = 16
    """Prompts per generation batch (each with its K samples)."""
    samples: OptionalPath = None
    """Score and select these answers instead of sampling: prompt records with a "response" field."""
    pool: OptionalPaths = field(default_factory=list)
    """Earlier rejection-sampling runs whose selected answers compete with (and join) this one's."""
    lora_rank: int = 0
    """Fine-tune LoRA adapters of this rank (0: every weight)."""
    seed: int = 0
    """Seed of sampling and fine-tuning."""
    device: DeviceName = "auto"
    """cpu, cuda, or auto."""

    PRESETS: ClassVar[dict] = {}


def demo() -> RejectionSamplingArgs:
    """Two epochs over the ~200 selected answers at LR 1e-4, where the SFT preset's cosine ends (10%
    of its 1e-3 peak). The fine-tuning is two or three optimizer steps from a fresh AdamW, whose
    first steps move every weight by about the learning rate whatever the data: at the SFT preset's
    1e-3, fine-tuning the SFT model on its own greedy answers cost 0.058 held-out gold helpfulness,
    and on gold's own picks among 8 samples 0.031; at 1e-4 the same data gained 0.012 and 0.025
    (docs/results.md, experiments/rs_selection.py). The steps fall inside the SFT preset's 5-step
    warmup, so they run at 20%, 40% and 60% of the rate named (both above were measured so)."""
    return RejectionSamplingArgs(preset="demo", k=8, temperature=1.0, max_new_tokens=64, sft_preset="demo", epochs=2,
                                 lr=1e-4)


def smoke() -> RejectionSamplingArgs:
    return RejectionSamplingArgs(preset="smoke", k=2, temperature=1.0, max_new_tokens=16, sft_preset="smoke")


def llama2_7b() -> RejectionSamplingArgs:
    """The paper does not state K; Fig. 7 spans 1-100 samples. 10 samples at T = 1.2 (Fig. 8)."""
    return RejectionSamplingArgs(preset="llama2_7b", k=10, temperature=1.2, max_new_tokens=1024, batch_prompts=8,
                                 sft_preset="llama2_7b_sft")


RejectionSamplingArgs.PRESETS.update(demo=demo, smoke=smoke, llama2_7b=llama2_7b)


def sample_answers(
    model: Llama, tokenizer: Tokenizer, prompts: list[list[dict]], k: int, max_new_tokens: int,
    temperature: float, top_p: float, seed: int, batch_prompts: int,
) -> tuple[list[list[str]], int]:
    """K answers per prompt and the number of tokens generated. Answer j of prompt i is sampled with
    seed `seed + i * k + j` whatever the batching, so a run is reproducible batch size to batch size."""
    budget = model.config.max_seq_len - max_new_tokens
    encoded = [tokenizer.encode_dialog_prompt(p)[-budget:] for p in prompts]
    answers, generated = [], 0
    model.eval()
    for start in range(0, len(encoded), batch_prompts):
        tokens, _ = generate(
            model, encoded[start : start + batch_prompts], max_new_tokens, temperature, top_p,
            seed + start * k, tokenizer.eos_id, samples_per_prompt=k,
        )
        generated += sum(len(t) for t in tokens)
        texts = [tokenizer.decode([t for t in new if t != tokenizer.eos_id]).strip() for new in tokens]
        answers += [texts[i : i + k] for i in range(0, len(texts), k)]
    return answers, generated


def score(rms: dict[str, tuple], records: list[dict], responses: list[str]) -> dict[str, torch.Tensor]:
    """Raw helpfulness and safety scores of each (prompt, response) and Rc, the piecewise reward."""
    prompts = [r["messages"] for r in records]
    raw = {kind: response_scores(rm, tokenizer, prompts, responses) for kind, (rm, tokenizer) in rms.items()}
    is_safety = torch.tensor([is_safety_prompt(r) for r in records], dtype=torch.bool)
    rc = piecewise_reward(raw["safety"], raw["helpfulness"], is_safety)
    return {"rh": raw["helpfulness"], "rs": raw["safety"], "rc": rc}


def pooled_answers(runs: list[Path]) -> list[dict]:
    """The answers earlier runs selected, as sample records."""
    pooled = []
    for run in runs:
        path = run / "samples.jsonl"
        if not path.is_file():
            raise UserError(f"{path}: not found (--pool takes earlier rejection-sampling run directories)")
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if record["chosen"]:
                pooled.append({"messages": record["messages"], "category": record["category"],
                               "response": record["response"], "source": f"pool:{run}"})
    return pooled


def select_best(samples: list[dict]) -> list[dict]:
    """Marks the highest-Rc sample of each prompt as chosen (the first one on a tie); returns them."""
    best: dict[tuple, dict] = {}
    for sample in samples:
        key = prompt_key(sample["messages"])
        sample["chosen"] = False
        if key not in best or sample["rc"] > best[key]["rc"]:
            best[key] = sample
    for sample in best.values():
        sample["chosen"] = True
    return list(best.values())


def main(args: RejectionSamplingArgs) -> Path:
    if args.policy is None or args.rm_helpfulness is None or args.rm_safety is None:
        raise UserError("rejection-sampling needs --policy, --rm-helpfulness and --rm-safety")
    if args.samples is None and not args.prompts:
        raise UserError("rejection-sampling needs --prompts FILES (or --samples FILE)")
    if args.k < 1:
        raise UserError(f"--k {args.k}: must be at least 1")
    if args.samples is None and args.temperature <= 0:
        raise UserError(f"--temperature {args.temperature}: must be above 0 (K greedy answers would be one answer K times)")
    check_checkpoints(args.policy, [args.rm_helpfulness, args.rm_safety])
    device = resolve_device(args.device)
    args.out.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    if args.samples is not None:  # answers produced elsewhere
        samples, generated = [{**s, "source": str(args.samples)} for s in read_samples(args.samples)], 0
    else:
        records = read_prompts(args.prompts)
        model, tokenizer = load_for_sampling(args.policy, device)
        answers, generated = sample_answers(model, tokenizer, [r["messages"] for r in records], args.k,
                                            args.max_new_tokens, args.temperature, args.top_p, args.seed, args.batch_prompts)
        del model
        samples = [{**r, "response": a, "sample": j, "source": "sample"} for r, group in zip(records, answers) for j, a in enumerate(group)]
    sampling_s = time.perf_counter() - started
    empty = sum(not s["response"] for s in samples)
    samples = [s for s in samples if s["response"]]  # an immediate EOS: nothing to score or train on
    pooled = pooled_answers(args.pool)

    started = time.perf_counter()
    rms = {kind: load_for_scoring(path, device)
           for kind, path in (("helpfulness", args.rm_helpfulness), ("safety", args.rm_safety))}
    candidates = samples + pooled
    scores = score(rms, candidates, [c["response"] for c in candidates])
    for i, candidate in enumerate(candidates):
        candidate.update({name: float(values[i]) for name, values in scores.items()})
    best = select_best(candidates)
    scoring_s = time.perf_counter() - started

    write_jsonl(args.out / "samples.jsonl", candidates)
    write_jsonl(args.out / "best.jsonl", [{"messages": [*b["messages"], {"role": "assistant", "content": b["response"]}]} for b in best])
    own = [s for s in samples if s["source"] == "sample"]
    full = {}  # prompts with all K samples scored (an empty answer removes one)
    for s in own:
        full.setdefault(prompt_key(s["messages"]), []).append(s["rc"])
    complete = [v for v in full.values() if len(v) == args.k]
    report = {
        "prompts": len({prompt_key(c["messages"]) for c in candidates}),
        "samples": len(samples),
        "empty_answers": empty,
        "pooled": len(pooled),
        "selected_from_pool": sum(b["source"].startswith("pool:") for b in best),
        "mean_rc_selected": sum(b["rc"] for b in best) / max(len(best), 1),
        "fig7_rc": best_of_k_curve(torch.tensor(complete)) if complete else {},
        "sampling_s": sampling_s,
        "sampling_tokens_per_s": generated / sampling_s if generated else None,
        "scoring_s": scoring_s,
    }
    print(f"selected {len(best):,} answers from {len(candidates):,} candidates "
          f"({report['selected_from_pool']} from the pool); sampling {report['sampling_tokens_per_s'] or 0:.0f} tokens/s")

    finetune = sft.finetune_args(args, init=args.policy, data=[args.out / "best.jsonl"],
                                   out=args.out / "sft", seed=args.seed, lora_rank=args.lora_rank, device=args.device)
    sft.main(finetune)
    report["sft"] = json.loads((finetune.out / "summary.json").read_text())
    (args.out / "rejection_sampling.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    print(f"fine-tuned model: {finetune.out / 'model'}")
    return args.out
