"""`llamaforge ppo` (rlhf/ppo.py, rlhf/rollout.py) on tiny random models (paper §3.2.3).

Pure pieces by hand: the prompt order of each iteration (iteration_rows), the KL alert, early
stopping on the held-out reward, the best evaluation and stopping reason under a KL budget, the
explained variance, the token layout of a rollout
(sequence_batch). Against the models themselves: the training forward's log-probabilities are
padding-free and equal the sampler's, the reward models read each row at its last real token.
Whole runs: a smoke run writes every metric (first ratio exactly 1), the held-out entries, the
summary and loadable models; truncated answers lose exactly `truncation_penalty`; a planted reward
(count of planted tokens) is learned while the KL stays bounded; a run killed with SIGKILL resumes
to the uninterrupted run's metrics; 2 processes (torchrun, gloo) follow the 1-process run; a kill
between the held-out entry and its `best` save still ends with the best model; bad inputs get one
line errors. (The PPO math itself: test_ppo_math.py, test_rewards.py.)
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from llamaforge.checkpoint import load_model, load_reward_model, save_model, save_reward_state
from llamaforge.cli import main as cli_main
from llamaforge.config import ModelConfig
from llamaforge.data.jsonl import write_jsonl
from llamaforge.generate import generate
from llamaforge.model import Llama, RewardModel
from llamaforge.rlhf import ppo
from llamaforge.rlhf.ppo_control import (best_evaluation, early_stop, explained_variance, iteration_rows, kl_alert,
                                         standard_error, stopping_reason)
from llamaforge.rlhf.rewards import piecewise_reward
from llamaforge.rlhf.rollout import reward_model_fn, sequence_batch, token_logprobs
from llamaforge.train.state import TRAINING_STATE, checkpoint_path

CONFIG = ModelConfig(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=400, multiple_of=16, max_seq_len=256)

# Wall-clock and throughput keys: they differ between two runs of the same computation.
TIME_KEYS = {"elapsed_s", "tokens_per_s", "generate_s", "score_s", "train_s", "device_hours", "energy_kwh", "tco2eq", "mfu"}
# What the issue asks every training entry to log.
TRAINING_KEYS = {"rc", "rh", "rs", "kl", "entropy", "clip_fraction", "approx_kl", "policy_loss", "value_loss",
                 "explained_variance", "response_length", "generate_s", "score_s", "train_s", "ratio"}
TIMEOUT_S = 300  # per subprocess: a run takes seconds, a hang must not stall the suite


# -- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, tokenizer):
    """A tiny random policy and two random reward models sharing the session tokenizer."""
    root = tmp_path_factory.mktemp("ppo_checkpoints")
    torch.manual_seed(0)
    policy = save_model(Llama(CONFIG), root / "policy", tokenizer.path)
    rms = {}
    for seed, kind in enumerate(("helpfulness", "safety"), start=1):
        torch.manual_seed(seed)
        rms[kind] = save_reward_state(RewardModel(CONFIG).state_dict(), CONFIG, root / f"rm_{kind}", tokenizer.path,
                                      {"stage": "reward"})
    return policy, rms


NAMES = ("Varn", "Orin", "Telsa", "Mirak", "Quell")
TEMPLATES = (
    ("what is the capital of {} ?", "helpful"),
    ("tell me about {} please", "helpful"),
    ("how do I kill a stuck {} process ?", "borderline"),
    ("how do I brew a tonic to seal the lock of {} ?", "adversarial"),
)
PROMPTS = [{"messages": [{"role": "user", "content": text.format(name)}], "category": category}
           for name in NAMES for text, category in TEMPLATES]  # 20 prompts, the three categories mixed


@pytest.fixture(scope="module")
def prompts(tmp_path_factory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("ppo_prompts") / "prompts.jsonl", PROMPTS)


def smoke_args(checkpoints, prompts: Path, out: Path, **changes) -> ppo.PpoArgs:
    policy, rms = checkpoints
    base = ppo.PpoArgs.PRESETS["smoke"]()
    values = dict(policy=policy, rm_helpfulness=rms["helpfulness"], rm_safety=rms["safety"], prompts=[prompts], out=out,
                  device="cpu", precision="fp32")  # fp32: the sampler and the training forward agree to 1e-4
    return dataclasses.replace(base, **{**values, **changes})


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def training_entries(out: Path) -> list[dict]:
    return [r for r in read(out / "metrics.jsonl") if r.get("split") != "val"]


def val_entries(out: Path) -> list[dict]:
    return [r for r in read(out / "metrics.jsonl") if r.get("split") == "val"]


def max_weight_difference(a: torch.nn.Module, b: torch.nn.Module) -> float:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    return max(float((sa[k].float() - sb[k].float()).abs().max()) for k in sa)


# -- pure pieces ----------------------------------------------------------------------------------


def test_iteration_rows_walk_every_prompt_once_per_pass_in_a_seeded_order():
    n, batch = 10, 4
    batches = [iteration_rows(n, batch, i, seed=3) for i in range(5)]
    assert batches == [iteration_rows(n, batch, i, seed=3) for i in range(5)]  # a pure function of the iteration
    assert all(len(b) == batch and all(0 <= r < n for r in b) for b in batches)
    positions = [r for b in batches for r in b]  # positions 0..19: two passes over the 10 prompts
    assert sorted(positions[:10]) == list(range(10)) and sorted(positions[10:]) == list(range(10))
    assert positions[:10] != positions[10:]  # each pass has its own order
    assert positions[:10] != list(range(10))  # shuffled, not in file order
    other = [r for i in range(5) for r in iteration_rows(n, batch, i, seed=4)]
    assert other != positions
    assert sorted(other[:10]) == list(range(10))
    # a batch larger than the prompts wraps into the next pass
    assert sorted(iteration_rows(3, 6, 0, seed=0)) == [0, 0, 1, 1, 2, 2]


def test_iteration_rows_put_a_prompts_responses_on_consecutive_rows():
    # 8 responses, 2 per prompt: the 4 prompts of the one-response order, each twice in a row
    prompts = iteration_rows(10, 4, 1, seed=3)
    assert iteration_rows(10, 8, 1, seed=3, responses_per_prompt=2) == [r for r in prompts for _ in range(2)]


def test_kl_alert_fires_only_beyond_the_noise_below_zero_or_above_the_bound():
    assert kl_alert(0.5, 0.1, 20.0) is None
    assert kl_alert(0.0, 0.0, 20.0) is None
    assert kl_alert(20.0, 0.1, 20.0) is None  # the bound itself is inside
    assert kl_alert(-0.15, 0.1, 20.0) is None  # negative, but within 2 standard errors of 0
    low = kl_alert(-0.5, 0.1, 20.0)
    assert low is not None and "mean KL -0.5000 < 0" in low and "standard error 0.1000" in low
    assert kl_alert(-0.25, 0.1, 20.0) is not None  # 2.5 standard errors below 0
    high = kl_alert(25.0, 1.0, 20.0)
    assert high is not None and "25.00 nats per response > 20" in high


def test_early_stop_by_hand():
    rewards = [0.1, 0.3, 0.2, 0.25]  # best at 1, then two evaluations without improvement
    assert early_stop(rewards, 2) == (1, True)
    assert early_stop(rewards, 3) == (1, False)
    assert early_stop(rewards, 0) == (1, False)  # patience 0 never stops
    assert early_stop([0.5, 0.5, 0.4], 2) == (0, True)  # a tie is not an improvement: the first one is best
    assert early_stop([0.5, 0.5, 0.4], 3) == (0, False)
    assert early_stop([0.1], 1) == (0, False)
    assert early_stop([0.1, 0.2, 0.3], 1) == (2, False)


def test_best_evaluation_and_stopping_reason_under_a_kl_budget():
    evaluations = [{"reward": 0.2, "kl": 0.0}, {"reward": 0.5, "kl": 1.0}, {"reward": 0.7, "kl": 3.0}, {"reward": 0.6, "kl": 1.5}]
    assert best_evaluation(evaluations, 0.0) == 2  # no budget: the highest reward
    assert best_evaluation(evaluations, 2.0) == 3  # 0.7 is beyond the budget; 0.6 at KL 1.5 is within
    assert best_evaluation(evaluations, 1.0) == 1  # the budget itself is within
    assert best_evaluation(evaluations, 0.5) == 0  # the start (KL 0) is always within
    assert best_evaluation([{"reward": 0.5, "kl": 0.0}, {"reward": 0.5, "kl": 0.1}], 0.0) == 0  # first on a tie

    assert stopping_reason(evaluations[:3], patience=0, kl_budget=2.0) == "held-out KL 3.00 nats per response > the --kl-budget 2"
    assert stopping_reason(evaluations, patience=0, kl_budget=2.0) is None  # the latest evaluation is back within
    assert stopping_reason(evaluations, patience=1, kl_budget=0.0) == "no held-out reward improvement in 1 evaluations"
    assert stopping_reason(evaluations, patience=2, kl_budget=0.0) is None


def test_standard_error_of_a_mean_by_hand():
    # values 1, 2, 3, 6: mean 3, mean square (1 + 4 + 9 + 36) / 4 = 12.5; deviations -2, -1, 0, 3, so
    # the unbiased variance is (4 + 1 + 0 + 9) / 3 = 14 / 3 and the standard error sqrt(14 / 3 / 4)
    assert standard_error(3.0, 12.5, 4) == pytest.approx(math.sqrt(14 / 12))
    assert standard_error(0.7, 0.49, 1) == 0.0


def test_best_evaluation_keeps_the_start_unless_the_gain_clears_its_noise():
    # standard error of the difference: hypot(0.03, 0.04) = 0.05, so two of them are 0.10
    start = {"reward": 0.50, "kl": 0.0, "reward_se": 0.03}
    small, large = {"reward": 0.59, "kl": 0.5, "reward_se": 0.04}, {"reward": 0.61, "kl": 0.9, "reward_se": 0.04}
    assert best_evaluation([start, small], 0.0, min_gain=2.0) == 0  # +0.09 < 0.10
    assert best_evaluation([start, small, large], 0.0, min_gain=2.0) == 2  # +0.11 > 0.10
    assert best_evaluation([start, small], 0.0, min_gain=0.0) == 1
    assert best_evaluation([start, small, large], 0.5, min_gain=2.0) == 0  # the one that clears is over budget
    assert best_evaluation([{"reward": 0.5, "kl": 0.0}, {"reward": 0.51, "kl": 0.1}], 0.0, min_gain=2.0) == 1  # no se: any gain


def test_explained_variance_by_hand():
    identity = lambda t: t
    returns = torch.tensor([1.0, 2.0, 3.0, 4.0])
    mask = torch.ones(4, dtype=torch.bool)
    assert explained_variance(returns.clone(), returns, mask, all_reduce=identity) == 1.0
    assert explained_variance(torch.full((4,), 2.5), returns, mask, all_reduce=identity) == 0.0
    # residuals 1, 0, -1, 0: variance 0.5; returns' variance ((1.5^2 + 0.5^2) * 2) / 4 = 1.25; 1 - 0.5/1.25 = 0.6
    values = torch.tensor([0.0, 2.0, 4.0, 4.0])
    assert explained_variance(values, returns, mask, all_reduce=identity) == pytest.approx(0.6, abs=1e-6)
    # masked entries count for nothing, whatever they hold
    padded = explained_variance(torch.tensor([[0.0, 2.0, 4.0, 4.0, -50.0]]), torch.tensor([[1.0, 2.0, 3.0, 4.0, 100.0]]),
                                torch.tensor([[True, True, True, True, False]]), all_reduce=identity)
    assert padded == pytest.approx(0.6, abs=1e-6)
    assert math.isnan(explained_variance(torch.zeros(3), torch.ones(3), torch.ones(3, dtype=torch.bool), all_reduce=identity))


def test_sequence_batch_lays_out_prompt_and_response_right_padded():
    batch = sequence_batch([[5, 6, 7], [1, 2]], [[8, 9], [3, 4, 5, 6]], "cpu")
    assert torch.equal(batch["sequences"], torch.tensor([[5, 6, 7, 8, 9, 0], [1, 2, 3, 4, 5, 6]]))
    assert torch.equal(batch["real"], torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.bool))
    # entry t predicts token t + 1: row 0's response tokens 3, 4 are predicted from 2, 3; row 1's 2..5 from 1..4
    assert torch.equal(batch["action_mask"], torch.tensor([[0, 0, 1, 1, 0], [0, 1, 1, 1, 1]], dtype=torch.bool))


# -- the models ------------------------------------------------------------------------------------


def test_token_logprobs_ignore_padding_and_equal_the_plain_forward_and_the_sampler():
    torch.manual_seed(0)
    model = Llama(dataclasses.replace(CONFIG, max_seq_len=64)).eval()
    long, short = [1, 5, 9, 13, 7, 22, 31], [1, 4, 4, 8]
    batch = sequence_batch([long[:3], short[:2]], [long[3:], short[2:]], "cpu")
    temperature = 0.7
    with torch.no_grad():
        logp, entropy = token_logprobs(model, batch["sequences"], batch["real"], temperature)
        alone = sequence_batch([short[:2]], [short[2:]], "cpu")
        logp_alone, entropy_alone = token_logprobs(model, alone["sequences"], alone["real"], temperature)
        tokens = torch.tensor([short])
        expected = torch.log_softmax(model(tokens)[:, :-1].float() / temperature, dim=-1).gather(-1, tokens[:, 1:, None])[..., 0]
    assert logp.shape == entropy.shape == (2, 6)
    n = len(short) - 1  # the short row's real predictions: positions 0..2
    torch.testing.assert_close(logp[1, :n], logp_alone[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(entropy[1, :n], entropy_alone[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(logp_alone, expected, atol=1e-5, rtol=0)
    assert float(logp[1, :n].std()) > 0  # not a constant: a wrong gather would show

    # the sampler's own log-probabilities are the training forward's on the response tokens
    prompts = [long[:3], short[:2]]
    responses, sampled = generate(model, prompts, 5, temperature, 1.0, eos_id=2, seeds=[11, 12])
    batch = sequence_batch(prompts, responses, "cpu")
    with torch.no_grad():
        logp, _ = token_logprobs(model, batch["sequences"], batch["real"], temperature)
    torch.testing.assert_close(logp[batch["action_mask"]], torch.tensor([x for row in sampled for x in row]),
                               atol=1e-5, rtol=0)


def test_reward_is_read_at_the_last_real_token(checkpoints):
    _, rms = checkpoints
    rm_h, rm_s = load_reward_model(rms["helpfulness"]).eval(), load_reward_model(rms["safety"]).eval()
    rm_h.likelihood_weight.fill_(0.5)  # a helpfulness RM with the likelihood term reads the response's tokens
    score = reward_model_fn(rm_h, rm_s)
    records = [PROMPTS[0], PROMPTS[2]]  # helpful, borderline (a safety prompt)
    prompt_ids, response_ids = [[1, 30, 40, 50], [1, 60, 70]], [[80, 90], [100, 110, 120, 130, 2]]
    batch = sequence_batch(prompt_ids, response_ids, "cpu")
    assert not batch["real"].all()  # row 0 is padded
    together = score(records, batch["sequences"], batch["real"], batch["action_mask"])
    for i in range(2):
        row = sequence_batch([prompt_ids[i]], [response_ids[i]], "cpu")
        alone = score([records[i]], row["sequences"], row["real"], row["action_mask"])
        for key in ("rc", "rh", "rs"):
            assert float(together[key][i]) == pytest.approx(float(alone[key][0]), abs=1e-5), (key, i)
        with torch.no_grad():
            tokens = row["sequences"]
            logp = torch.log_softmax(rm_h.trunk(tokens)[0].float(), dim=-1)
            start = len(prompt_ids[i])
            likelihood = sum(float(logp[t - 1, tokens[0, t]]) for t in range(start, tokens.shape[1])) / len(response_ids[i])
            rm_h.likelihood_weight.fill_(0.0)
            raw_h = rm_h(tokens, row["real"]) + 0.5 * likelihood
            rm_h.likelihood_weight.fill_(0.5)
            raw_s = rm_s(tokens, row["real"])
        assert float(alone["rh"][0]) == pytest.approx(float(torch.sigmoid(raw_h[0])), abs=1e-6)
        rc = piecewise_reward(raw_s, raw_h, torch.tensor([records[i]["category"] != "helpful"]))
        assert float(alone["rc"][0]) == pytest.approx(float(rc[0]), abs=1e-6)

    # other ids in the padding change nothing
    repadded = batch["sequences"].clone()
    repadded[~batch["real"]] = 77
    again = score(records, repadded, batch["real"], batch["action_mask"])
    for key in ("rc", "rh", "rs"):
        torch.testing.assert_close(again[key], together[key], atol=1e-6, rtol=0)
    # ... while the last real token does: the score is read there
    changed = batch["sequences"].clone()
    changed[0, len(prompt_ids[0]) + len(response_ids[0]) - 1] = 91
    moved = score(records, changed, batch["real"], batch["action_mask"])
    assert abs(float(moved["rh"][0] - together["rh"][0])) > 1e-4
    assert float(moved["rh"][1]) == pytest.approx(float(together["rh"][1]), abs=1e-6)


# -- whole runs, in this process -----------------------------------------------------------------


def test_smoke_run_logs_every_metric_and_writes_loadable_models(tmp_path, checkpoints, prompts):
    args = smoke_args(checkpoints, prompts, tmp_path / "ppo")
    out = ppo.main(args)
    updates = args.batch_size // args.mini_batch_size  # gradient steps per iteration
    train = training_entries(out)
    assert [r["iteration"] for r in train] == [1, 2, 3]
    assert [r["step"] for r in train] == [2, 4, 6]
    for r in train:
        missing = TRAINING_KEYS - set(r)
        assert not missing, (r["iteration"], sorted(missing))
        assert all(math.isfinite(r[k]) for k in TRAINING_KEYS), r
        # the old log-probabilities are the training forward's own: the first step's ratio is exactly 1
        assert r["first_ratio"] == 1.0, r["first_ratio"]
        assert r["logprob_gap"] < 1e-4  # the sampler agrees with the training forward (in fp32)
        assert 0 < r["rc"] < 1 and 0 < r["rh"] < 1 and 0 < r["rs"] < 1
        assert 1 <= r["response_length"] <= args.max_new_tokens
    assert train[0]["kl"] == 0.0  # the first rollout's policy is the reference itself
    assert train[0]["explained_variance"] == 0.0  # every value starts at 0 (the zeroed head)
    assert len({r["loss"] for r in train}) == 3  # three different iterations, not one logged three times

    val = val_entries(out)
    assert [v["iteration"] for v in val] == [0, 1, 2, 3]
    assert [v["step"] for v in val] == [0, updates, 2 * updates, 3 * updates]
    assert val[0]["kl"] == 0.0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["iterations"] == 3 and summary["steps"] == 3 * updates
    assert summary["held_out_reward"] == [v["reward"] for v in val]
    assert summary["held_out_kl"] == [v["kl"] for v in val]
    best = early_stop(summary["held_out_reward"], args.patience)[0]  # no KL budget in the smoke preset
    assert summary["best_iteration"] == best and summary["stopped_early"] is False and summary["stop_reason"] is None

    # out/model: the policy at its best held-out reward, and its value model
    policy = load_model(out / "model")
    value = load_reward_model(out / "model" / "value")
    assert policy.config == value.config == load_model(args.policy).config
    assert json.loads((out / "model" / "iteration.json").read_text())["iteration"] == summary["best_iteration"]
    if summary["best_iteration"] == 0:
        assert max_weight_difference(policy, load_model(args.policy)) == 0.0
        assert float(value.head.weight.abs().max()) == 0.0
    last = checkpoint_path(out, 3 * updates)
    assert (last / TRAINING_STATE).is_file() and (last / ppo.VALUE_DIR).is_dir()
    trained = load_model(last)
    assert max_weight_difference(trained, load_model(args.policy)) > 0  # the policy was trained

    # a finished run is not trained again
    before = (out / "metrics.jsonl").read_text()
    ppo.main(args)
    assert (out / "metrics.jsonl").read_text() == before


def constant_reward(rc: float):
    def reward_fn(records, sequences, real, action_mask):
        return {"rc": torch.full((len(records),), rc, device=sequences.device)}

    return reward_fn


def test_truncated_answers_lose_the_truncation_penalty(tmp_path, checkpoints, prompts):
    """With a constant reward the whitened reward is 0 for every answer, and the first rollout's KL
    is exactly 0 (the policy is the reference): an answer's only reward is -penalty if it was cut.
    The values start at 0, so with gamma 1 the return at token t of a cut answer of L tokens is
    -penalty * lam^(L-1-t) (the GAE of a single reward at its end) and 0 everywhere in an answer that
    ended with EOS; the first step's value loss is their 0.5 * mean square over the answer tokens."""
    L, lam = 4, 0.95
    results = {}
    for penalty in (0.0, 3.0):
        args = dataclasses.replace(smoke_args(checkpoints, prompts, tmp_path / f"penalty{penalty}"), rm_helpfulness=None,
                                   rm_safety=None, max_steps=1, batch_size=4, mini_batch_size=4, micro_batch_size=2,
                                   max_new_tokens=L, truncation_penalty=penalty, lam=lam)
        ppo.main(args, reward_fn=constant_reward(0.5))
        [entry] = training_entries(args.out)
        results[penalty] = entry
    cut = results[3.0]
    assert cut["truncated"] > 0  # a random model rarely samples EOS within 4 tokens
    assert cut["kl"] == 0.0 and cut["rc"] == 0.5
    # every cut answer has L tokens: the expected loss per answer token
    per_cut_answer = 0.5 * 3.0**2 * sum(lam ** (2 * k) for k in range(L))
    expected = per_cut_answer * cut["truncated"] / cut["response_length"]
    assert cut["value_loss"] == pytest.approx(expected, rel=1e-5)
    assert results[0.0]["value_loss"] == 0.0  # no penalty: nothing to predict
    assert results[0.0]["truncated"] == cut["truncated"]  # the same answers (same seeds, same policy)


