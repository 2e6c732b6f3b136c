"""`llamaforge ppo`: PPO on the two reward models' piecewise reward with a KL penalty (paper §3.2.3).

Each iteration: rollout (one response per prompt of a batch, sampled from the policy) -> score
(the reward models' Rc of eq. 3; the frozen reference pi_0 = the starting policy; the value model)
-> advantages (R = whiten(logit(Rc)) - beta * KL per token, eq. 4; GAE) -> train (PPO's clipped
objective, one gradient step per mini-batch) -> every `eval_every` iterations the held-out reward,
with early stopping when it stops improving (the paper's "early stopping based on held-out").

Choices the paper leaves open, and ours:
- The value model starts from the helpfulness reward model's trunk (its features already encode
  what the reward reads) with a zero head: every value starts at 0, the mean of the whitened
  reward, so the first advantages are the rewards themselves, not the noise of a mis-scaled head.
- gamma 1 (the reward is earned once, at the end; nothing to discount within an answer), lambda
  0.95. Rc is whitened over the whole batch (every process's rows), and so are the advantages.
- The KL of eq. 4 is the k1 estimate log pi_theta - log pi_0 of each sampled token (rewards.token_kl):
  unbiased when answers are sampled from pi_theta itself (temperature 1, top-p 1, the defaults).
- A response that hits --max-new-tokens without EOS is still scored where it ends, and loses
  `truncation_penalty` from its whitened reward: it is not an answer the chat format can end.
- Old log-probabilities and values are recomputed with the training forward on the very tensors
  the first mini-batch trains on (not taken from the sampler), so the first ratio is exactly 1;
  the sampler's own log-probabilities are compared with them (`logprob_gap`).

Under torchrun, each process samples, scores and trains its share of every mini-batch (rows r,
r + N, ...), with each row's sampling seed the same as in one process. Generation runs on a
consolidated, unsharded copy of the policy on every process (the paper consolidated weights on
each node for generation: sharded generation was ~20x slower), refreshed every iteration; the
reference and reward models are full copies too. FSDP2 shards the training forward and backward.
"""

from __future__ import annotations

import dataclasses
import json
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, ClassVar, Literal

import torch
import tyro
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

from llamaforge.checkpoint import (
    TOKENIZER_FILE, atomic_directory, check_checkpoints, load_model, load_model_and_tokenizer, load_reward_model,
    save_reward_state, save_state_dict,
)
from llamaforge.data.prompts import read_prompts
from llamaforge.device import DeviceName
from llamaforge.errors import UserError
from llamaforge.flags import OptionalPaths, RequiredPath, RequiredPaths
from llamaforge.losses import ppo_policy_loss, ppo_stats, value_loss
from llamaforge.model import Llama, RewardModel
from llamaforge.rlhf.ppo_control import (
    best_evaluation, explained_variance, iteration_rows, kl_alert, standard_error, stopping_reason,
)
from llamaforge.rlhf.rewards import gae, per_token_rewards, shaped_reward, whiten
from llamaforge.rlhf.rollout import PolicyWithValue, Rollout, RewardFn, reward_model_fn, sample_rollout, sequence_batch, token_logprobs
from llamaforge.tokenizer import Tokenizer
from llamaforge.train import state as run_state
from llamaforge.train.distributed import Distributed, all_reduce_sum, distributed_run, full_model_state
from llamaforge.train.loop import LoopConfig, Trainer, setup

VALUE_DIR = "value"  # the value model, inside each checkpoint and the final model directory


