"""`llamaforge reward`: a helpfulness or a safety reward model (paper §3.2.2).

build -> data (preference pairs in the paper's mix) -> model (an SFT trunk, scalar head) -> loop ->
save. The loss is the binary ranking loss with a rating-dependent margin (losses.preference_loss).
"""

from __future__ import annotations

import dataclasses
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

import torch

from llamaforge.checkpoint import (
    REWARD_HEAD_FILE, TOKENIZER_FILE, load_model_and_tokenizer, load_reward_model, save_reward_state,
)
from llamaforge.data.preferences import Preference, effective_margin, read_all
from llamaforge.data.scoring import encode_response, score_inputs
from llamaforge.device import DeviceName
from llamaforge.errors import UserError
from llamaforge.flags import OptionalPaths, RequiredPath, RequiredPaths
from llamaforge.losses import MARGINS, preference_loss
from llamaforge.model import RewardModel
from llamaforge.tokenizer import Tokenizer
from llamaforge.train.distributed import distributed_run
from llamaforge.train.loop import LoopConfig, train


@dataclass
class RewardArgs(LoopConfig):
    """Train a helpfulness or a safety reward model on preference pairs."""

    max_steps: int = 0
    """Optimizer steps; 0: one pass over the mix per epoch."""
    lr: float = 1e-5
    """Peak learning rate (paper: 1e-5; 5e-6 for 70B)."""
    warmup_steps: int = -1
    """Warmup steps; -1: 3% of the steps, at least 5 (paper §3.2.2)."""
    kind: Literal["helpfulness", "safety"] = "helpfulness"
    """Which reward model: it decides the data mix (paper §3.2.2)."""
    init: RequiredPath = None
    """Chat (SFT) checkpoint the trunk starts from, or a reward model to train further (its trunk
    and head)."""
    data: RequiredPaths = field(default_factory=list)
    """Preference files (ours, TRL's or Anthropic HH-RLHF's format)."""
    val_data: OptionalPaths = field(default_factory=list)
    """Held-out preference files for the validation loss."""
    out: Path = Path("runs/reward")
    """Run directory; model/ holds the reward model. Re-running resumes."""
    preset: str = "demo"
    """Defaults for every option: demo, demo_helpfulness, smoke, llama2_7b_reward, llama2_70b_reward."""
    margin: Literal["none", "small", "large"] = "small"
    """Margin m(rating) of the ranking loss (Table 27); records with a numeric margin use theirs."""
    max_len: int = 512
    """Tokens per scored sequence (prompt + response); longer ones lose the start of the prompt."""
    batch_size: int = 512
    """Pairs per optimizer step, all processes together (paper: 512)."""
    micro_batch_size: int = 8
    """Pairs per forward pass in each process."""
    epochs: int = 1
    """Passes over the data (paper: 1; more overfits)."""
    center: float = 0.0
    """Weight of a centering term, center * (r_chosen + r_rejected)^2 per pair (Eisenstein et al.
    2023; TRL's center_rewards_coefficient). The ranking loss only sees score differences, so a
    model's offset is whatever training leaves; the piecewise reward (paper eq. 3) thresholds
    sigmoid(safety score) at 0.15, which needs scores whose 0 means an average answer."""
    safety_share_of_helpfulness: float = 1.0
    """Helpfulness RM: add this many safety pairs per helpfulness pair (paper: an equal amount)."""
    helpfulness_share_of_safety: float = 0.1
    """Safety RM: helpfulness pairs make this share of the mix (paper: 90/10)."""
    likelihood_weight: float = 0.0
    """λ: add λ times the trunk's mean log-probability of the answer to the score (model.RewardModel;
    0: the paper's reward model, a head on the last hidden state alone)."""
    hh_is_safety: bool = False
    """Treat records without an is_safety field (TRL, HH-RLHF) as safety data (e.g. HH harmless)."""
    on_invalid: Literal["error", "drop"] = "error"
    """An invalid record stops the run with file:line, or is dropped and counted."""
    seed: int = 0
    """Seed of the data mix and order, and of the head's initialization."""
    device: DeviceName = "auto"
    """cpu, cuda, or auto."""

    PRESETS: ClassVar[dict] = {}


def demo() -> RewardArgs:
    """The laptop pipeline's safety reward model: one epoch as in the paper (§3.2.2: longer
    overfits), in batches of 16 pairs at LR 3e-4 for the 6M trunk, over the demo's ~1,150 pairs.
    Three epochs over ~600 pairs overfitted (training loss 0.27, held-out accuracy at chance on a
    re-run), and one epoch of ~600 pairs at 1e-4 stayed at chance (docs/results.md). Centered
    (`center`): without it one demo safety RM scored every helpful answer below sigmoid 0.15, so
    eq. 3 ranked them all by safety. fp32: on a 2-core Zen 4 bf16 autocast trained these short pairs
    17% slower (3,718 against 4,482 tokens/s the same afternoon), where it trains the demo's
    pretraining 1.42x faster."""
    return RewardArgs(preset="demo", lr=3e-4, epochs=1, batch_size=16, micro_batch_size=16, max_len=256, center=0.01,
                      warmup_steps=-1, max_steps=0, log_every=10, eval_every=50, save_every=100, precision="fp32")