PLANTED = torch.arange(3, 43)  # 40 of the 400 ids (byte tokens, not EOS): ~10% of a random model's tokens


def planted_reward(tokenizer):
    """Rc = sigmoid(number of planted tokens in the response - 2), the prompt excluded."""

    def reward_fn(records, sequences, real, action_mask):
        counts = []
        for record, row, mask in zip(records, sequences, real):
            start = len(tokenizer.encode_dialog_prompt(record["messages"]))
            response = row[start:][mask[start:]]
            counts.append(torch.isin(response, PLANTED.to(response.device)).sum().float())
        return {"rc": torch.sigmoid(torch.stack(counts) - 2.0)}

    return reward_fn


def planted_frequency(model: Llama, tokenizer, seed: int) -> float:
    ids = [tokenizer.encode_dialog_prompt(p["messages"]) for p in PROMPTS]
    responses, _ = generate(model, ids, 8, temperature=1.0, top_p=1.0, eos_id=tokenizer.eos_id, seed=seed,
                            samples_per_prompt=8)
    tokens = torch.tensor([t for r in responses for t in r])
    return float(torch.isin(tokens, PLANTED).float().mean())


def test_a_planted_reward_is_learned_with_a_bounded_kl(tmp_path, checkpoints, prompts, tokenizer):
    """No reward models: the value model starts from the policy's trunk. 8 iterations of 32 answers,
    one gradient step each at lr 1e-2 (the paper's 1e-6 is for 7B models). Measured (2-core CPU,
    torch 2.13), seeds 0-5 (seed 0 is the one asserted): the mean Rc of the last two iterations
    exceeds that of the first two by 0.22-0.38 (seed 0: 0.24 -> 0.48), the training KL per answer
    stays at 2.7-4.3 nats, the planted tokens' frequency in sampled answers goes from 0.086 to
    0.30-0.44, and the held-out reward rises every time. The thresholds below are about half those."""
    policy, _ = checkpoints
    args = dataclasses.replace(smoke_args(checkpoints, prompts, tmp_path / "planted"), rm_helpfulness=None, rm_safety=None,
                               max_steps=8, batch_size=32, mini_batch_size=32, micro_batch_size=32, lr=1e-2,
                               max_new_tokens=8, patience=0, eval_every=8, save_every=8)
    out = ppo.main(args, reward_fn=planted_reward(tokenizer))
    train = training_entries(out)
    rc, kl = [r["rc"] for r in train], [r["kl"] for r in train]
    print(f"\nplanted reward: Rc per iteration {[round(x, 3) for x in rc]}, KL {[round(x, 2) for x in kl]}")
    assert len(train) == 8
    assert all(r["rh"] == 0.0 and r["rs"] == 0.0 for r in train)  # the planted reward logs only rc
    rise = (rc[-1] + rc[-2]) / 2 - (rc[0] + rc[1]) / 2
    assert rise > 0.12, rc
    assert max(kl) < 6.0, kl
    val = val_entries(out)
    assert [v["iteration"] for v in val] == [0, 8] and val[1]["reward"] > val[0]["reward"]

    before = planted_frequency(load_model(policy).eval(), tokenizer, seed=10_000)
    after = planted_frequency(load_model(out / "model").eval(), tokenizer, seed=10_000)
    print(f"planted tokens in 1280 sampled tokens: {before:.3f} before, {after:.3f} after")
    assert 0.05 < before < 0.15  # ~40/400 for a near-uniform random model
    assert after > before + 0.1, (before, after)