@dataclass
class PpoArgs(LoopConfig):
    """PPO on the reward models' piecewise reward with a KL penalty to the starting policy."""

    max_steps: int = 200
    """PPO iterations (rollout -> score -> train), each batch_size / mini_batch_size gradient steps per PPO epoch (paper: 200-400)."""
    lr: float = 1e-6
    """Learning rate of the policy (paper: constant 1e-6)."""
    warmup_steps: int = 0
    """Warmup, in gradient steps."""
    final_lr_ratio: float = 1.0
    """1: a constant learning rate after warmup (the paper's)."""
    log_every: Annotated[int, tyro.conf.Suppress] = 1
    """Not a flag of ppo: every iteration writes its metrics.jsonl entry."""
    policy: RequiredPath = None
    """Chat checkpoint to train (the last rejection-sampling model); also the frozen reference pi_0."""
    rm_helpfulness: RequiredPath = None
    """Helpfulness reward model; the value model starts from its trunk."""
    rm_safety: RequiredPath = None
    """Safety reward model."""
    prompts: RequiredPaths = field(default_factory=list)
    """Prompt files ({"messages", "category"} per line)."""
    val_prompts: OptionalPaths = field(default_factory=list)
    """Held-out prompt files for early stopping; empty: the last val_size prompts of --prompts (after a seeded shuffle)."""
    val_size: int = 64
    """Held-out prompts taken from --prompts when --val-prompts is not given."""
    out: Path = Path("runs/ppo")
    """Run directory: metrics.jsonl, checkpoints/, model/ (the policy at its best held-out reward; model/value: the value model)."""
    preset: str = "demo"
    """Defaults for every option: demo, smoke, llama2_7b_ppo, llama2_70b_ppo (flags override them)."""
    reward: Literal["piecewise", "helpfulness", "safety"] = "piecewise"
    """The reward: eq. 3's piecewise combination, or one reward model alone (the §4.2 ablation)."""
    batch_size: int = 512
    """Responses per iteration, all processes together (paper: 512)."""
    responses_per_prompt: int = 1
    """Responses sampled per prompt of an iteration (batch_size / this prompts); above 1, each
    response's reward is centered on its prompt's mean before whitening (rewards.shaped_reward)."""
    mini_batch_size: int = 64
    """Rows per gradient step (paper: 64, one gradient step per mini-batch)."""
    micro_batch_size: int = 8
    """Rows per forward pass in each process."""
    ppo_epochs: int = 1
    """Passes over each iteration's rollout."""
    clip: float = 0.2
    """PPO's clip on the probability ratio (paper: 0.2)."""
    value_clip: float = 0.2
    """Clip of the value update around the rollout's values (0: none)."""
    value_lr_scale: float = 1.0
    """The value model's learning rate, as a multiple of the policy's."""
    beta: float = 0.01
    """KL penalty coefficient (paper: 0.01 for 7B/13B, 0.005 for 34B/70B)."""
    gamma: float = 1.0
    """GAE discount."""
    lam: float = 0.95
    """GAE lambda."""
    temperature: float = 1.0
    """Rollout sampling temperature (1: the KL estimate is unbiased)."""
    top_p: float = 1.0
    """Rollout nucleus mass (1: the KL estimate is unbiased)."""
    max_new_tokens: int = 512
    """Most tokens per response; longer ones are cut and penalized."""
    truncation_penalty: float = 1.0
    """Subtracted from the whitened reward of a response cut without EOS."""
    kl_alert: float = 20.0
    """Alert when the mean KL per response (nats) exceeds this, or goes below 0 beyond its noise."""
    patience: int = 3
    """Stop when the held-out reward has not improved for this many evaluations (0: never stop early)."""
    kl_budget: float = 0.0
    """Stop when the held-out KL per response exceeds this many nats (0: no budget): the reward models are
    trusted only near the distribution they were trained on."""
    min_gain: float = 2.0
    """Keep a trained policy only where its held-out reward beats the starting policy's by more than
    this many standard errors of the difference (0: any gain): the best of several noisy
    evaluations is otherwise partly noise, and PPO would replace its start for nothing."""
    eval_every: int = 10
    """Held-out evaluation every this many iterations (and at the start and end)."""
    save_every: int = 10
    """Checkpoint every this many iterations (and at the end)."""
    seed: int = 0
    """Seed of the prompt order, sampling and held-out split."""
    device: DeviceName = "auto"
    """cpu, cuda, or auto."""

    PRESETS: ClassVar[dict] = {}