def demo_helpfulness() -> RewardArgs:
    """The laptop pipeline's helpfulness reward model: the demo preset plus the trunk's likelihood
    of the answer (λ 1) at LR 3e-5, which keeps the trunk's knowledge that the term reads. Best of 8
    SFT samples, share of the gap from a random sample to gold's pick that the RM's pick closes
    (docs/results.md): head alone 12%; λ 1 at LR 3e-4 34%; with 4 responses per helpful prompt
    (`annotate --responses 4`) at LR 3e-4 18%, at 1e-4 44%, at 3e-5 46%. Safety pairs are 15% of
    the helpfulness pairs, not the paper's equal amount: with four answers per safety prompt the
    equal amount would cost every RLHF version 40% more helpfulness-RM training, and eq. 3 reads
    the safety RM, not this one, on safety prompts."""
    return dataclasses.replace(demo(), preset="demo_helpfulness", lr=3e-5, likelihood_weight=1.0,
                               safety_share_of_helpfulness=0.15)


def smoke() -> RewardArgs:
    return RewardArgs(preset="smoke", lr=1e-4, batch_size=8, micro_batch_size=4, max_len=128, warmup_steps=-1,
                      max_steps=4, log_every=2, eval_every=2, save_every=2)


def llama2_7b_reward() -> RewardArgs:
    """Paper §3.2.2: one epoch, max LR 1e-5, cosine to 10%, warmup 3% of steps (at least 5),
    effective batch 512 pairs."""
    return RewardArgs(preset="llama2_7b_reward", lr=1e-5, batch_size=512, micro_batch_size=4, max_len=4096,
                      warmup_steps=-1, max_steps=0, log_every=10, eval_every=100, save_every=200, precision="bf16")


def llama2_70b_reward() -> RewardArgs:
    return dataclasses.replace(llama2_7b_reward(), preset="llama2_70b_reward", lr=5e-6, micro_batch_size=1)


RewardArgs.PRESETS.update(demo=demo, demo_helpfulness=demo_helpfulness, smoke=smoke, llama2_7b_reward=llama2_7b_reward, llama2_70b_reward=llama2_70b_reward)


def paper_mix(pairs: list[Preference], args: RewardArgs, rng: random.Random) -> list[Preference]:
    """The training mix of §3.2.2. Helpfulness RM: all helpfulness pairs plus an equal number drawn
    uniformly from the safety pairs. Safety RM: all safety pairs, with helpfulness pairs as 10%."""
    helpful = [p for p in pairs if not p.is_safety]
    safety = [p for p in pairs if p.is_safety]
    if args.kind == "helpfulness":
        mine, other, extra = helpful, safety, round(args.safety_share_of_helpfulness * len(helpful))
    else:
        share = args.helpfulness_share_of_safety
        mine, other, extra = safety, helpful, round(share / (1 - share) * len(safety))
    if not mine:
        raise UserError(f"no {args.kind} pairs in {', '.join(map(str, args.data))} (is_safety decides which are which)")
    mix = mine + rng.sample(other, min(extra, len(other)))
    rng.shuffle(mix)
    return mix


def prompt_key(pair: Preference) -> str:
    return json.dumps(pair.prompt, sort_keys=True)


def grouped_order(pairs: list[Preference], rng: random.Random) -> list[Preference]:
    """The pairs in a random order that keeps the pairs of one prompt together: with K responses
    per prompt (K(K-1)/2 pairs), a batch then scores each response once for all its pairs, and a
    response takes part in one update instead of K-1 (the K-wise batching of Ouyang et al. 2022,
    which they found cheaper and less prone to overfitting than shuffling the pairs one by one)."""
    groups: dict[str, list[Preference]] = {}
    for pair in pairs:
        groups.setdefault(prompt_key(pair), []).append(pair)
    order = list(groups.values())
    rng.shuffle(order)
    return [pair for group in order for pair in group]


def pair_batch(pairs: list[Preference], tokenizer: Tokenizer, margins: dict, max_len: int, device) -> dict:
    """The distinct (prompt, response) sequences of the pairs in one batch, each scored once, and for
    every pair the index of its chosen and its rejected sequence, with its margin. count: the pairs
    (the loss terms); tokens: every position of every sequence, padding included (what the forward
    pass processes, and tokens/s counts)."""
    index: dict[tuple[str, str], int] = {}
    sequences = []

    def position(pair: Preference, response: str) -> int:
        key = (prompt_key(pair), response)
        if key not in index:
            index[key] = len(sequences)
            sequences.append(encode_response(tokenizer, pair.prompt, response, max_len))
        return index[key]

    chosen, rejected = zip(*[(position(p, p.chosen), position(p, p.rejected)) for p in pairs])
    tokens, real, answer = score_inputs(sequences, device)
    margin = torch.tensor([effective_margin(p, margins) for p in pairs], device=device)
    return {"sequences": tokens, "real": real, "answer": answer, "chosen": torch.tensor(chosen, device=device),
            "rejected": torch.tensor(rejected, device=device), "margin": margin, "count": len(pairs),
            "tokens": tokens.numel()}