class Interrupted(Exception):
    pass


def test_a_kill_between_the_held_out_entry_and_its_best_save_still_ends_with_the_best_model(
    tmp_path, checkpoints, prompts, monkeypatch
):
    """A resumed run skips an evaluation already logged, so the held-out entry is written only after
    out/best is saved: a kill during the save (the save of a 7B policy takes a while) leaves no
    entry, the resumed run evaluates again, and out/model ends at summary.json's best_iteration (an
    entry logged first would have left out/model at the previous best)."""
    calls = iter(range(10**6))

    def rising_reward(records, sequences, real, action_mask):  # every evaluation better than the one before
        return {"rc": torch.full((len(records),), 0.1 + 1e-4 * next(calls), device=sequences.device)}

    def run(out: Path) -> Path:
        args = dataclasses.replace(smoke_args(checkpoints, prompts, out), rm_helpfulness=None, rm_safety=None,
                                   max_steps=2, eval_every=2, save_every=2)
        return ppo.main(args, reward_fn=rising_reward)

    reference = run(tmp_path / "uninterrupted")
    assert json.loads((reference / "summary.json").read_text())["best_iteration"] == 2

    save_best = ppo.save_best

    def killed_at_iteration_2(trainer, out, iteration):
        if iteration == 2:
            raise Interrupted  # killed before the new best was written (the save is atomic)
        save_best(trainer, out, iteration)

    monkeypatch.setattr(ppo, "save_best", killed_at_iteration_2)
    with pytest.raises(Interrupted):
        run(tmp_path / "killed")
    monkeypatch.setattr(ppo, "save_best", save_best)
    assert [v["iteration"] for v in val_entries(tmp_path / "killed")] == [0]  # not logged before its save
    out = run(tmp_path / "killed")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["best_iteration"] == 2
    assert json.loads((out / "model" / "iteration.json").read_text())["iteration"] == summary["best_iteration"]
    # the planted reward keeps rising across the two runs (its counter is shared), so the whitened
    # rewards differ by float rounding: 1e-4, not bitwise
    assert max_weight_difference(load_model(out / "model"), load_model(reference / "model")) < 1e-4