def demo() -> PpoArgs:
    """The laptop pipeline's PPO version, one gradient step per iteration of 64 prompts. The 6M
    model at the paper's 1e-6 (meant for 7B-70B) does not move; at 1e-5 its KL stayed under 0.1 nats
    in 24 iterations and gold helpfulness did not change; at 1e-4 the held-out reward rises while gold
    helpfulness falls (reward hacking: docs/results.md), so the run stops at a KL budget of 2 nats
    and keeps the policy of its best held-out reward, where that beats the start by more than two
    standard errors (64 held-out prompts: about 0.05 of Rc; on 2026-12-07 a best of +0.042 kept
    without this rule cost 0.017 of gold helpfulness). fp32: on a 2-core Zen 4, bf16 autocast made
    these short rollouts and updates slower (per iteration 1.87 s generating and 2.55 s training,
    against 1.72 and 2.43 s in fp32 the same afternoon), where it trains the demo's pretraining
    1.42x faster. 16 iterations, not 24: in four demo runs of up to 24 (2026-12-07) no held-out
    evaluation cleared the keep rule, the best came at iteration 4, 12, 4 and 16 (+0.03-0.04 of Rc,
    KL 0.4-1.4 nats), two runs stopped early at 16, and the last 8 iterations cost ~55 s of the
    demo's 25 minutes (docs/results.md)."""
    return PpoArgs(preset="demo", max_steps=16, lr=1e-4, batch_size=64, mini_batch_size=64, micro_batch_size=16,
                   value_lr_scale=10.0, beta=0.01, max_new_tokens=48, eval_every=4, save_every=4, patience=3,
                   kl_budget=2.0, val_size=64, precision="fp32")


def smoke() -> PpoArgs:
    return PpoArgs(preset="smoke", max_steps=3, lr=1e-4, batch_size=4, mini_batch_size=2, micro_batch_size=2,
                   value_lr_scale=1.0, max_new_tokens=8, eval_every=1, save_every=1, patience=0, val_size=4,
                   min_gain=0.0)  # 4 held-out prompts: any gain, so that the smoke run exercises keeping one


def llama2_7b_ppo() -> PpoArgs:
    """Paper §3.2.3: AdamW (0.9, 0.95), weight decay 0.1, gradient clip 1.0, constant LR 1e-6,
    batch 512, mini-batch 64, one gradient step per mini-batch, clip 0.2, beta 0.01, 200-400
    iterations with early stopping on held-out prompts."""
    return PpoArgs(preset="llama2_7b_ppo", max_steps=400, lr=1e-6, weight_decay=0.1, grad_clip=1.0, batch_size=512,
                   mini_batch_size=64, micro_batch_size=4, clip=0.2, beta=0.01, max_new_tokens=1024,
                   eval_every=10, save_every=10, patience=5, val_size=512, precision="bf16")


def llama2_70b_ppo() -> PpoArgs:
    return dataclasses.replace(llama2_7b_ppo(), preset="llama2_70b_ppo", beta=0.005, micro_batch_size=1)


PpoArgs.PRESETS.update(demo=demo, smoke=smoke, llama2_7b_ppo=llama2_7b_ppo, llama2_70b_ppo=llama2_70b_ppo)


class Experience:
    """One iteration's scored rollout in this process, as the micro-batches its gradient steps train
    on: mini_batches[m] holds this process's rows of global mini-batch m."""

    def __init__(self, mini_batches: list[list[dict]], metrics: dict):
        self.mini_batches, self.metrics = mini_batches, metrics