def ranking_loss(model, batch: dict, center: float = 0.0) -> tuple[torch.Tensor, dict]:
    """The summed margin ranking loss of the batch's pairs, plus `center` times their summed
    (r_chosen + r_rejected)^2; extra metric: the mean score of the pairs' responses."""
    scores = model(batch["sequences"], batch["real"], batch["answer"]).float()
    chosen, rejected = scores[batch["chosen"]], scores[batch["rejected"]]
    loss = preference_loss(chosen, rejected, batch["margin"], reduction="sum")
    if center:
        loss = loss + center * ((chosen + rejected) ** 2).sum()
    return loss, {"mean_score": float((chosen + rejected).mean().detach()) / 2}


def main(args: RewardArgs) -> Path:
    if args.init is None or not args.data:
        raise UserError("reward needs --init CKPT and --data FILES")
    with distributed_run(args.device) as env:
        log = env.print
        pairs, dropped = read_all(args.data, args.on_invalid, args.hh_is_safety)
        val_pairs, _ = read_all(args.val_data, args.on_invalid, args.hh_is_safety)
        if dropped:
            log(f"{dropped} invalid records dropped (--on-invalid drop)")
        mix = paper_mix(pairs, args, random.Random(args.seed))
        per_step = args.batch_size - args.batch_size % env.world_size  # every process gets the same share
        epochs = [grouped_order(mix, random.Random(args.seed * 1_000_003 + e)) for e in range(args.epochs)]
        steps = [order[i : i + per_step] for order in epochs for i in range(0, len(order), per_step)]
        steps = [s[: len(s) - len(s) % env.world_size] for s in steps if len(s) >= env.world_size]
        max_steps = args.max_steps if args.max_steps > 0 else len(steps)
        # --warmup-steps -1 (the presets): 3% of the steps, at least 5 (§3.2.2)
        warmup = args.warmup_steps if args.warmup_steps >= 0 else max(5, round(0.03 * max_steps))
        run = dataclasses.replace(args, max_steps=max_steps, warmup_steps=warmup)

        if (args.init / REWARD_HEAD_FILE).is_file():  # a reward model, trained further (head and likelihood weight kept)
            model, tokenizer = load_reward_model(args.init), Tokenizer(args.init / TOKENIZER_FILE)
        else:
            trunk, tokenizer = load_model_and_tokenizer(args.init)
            torch.manual_seed(args.seed)  # the head's initialization
            model = RewardModel(trunk.config, trunk, args.likelihood_weight)
        model = model.to(env.device)
        if args.max_len > model.config.max_seq_len:
            raise UserError(f"--max-len {args.max_len} exceeds the model's context of {model.config.max_seq_len}")
        margins = MARGINS[args.margin]
        log(f"{args.kind} reward model from {args.init}: {len(mix):,} pairs in the mix "
            f"({sum(p.is_safety for p in mix):,} safety), {max_steps} steps of {per_step} pairs, margin {args.margin}")

        def micro_batches(step: int, step_pairs=None) -> list[dict]:
            everyone = step_pairs if step_pairs is not None else steps[step % len(steps)]
            share = len(everyone) // env.world_size  # contiguous, so a prompt's pairs stay on one process
            mine = everyone[env.rank * share : (env.rank + 1) * share]
            return [
                pair_batch(mine[i : i + args.micro_batch_size], tokenizer, margins, args.max_len, env.device)
                for i in range(0, len(mine), args.micro_batch_size)
            ]

        info = {"stage": "reward", "kind": args.kind, "parent": str(args.init), "margin": args.margin}

        def save_weights(state, directory, write_more=None):
            save_reward_state(state, model.config, directory, args.init / TOKENIZER_FILE, info, write_more)

        identity = {
            "stage": "reward",
            "kind": args.kind,
            "init": str(args.init),
            "data": [str(p) for p in args.data],
            "pairs": len(mix),
            **{k: getattr(args, k) for k in ("margin", "center", "likelihood_weight", "max_len", "batch_size", "epochs", "seed")},
        }
        train(
            model,
            run,
            env,
            args.out,
            identity=identity,
            micro_batches=micro_batches,
            loss_fn=lambda train_model, batch: ranking_loss(train_model, batch, args.center),
            save_weights=save_weights,
            load_weights=lambda d: load_reward_model(d).state_dict(),
            val_batches=micro_batches(0, val_pairs[: len(val_pairs) - len(val_pairs) % env.world_size]) if val_pairs else None,
        )
    return args.out