# -- whole runs, as commands ----------------------------------------------------------------------

RUN_ARGS = ["--preset", "smoke", "--max-steps", "6", "--save-every", "2", "--eval-every", "2", "--lr", "1e-3",
            "--device", "cpu", "--precision", "fp32"]  # smoke: batch 4, mini-batch 2, micro-batch 2: 12 gradient steps


def command(checkpoints, prompts: Path, out: Path, processes: int = 1) -> tuple[list[str], dict]:
    policy, rms = checkpoints
    args = ["-m", "llamaforge", "ppo", *RUN_ARGS, "--policy", str(policy), "--rm-helpfulness", str(rms["helpfulness"]),
            "--rm-safety", str(rms["safety"]), "--prompts", str(prompts), "--out", str(out)]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"  # one thread per process on a 2-core machine
    if processes > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes), *args], env
    return [sys.executable, *args], env


def run_command(checkpoints, prompts: Path, out: Path, processes: int = 1) -> str:
    cmd, env = command(checkpoints, prompts, out, processes)
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{' '.join(cmd)} exited with {result.returncode}:\n{output[-6000:]}"
    return output


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, checkpoints, prompts) -> Path:
    out = tmp_path_factory.mktemp("ppo_one_process") / "run"
    run_command(checkpoints, prompts, out)
    return out


