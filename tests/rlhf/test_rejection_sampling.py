"""Rejection sampling (paper §3.2.3): the Fig. 7 curve and the per-prompt argmax by hand, pooling of
earlier versions, answers from outside (--samples) scored and selected, and bad inputs refused."""

import json
import shutil

import pytest
import torch

from llamaforge.checkpoint import load_for_scoring, load_reward_model, save_model, save_reward_state
from llamaforge.cli import main as cli_main
from llamaforge.config import ModelConfig
from llamaforge.data.jsonl import write_jsonl
from llamaforge.errors import UserError
from llamaforge.eval.reward import response_scores
from llamaforge.model import Llama, RewardModel
from llamaforge.rlhf import rejection_sampling
from llamaforge.eval.selection import best_of_k_curve
from llamaforge.rlhf.rejection_sampling import RejectionSamplingArgs, select_best
from llamaforge.rlhf.rewards import piecewise_reward

CONFIG = ModelConfig(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=400, multiple_of=16, max_seq_len=256)


def test_fig7_curve_is_the_mean_max_and_median_of_the_first_k_samples():
    rewards = torch.tensor([[1.0, 3.0, 2.0, 4.0], [0.0, 0.0, 5.0, 1.0]])
    curve = best_of_k_curve(rewards)
    assert list(curve) == ["1", "2", "4"]
    # k = 1: the first samples 1 and 0; k = 2: max 3 and 0, medians (1+3)/2 and 0;
    # k = 4: max 4 and 5, medians (2+3)/2 = 2.5 and (0+1)/2 = 0.5
    assert curve["1"] == {"max": 0.5, "median": 0.5}
    assert curve["2"] == {"max": 1.5, "median": 1.0}
    assert curve["4"] == {"max": 4.5, "median": 1.5}
    assert list(best_of_k_curve(torch.zeros(1, 6))) == ["1", "2", "4", "6"]


def sample(prompt: str, response: str, rc: float, source: str = "sample") -> dict:
    return {"messages": [{"role": "user", "content": prompt}], "category": "helpful", "response": response, "rc": rc, "source": source}


def test_select_best_keeps_the_highest_reward_per_prompt_across_the_pool():
    samples = [sample("a", "a1", 0.2), sample("a", "a2", 0.7), sample("a", "a3", 0.5), sample("b", "b1", 0.4)]
    pooled = [sample("a", "old a", 0.6, "pool:v1"), sample("b", "old b", 0.9, "pool:v1"), sample("c", "old c", 0.1, "pool:v1")]
    best = select_best(samples + pooled)
    assert [b["response"] for b in best] == ["a2", "old b", "old c"]  # a prompt only in the pool joins too
    assert [s["chosen"] for s in samples + pooled] == [False, True, False, False, False, True, True]
    tie = select_best([sample("a", "first", 0.5), sample("a", "second", 0.5)])
    assert [t["response"] for t in tie] == ["first"]


def test_an_empty_answer_scores_minus_infinity_and_is_never_chosen(checkpoints, tokenizer):
    _, rms = checkpoints
    rm = load_reward_model(rms["helpfulness"])
    prompts = [[{"role": "user", "content": "Hi?"}]] * 3
    scores = response_scores(rm, tokenizer, prompts, ["Hello.", "", "  "])
    assert torch.isfinite(scores[0]) and scores[1:].tolist() == [float("-inf")] * 2
    assert scores[0] == response_scores(rm, tokenizer, prompts[:1], ["Hello."])[0]
    rc = piecewise_reward(scores, scores, torch.tensor([False] * 3))
    assert rc[1:].tolist() == [0.0, 0.0]  # sigmoid(-inf): the lowest reward there is


def test_scores_do_not_depend_on_the_order_or_the_batching(checkpoints, tokenizer):
    # batches are formed by length: each score must still be its own response's, padding unseen
    _, rms = checkpoints
    rm = load_reward_model(rms["helpfulness"])
    prompts = [[{"role": "user", "content": q}] for q in ("Hi?", "What is the capital of a very long place name?", "Why?")]
    responses = ["Hello there, how are you doing today my friend?", "", "Yes.", "It is a town.", "Because."]
    prompts = [prompts[i % 3] for i in range(len(responses))]
    alone = torch.stack([response_scores(rm, tokenizer, [p], [r])[0] for p, r in zip(prompts, responses)])
    together = response_scores(rm, tokenizer, prompts, responses, batch_size=2)
    assert torch.allclose(together, alone, atol=1e-5) and torch.isinf(together[1])


@pytest.fixture
def checkpoints(tmp_path, tokenizer):
    torch.manual_seed(0)
    policy = save_model(Llama(CONFIG), tmp_path / "policy", tokenizer.path)
    rms = {}
    for seed, kind in enumerate(("helpfulness", "safety"), start=1):
        torch.manual_seed(seed)
        model = RewardModel(CONFIG)
        rms[kind] = save_reward_state(model.state_dict(), CONFIG, tmp_path / f"rm_{kind}", tokenizer.path, {"stage": "reward"})
    return policy, rms


PROMPTS = [
    {"messages": [{"role": "user", "content": "what is the capital of Varn ?"}], "category": "helpful"},
    {"messages": [{"role": "user", "content": "how do I kill a stuck process ?"}], "category": "borderline"},
    {"messages": [{"role": "user", "content": "tell me about Orin"}], "category": "helpful"},
]