def make_experience(
    args: PpoArgs, env: Distributed, trainer: Trainer, reference: Llama, reward_fn: RewardFn, rollout: Rollout,
    rows: list[int],
) -> Experience:
    """Score this process's rows (global indices `rows` of the batch) and compute their advantages."""
    device, mini = env.device, args.mini_batch_size
    micro_batches, groups = [], []
    for m in range(args.batch_size // mini):
        mine = [i for i, row in enumerate(rows) if m * mini <= row < (m + 1) * mini]
        groups.append([mine[i : i + args.micro_batch_size] for i in range(0, len(mine), args.micro_batch_size)])
    rc_all = torch.zeros(args.batch_size, device=device)  # every process's Rc, for whitening over the batch
    for group in (g for groups_m in groups for g in groups_m):
        batch = sequence_batch([rollout.prompt_ids[i] for i in group], [rollout.response_ids[i] for i in group], device)
        sequences, real = batch["sequences"], batch["real"]
        with torch.no_grad(), trainer.autocast():
            batch["old_logprobs"], _, batch["old_values"] = trainer.train_model(sequences, real)
            batch["ref_logprobs"], _ = token_logprobs(reference, sequences, real, args.temperature)
            batch["scores"] = reward_fn([rollout.records[i] for i in group], sequences, real, batch["action_mask"])
        batch["rows"], batch["local"] = torch.tensor([rows[i] for i in group]), group
        rc_all[batch["rows"].to(device)] = batch["scores"]["rc"].float()
        micro_batches.append(batch)
    rc_all = all_reduce_sum(rc_all)
    # (batch_size,) whitened over the whole batch, every process alike
    shaped = shaped_reward(rc_all, group_size=args.responses_per_prompt)
    truncated = torch.tensor(rollout.truncated, device=device)

    names = ("rc", "rh", "rs", "kl", "kl_squared", "length", "truncated", "gap", "gap_n")
    sums = {k: torch.zeros((), device=device) for k in names}
    for batch in micro_batches:
        local = torch.tensor(batch["local"], device=device)
        shaped_rows = shaped[batch["rows"].to(device)] - args.truncation_penalty * truncated[local].float()
        mask = batch["action_mask"]
        rewards, kl = per_token_rewards(shaped_rows, batch["old_logprobs"], batch["ref_logprobs"], mask, args.beta)
        batch["advantages"], batch["returns"] = gae(rewards, batch["old_values"], mask, args.gamma, args.lam)
        batch["count"], batch["tokens"] = int(mask.sum()), batch["sequences"].numel()  # the loop's two sizes
        for name in ("rc", "rh", "rs"):
            if name in batch["scores"]:
                sums[name] += batch["scores"][name].float().sum()
        sums["kl"] += kl.sum()
        sums["kl_squared"] += (kl.sum(dim=-1) ** 2).sum()  # per response, for the KL's standard error
        sums["length"] += mask.sum()
        sums["truncated"] += truncated[local].float().sum()
        sampled = torch.tensor([lp for i in batch["local"] for lp in rollout.sample_logprobs[i]], device=device)
        sums["gap"] += (sampled - batch["old_logprobs"][mask].float()).abs().sum()
        sums["gap_n"] += mask.sum()

    # the advantages, whitened over every response token of the batch
    flat = torch.cat([b["advantages"][b["action_mask"]] for b in micro_batches]) if micro_batches else torch.zeros(0, device=device)
    flat = whiten(flat, all_reduce=all_reduce_sum)
    at = 0
    for batch in micro_batches:
        n = batch["count"]
        advantages = torch.zeros_like(batch["advantages"])
        advantages[batch["action_mask"]] = flat[at : at + n]
        batch["advantages"], at = advantages, at + n
    cat = lambda key: torch.cat([b[key][b["action_mask"]] for b in micro_batches]) if micro_batches else torch.zeros(0)
    ev = explained_variance(cat("old_values"), cat("returns"), torch.ones_like(cat("returns"), dtype=torch.bool))

    totals = {k: float(v) for k, v in zip(sums, all_reduce_sum(torch.stack(list(sums.values()))).tolist())}
    n = args.batch_size
    metrics = {
        "rc": totals["rc"] / n, "rh": totals["rh"] / n, "rs": totals["rs"] / n, "kl": totals["kl"] / n,
        "kl_standard_error": standard_error(totals["kl"] / n, totals["kl_squared"] / n, n),
        "response_length": totals["length"] / n, "truncated": totals["truncated"] / n,
        "logprob_gap": totals["gap"] / max(totals["gap_n"], 1), "explained_variance": ev,
    }
    # micro-batches back in mini-batch order (they were made in that order)
    sizes = [len(g) for g in groups]
    mini_batches, at = [], 0
    for size in sizes:
        mini_batches.append(micro_batches[at : at + size])
        at += size
    return Experience(mini_batches, metrics)


def ppo_loss(args: PpoArgs):
    """The loss of a micro-batch: PPO's clipped surrogate plus the clipped value loss, summed over
    response tokens (the loop divides by the step's token count), with the logged statistics."""

    def loss(model, batch: dict):
        logprobs, entropy, values = model(batch["sequences"], batch["real"])
        mask = batch["action_mask"]
        policy_sum, n = ppo_policy_loss(logprobs, batch["old_logprobs"], batch["advantages"], mask, args.clip)
        value_sum, _ = value_loss(values, batch["old_values"], batch["returns"], mask, args.value_clip or None)
        stats = ppo_stats(logprobs.detach(), batch["old_logprobs"], mask, args.clip)
        count = max(int(n), 1)
        metrics = {"policy_loss": policy_sum.detach() / count, "value_loss": value_sum.detach() / count,
                   "entropy": torch.where(mask, entropy, 0.0).sum() / count, **stats}
        # one coefficient for both: the two have separate trunks and AdamW, whose steps do not depend
        # on a gradient's scale, so a value-loss weight would only move --value-lr-scale's job
        return policy_sum + value_sum, metrics

    return loss


def held_out_reward(
    args: PpoArgs, env: Distributed, policy: Llama, reference: Llama, tokenizer: Tokenizer, reward_fn: RewardFn,
    records: list[dict],
) -> dict:
    """Mean Rc (and Rh, Rs, KL per response) of answers sampled for the held-out prompts, each with
    the same seed at every evaluation, so that evaluations differ by the policy only, and the
    standard error of the mean Rc ("reward_se")."""
    mine = list(range(env.rank, len(records), env.world_size))
    rollout = sample_rollout(policy, tokenizer, [records[i] for i in mine], [args.seed * 7919 + i for i in mine],
                             args.max_new_tokens, args.temperature, args.top_p, args.micro_batch_size)
    sums = torch.zeros(5, device=env.device)
    for start in range(0, len(mine), args.micro_batch_size):
        part = range(start, min(start + args.micro_batch_size, len(mine)))
        batch = sequence_batch([rollout.prompt_ids[i] for i in part], [rollout.response_ids[i] for i in part], env.device)
        with torch.no_grad():
            scores = reward_fn([rollout.records[i] for i in part], batch["sequences"], batch["real"], batch["action_mask"])
            logprobs, _ = token_logprobs(policy, batch["sequences"], batch["real"], args.temperature)
            ref, _ = token_logprobs(reference, batch["sequences"], batch["real"], args.temperature)
        kl = torch.where(batch["action_mask"], logprobs - ref, 0.0).sum()
        sums += torch.stack([scores["rc"].sum(), scores.get("rh", scores["rc"]).sum(), scores.get("rs", scores["rc"]).sum(), kl,
                             scores["rc"].square().sum()])
    rc, rh, rs, kl, rc_square = (all_reduce_sum(sums) / len(records)).tolist()
    return {"reward": rc, "rh": rh, "rs": rs, "kl": kl, "reward_se": standard_error(rc, rc_square, len(records))}


def generation_policy(trainer: Trainer, env: Distributed, copy: Llama | None) -> Llama:
    """The policy to sample from: itself in one process; under torchrun a full copy on every
    process, refreshed from the shards (the paper's consolidation for generation)."""
    if env.world_size == 1:
        return trainer.model.policy
    state = get_model_state_dict(trainer.model, options=StateDictOptions(full_state_dict=True))
    copy.load_state_dict({k.removeprefix("policy."): v for k, v in state.items() if k.startswith("policy.")})
    return copy


def run_ppo(
    args: PpoArgs, env: Distributed, model: PolicyWithValue, reference: Llama, tokenizer: Tokenizer,
    reward_fn: RewardFn, records: list[dict], val_records: list[dict], identity: dict, save_weights, load_weights,
) -> dict:
    """The PPO loop (module docstring) over `records`; returns the run summary."""
    if args.batch_size % args.responses_per_prompt:
        raise UserError(f"--batch-size {args.batch_size} must be a multiple of --responses-per-prompt {args.responses_per_prompt}")
    if args.batch_size % args.mini_batch_size or args.mini_batch_size % env.world_size:
        raise UserError(f"--batch-size {args.batch_size} must be a multiple of --mini-batch-size {args.mini_batch_size}, "
                        f"itself a multiple of the {env.world_size} processes")
    updates = args.batch_size // args.mini_batch_size * args.ppo_epochs  # gradient steps per iteration
    summary_path = args.out / "summary.json"
    if env.is_main:
        run_state.check_run_identity(args.out, {**identity, "loop": dataclasses.replace(args, max_steps=args.max_steps * updates).identity()})
    if summary_path.is_file():  # finished, at max_steps or stopped early
        env.print(f"{args.out}: already trained")
        return json.loads(summary_path.read_text())
    cfg = dataclasses.replace(args, max_steps=args.max_steps * updates, log_every=1, save_every=updates * args.save_every)
    trainer = setup(model, cfg, env, args.out, identity=identity, save_weights=save_weights, load_weights=load_weights,
                    lr_scales={"value.": args.value_lr_scale})
    loss_fn = ppo_loss(args)
    copy = None if env.world_size == 1 else Llama(model.policy.config).to(env.device)
    evaluations = [r for r in run_state.read_metrics(args.out / "metrics.jsonl") if r.get("split") == "val"]
    step, stop_reason, first = trainer.start, None, trainer.start // updates
    for iteration in range(first, args.max_steps + 1):
        # held-out reward and early stopping, at the start, every eval_every iterations and at the end
        if iteration % args.eval_every == 0 or iteration == args.max_steps:
            if not (evaluations and evaluations[-1]["iteration"] == iteration):  # else logged before a resume
                val = held_out_reward(args, env, generation_policy(trainer, env, copy), reference, tokenizer, reward_fn, val_records)
                evaluations.append({"iteration": iteration, **val})
                if best_evaluation(evaluations, args.kl_budget, args.min_gain) == len(evaluations) - 1:
                    save_best(trainer, args.out, iteration)
                # logged after the best save: a run killed in between evaluates again on resume
                trainer.metrics.write({"step": step, "split": "val", "iteration": iteration, **val})
                if env.is_main:
                    trainer.progress.write(f"iteration {iteration}: held-out reward {val['reward']:.4f}, KL {val['kl']:.3f}")
            stop_reason = stopping_reason(evaluations, args.patience, args.kl_budget)
            if stop_reason:
                env.print(f"early stop at iteration {iteration}: {stop_reason}")
                break
        if iteration == args.max_steps:
            break
        started = time.perf_counter()
        rows = iteration_rows(len(records), args.batch_size, iteration, args.seed, args.responses_per_prompt)
        mine = list(range(env.rank, args.batch_size, env.world_size))
        seeds = [args.seed * 1_000_003 + iteration * args.batch_size + j for j in mine]
        rollout = sample_rollout(generation_policy(trainer, env, copy), tokenizer, [records[rows[j]] for j in mine], seeds,
                                 args.max_new_tokens, args.temperature, args.top_p, args.micro_batch_size)
        generate_s = time.perf_counter() - started
        started = time.perf_counter()
        experience = make_experience(args, env, trainer, reference, reward_fn, rollout, mine)
        score_s = time.perf_counter() - started
        started = time.perf_counter()
        results, order = [], list(range(len(experience.mini_batches)))
        for epoch in range(args.ppo_epochs):
            if epoch:  # the first epoch in rollout order: its first step's ratio is exactly 1
                random.Random(args.seed * 31 + iteration * 7 + epoch).shuffle(order)
            for m in order:
                results.append(trainer.optimizer_step(step, experience.mini_batches[m], loss_fn))
                step += 1
        train_s = time.perf_counter() - started
        means = {name: sum(r.metrics[name] for r in results) / len(results) for name in results[0].metrics}
        record = {
            "iteration": iteration + 1, **experience.metrics, **means, "first_ratio": results[0].metrics["ratio"],
            "loss": results[-1].loss, "lr": results[-1].lr, "grad_norm": results[-1].grad_norm,
            "generate_s": generate_s, "score_s": score_s, "train_s": train_s,
        }
        alert = kl_alert(record["kl"], record["kl_standard_error"], args.kl_alert)
        if alert:
            record["alert"] = alert
            if env.is_main:
                trainer.progress.write(f"alert, iteration {iteration + 1}: {alert}")
        trainer.log(step, record)
        trainer.progress.set_postfix(rc=f"{record['rc']:.3f}", kl=f"{record['kl']:.3f}")
        if (iteration + 1) % args.save_every == 0 or iteration + 1 == args.max_steps:
            trainer.save_checkpoint(step)
    rewards = [e["reward"] for e in evaluations]
    best = best_evaluation(evaluations, args.kl_budget, args.min_gain)
    extra = {"iterations": step // updates, "stopped_early": stop_reason is not None, "stop_reason": stop_reason,
             "held_out_reward": rewards, "held_out_kl": [e["kl"] for e in evaluations],
             "best_iteration": evaluations[best]["iteration"]}
    summary = trainer.finish(steps=step, extra=extra)
    if env.is_main and (args.out / "best").is_dir():  # the final model is the policy at its best held-out reward
        with atomic_directory(args.out / "model") as tmp:
            shutil.copytree(args.out / "best", tmp, dirs_exist_ok=True)
    return summary


def save_best(trainer: Trainer, out: Path, iteration: int) -> None:
    """The model at the best held-out reward so far, in out/best (collective, like checkpoints)."""
    state = full_model_state(trainer.model)
    if trainer.env.is_main:
        trainer.save_weights(state, out / "best", lambda d: (d / "iteration.json").write_text(json.dumps({"iteration": iteration})))


def split_prompts(args: PpoArgs) -> tuple[list[dict], list[dict]]:
    """Training and held-out prompts: --val-prompts, or the last val_size of a seeded shuffle of --prompts."""
    records = read_prompts(args.prompts)
    if args.val_prompts:
        return records, read_prompts(args.val_prompts)
    if len(records) <= args.val_size:
        raise UserError(f"--prompts: {len(records)} prompts leave none to train on after --val-size {args.val_size}")
    order = random.Random(args.seed).sample(range(len(records)), len(records))
    return [records[i] for i in order[: -args.val_size]], [records[i] for i in order[-args.val_size :]]


def main(args: PpoArgs, reward_fn: RewardFn | None = None) -> Path:
    """`reward_fn` replaces the reward models (tests plant a reward with it)."""
    if args.policy is None or (reward_fn is None and (args.rm_helpfulness is None or args.rm_safety is None)):
        raise UserError("ppo needs --policy, --rm-helpfulness and --rm-safety")
    if not args.prompts:
        raise UserError("ppo needs --prompts FILES")
    if args.temperature <= 0:
        raise UserError(f"--temperature {args.temperature}: must be above 0 (PPO's rollouts are samples of the policy)")
    reward_models = [p for p in (args.rm_helpfulness, args.rm_safety) if p is not None]
    check_checkpoints(args.policy, reward_models)
    records, val_records = split_prompts(args)
    with distributed_run(args.device) as env:
        policy, tokenizer = load_model_and_tokenizer(args.policy, device=env.device)
        reference = load_model(args.policy, device=env.device).requires_grad_(False).eval()
        if reward_fn is None:
            rm_h, rm_s = (load_reward_model(p, device=env.device).requires_grad_(False).eval() for p in reward_models)
            reward_fn = reward_model_fn(rm_h, rm_s, args.reward)
        if args.rm_helpfulness is not None:
            value = load_reward_model(args.rm_helpfulness, device=env.device)
        else:  # a planted reward without reward models: the value trunk is the policy's
            value = RewardModel(policy.config, load_model(args.policy, device=env.device))
        torch.nn.init.zeros_(value.head.weight)  # V = 0: the mean of the whitened reward (module docstring)
        value.likelihood_weight.zero_()  # a value model reads its head alone (token_scores)
        model = PolicyWithValue(policy, value, args.temperature)
        tokenizer_file = args.policy / TOKENIZER_FILE
        info = {"stage": "ppo", "parent": str(args.policy), "reward": args.reward}

        def save_weights(state: dict, directory: Path, write_more=None) -> None:
            policy_state = {k.removeprefix("policy."): v for k, v in state.items() if k.startswith("policy.")}
            value_state = {k.removeprefix("value."): v for k, v in state.items() if k.startswith("value.")}

            def write_value(d: Path) -> None:
                save_reward_state(value_state, value.config, d / VALUE_DIR, tokenizer_file, {"stage": "ppo_value"})
                if write_more is not None:
                    write_more(d)

            save_state_dict(policy_state, policy.config, directory, tokenizer_file, info, write_value)

        def load_weights(directory: Path) -> dict:
            state = {f"policy.{k}": v for k, v in load_model(directory).state_dict().items()}
            return state | {f"value.{k}": v for k, v in load_reward_model(directory / VALUE_DIR).state_dict().items()}

        identity = {
            "stage": "ppo", "policy": str(args.policy), "rm_helpfulness": str(args.rm_helpfulness),
            "rm_safety": str(args.rm_safety), "prompts": [str(p) for p in args.prompts], "train_prompts": len(records),
            **{k: getattr(args, k) for k in ("reward", "batch_size", "responses_per_prompt", "mini_batch_size", "ppo_epochs", "clip", "value_clip",
                                             "value_lr_scale", "beta", "gamma", "lam", "temperature", "top_p",
                                             "max_new_tokens", "truncation_penalty", "eval_every", "patience", "kl_budget",
                                             "min_gain", "seed")},
        }
        env.print(f"PPO on {args.policy}: {len(records):,} prompts ({len(val_records)} held out), {args.max_steps} "
                  f"iterations of {args.batch_size}, reward {args.reward}, beta {args.beta}")
        run_ppo(args, env, model, reference, tokenizer, reward_fn, records, val_records, identity, save_weights, load_weights)
    env.print(f"PPO policy: {args.out / 'model'}")
    return args.out