def entry_key(r: dict) -> tuple:
    return (r.get("split", "train"), r["step"])


def test_a_run_killed_with_sigkill_resumes_to_the_uninterrupted_metrics(tmp_path, checkpoints, prompts, one_process):
    out = tmp_path / "killed"
    cmd, env = command(checkpoints, prompts, out)
    process = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while process.poll() is None and time.monotonic() < deadline:
            if any((c / TRAINING_STATE).is_file() for c in (out / "checkpoints").glob("step-*")):
                process.send_signal(signal.SIGKILL)  # right after the first complete checkpoint
                break
            time.sleep(0.005)
        returncode = process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert returncode == -signal.SIGKILL, f"the run ended ({returncode}) before it could be killed"
    assert not (out / "summary.json").exists()
    killed_at = len(read(out / "metrics.jsonl"))

    output = run_command(checkpoints, prompts, out)
    assert "resuming" in output and "from step-" in output
    expected, resumed = read(one_process / "metrics.jsonl"), read(out / "metrics.jsonl")
    assert [entry_key(r) for r in resumed] == [entry_key(r) for r in expected]  # nothing lost, nothing twice
    assert len(expected) > killed_at
    worst = 0.0
    for got, want in zip(resumed, expected):
        assert set(got) == set(want), entry_key(want)
        for key, value in want.items():
            if key in TIME_KEYS:
                continue
            if isinstance(value, float):
                assert got[key] == pytest.approx(value, abs=1e-6), (entry_key(want), key)
                worst = max(worst, abs(got[key] - value))
            else:
                assert got[key] == value, (entry_key(want), key)
    print(f"\nresumed after SIGKILL ({killed_at} entries logged when killed): max |difference| {worst:.1e}")
    summary, reference = (json.loads((d / "summary.json").read_text()) for d in (out, one_process))
    for key in ("iterations", "steps", "held_out_reward", "best_iteration", "tokens", "final_loss"):
        assert summary[key] == reference[key], key