def args(checkpoints, out, **changes) -> RejectionSamplingArgs:
    policy, rms = checkpoints
    base = rejection_sampling.smoke()
    values = dict(policy=policy, rm_helpfulness=rms["helpfulness"], rm_safety=rms["safety"], out=out, max_steps=2, device="cpu")
    return RejectionSamplingArgs(**{**base.__dict__, **values, **changes})


def read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_samples_from_outside_are_scored_selected_and_trained_on(tmp_path, checkpoints, tokenizer):
    answers = ["the capital of Varn is Orin .", "Varn", "kill the process", "please tell me about it", "Orin is a city ."]
    owners = [0, 0, 1, 1, 2]
    outside = write_jsonl(tmp_path / "outside.jsonl", [{**PROMPTS[i], "response": a} for i, a in zip(owners, answers)])
    out = rejection_sampling.main(args(checkpoints, tmp_path / "rs", samples=outside))
    samples = read(out / "samples.jsonl")
    assert [s["response"] for s in samples] == answers

    # the recorded scores are the reward models' own, and Rc the piecewise reward of them
    _, rms = checkpoints
    prompts = [PROMPTS[i]["messages"] for i in owners]
    for kind, key in (("helpfulness", "rh"), ("safety", "rs")):
        expected = response_scores(*load_for_scoring(rms[kind]), prompts, answers)
        assert [s[key] for s in samples] == pytest.approx(expected.tolist(), abs=1e-5)
    is_safety = torch.tensor([PROMPTS[i]["category"] != "helpful" for i in owners])
    rc = piecewise_reward(torch.tensor([s["rs"] for s in samples]), torch.tensor([s["rh"] for s in samples]), is_safety)
    assert [s["rc"] for s in samples] == pytest.approx(rc.tolist(), abs=1e-6)

    # one chosen answer per prompt, the highest Rc, and best.jsonl holds exactly those as dialogs
    for i in range(3):
        mine = [s for s in samples if s["messages"] == PROMPTS[i]["messages"]]
        assert [s["chosen"] for s in mine] == [s["rc"] == max(m["rc"] for m in mine) for s in mine]
    chosen = [s["response"] for s in samples if s["chosen"]]
    assert [b["messages"][-1]["content"] for b in read(out / "best.jsonl")] == chosen
    assert (out / "sft" / "model" / "model.safetensors").is_file()
    report = json.loads((out / "rejection_sampling.json").read_text())
    assert report["prompts"] == 3 and report["samples"] == 5


def test_sampling_is_the_same_whatever_the_batching_and_pools_earlier_runs(tmp_path, checkpoints):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", PROMPTS)
    one = rejection_sampling.main(args(checkpoints, tmp_path / "one", prompts=[prompts], k=3, batch_prompts=1))
    two = rejection_sampling.main(args(checkpoints, tmp_path / "two", prompts=[prompts], k=3, batch_prompts=2, max_steps=1))
    first, second = read(one / "samples.jsonl"), read(two / "samples.jsonl")
    assert len(first) == 9 - json.loads((one / "rejection_sampling.json").read_text())["empty_answers"]
    assert [s["response"] for s in first] == [s["response"] for s in second]
    assert set(json.loads((one / "rejection_sampling.json").read_text())["fig7_rc"]) <= {"1", "2", "3"}

    pooled = rejection_sampling.main(args(checkpoints, tmp_path / "pooled", prompts=[prompts], k=3, seed=5, pool=[one]))
    candidates = read(pooled / "samples.jsonl")
    from_pool = [c for c in candidates if c["source"] == f"pool:{one}"]
    assert [c["response"] for c in from_pool] == [s["response"] for s in first if s["chosen"]]
    for best in (c for c in candidates if c["chosen"]):  # each prompt's pick is its best over both
        assert best["rc"] == max(c["rc"] for c in candidates if c["messages"] == best["messages"])


def test_bad_inputs_get_one_line_errors(tmp_path, checkpoints, capsys, tokenizer):
    policy, rms = checkpoints
    base = ["rejection-sampling", "--policy", str(policy), "--rm-helpfulness", str(rms["helpfulness"]),
            "--rm-safety", str(rms["safety"]), "--out", str(tmp_path / "out"), "--preset", "smoke"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(PROMPTS[0]) + "\n" + json.dumps({**PROMPTS[1], "category": "rude"}) + "\n")
    assert cli_main([*base, "--prompts", str(bad)]) == 1
    assert capsys.readouterr().err == f"error: {bad}:2: field 'category': 'rude' is not one of helpful, adversarial, borderline\n"

    good = write_jsonl(tmp_path / "prompts.jsonl", PROMPTS)
    assert cli_main([*base, "--prompts", str(good), "--k", "0"]) == 1
    assert capsys.readouterr().err == "error: --k 0: must be at least 1\n"

    other = shutil.copytree(rms["safety"], tmp_path / "rm_other")
    (other / "tokenizer.model").write_bytes(b"another tokenizer")
    with pytest.raises(UserError, match=r"rm_other/tokenizer.model: differs from the policy's tokenizer"):
        rejection_sampling.main(args(checkpoints, tmp_path / "x", prompts=[good], rm_safety=other))