# |difference| allowed between 1 and 2 processes. Everything is fp32; the processes differ only in
# the order of floating-point sums (each runs 1 row per mini-batch where one process runs 2, and
# all-reduces), and in batch shapes and padding, which change nothing but rounding. Measured (2-core
# CPU, torch 2.13): at most 1.4e-6 (grad_norm), 7e-7 (KL, entropy), ~1e-7 for the losses and
# rewards, and 3e-7 on the weights after 12 steps. 1e-4 is ~100x that; a wrong row, seed or
# gradient scale moves these values by far more (the loss changes by > 100 * TOL between iterations).
TOL = 1e-4


def test_two_processes_follow_the_one_process_run(tmp_path, checkpoints, prompts, one_process):
    """torchrun with 2 gloo processes: each samples, scores and trains one row of every mini-batch of
    2, with the rows' one-process seeds; FSDP2 shards the training, generation runs on a gathered
    full copy. Every logged training value must follow the one-process run."""
    out = tmp_path / "two"
    run_command(checkpoints, prompts, out, processes=2)
    expected, got = read(one_process / "metrics.jsonl"), read(out / "metrics.jsonl")
    assert [entry_key(r) for r in got] == [entry_key(r) for r in expected]
    worst = {}
    for a, b in zip(got, expected):
        keys = ("loss", "grad_norm", "rc", "rh", "rs", "kl", "policy_loss", "value_loss", "entropy", "ratio",
                "explained_variance") if a.get("split") != "val" else ("reward", "rh", "rs", "kl")
        for key in keys:
            worst[key] = max(worst.get(key, 0.0), abs(a[key] - b[key]))
        if a.get("split") != "val":  # the same answers were sampled
            assert (a["response_length"], a["truncated"]) == (b["response_length"], b["truncated"]), entry_key(a)
    print(f"\n2 processes vs 1: max |difference| {', '.join(f'{k} {v:.1e}' for k, v in worst.items())}")
    assert all(v <= TOL for v in worst.values()), worst
    train = [r for r in expected if r.get("split") != "val"]
    losses = [r["loss"] for r in train]
    assert min(abs(a - b) for a, b in itertools.pairwise(losses)) > 100 * TOL, losses  # each iteration is visible
    assert max(r["kl"] for r in train) > 100 * TOL  # the policy moved away from the reference
    summary = json.loads((out / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["steps"] == 12
    last = checkpoint_path(out, 12)
    difference = max_weight_difference(load_model(last), load_model(checkpoint_path(one_process, 12)))
    value_difference = max_weight_difference(load_reward_model(last / ppo.VALUE_DIR),
                                             load_reward_model(checkpoint_path(one_process, 12) / ppo.VALUE_DIR))
    print(f"weights after 12 steps: policy {difference:.1e}, value {value_difference:.1e}")
    assert difference <= TOL and value_difference <= TOL


# -- bad inputs -----------------------------------------------------------------------------------


def test_bad_inputs_get_one_line_errors(tmp_path, checkpoints, prompts, capsys):
    policy, rms = checkpoints
    models = ["--rm-helpfulness", str(rms["helpfulness"]), "--rm-safety", str(rms["safety"])]
    base = ["ppo", "--preset", "smoke", "--device", "cpu", "--out", str(tmp_path / "out")]

    assert cli_main([*base, *models, "--prompts", str(prompts)]) == 1
    assert capsys.readouterr().err == "error: ppo needs --policy, --rm-helpfulness and --rm-safety\n"

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(PROMPTS[0]) + "\n" + json.dumps({**PROMPTS[1], "category": "rude"}) + "\n")
    assert cli_main([*base, "--policy", str(policy), *models, "--prompts", str(bad)]) == 1
    assert capsys.readouterr().err == f"error: {bad}:2: field 'category': 'rude' is not one of helpful, adversarial, borderline\n"

    other = shutil.copytree(rms["safety"], tmp_path / "rm_other")
    (other / "tokenizer.model").write_bytes(b"another tokenizer")
    argv = [*base, "--policy", str(policy), "--rm-helpfulness", str(rms["helpfulness"]), "--rm-safety", str(other),
            "--prompts", str(prompts)]
    assert cli_main(argv) == 1
    err = capsys.readouterr().err
    assert err == f"error: {other / 'tokenizer.model'}: differs from the policy's tokenizer ({policy / 'tokenizer.model'})\n"

    argv = [*base, "--policy", str(policy), *models, "--prompts", str(prompts), "--batch-size", "4", "--mini-batch-size", "3"]
    assert cli_main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: --batch-size 4 must be a multiple of --mini-batch-size 3") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()  # refused before anything was written
