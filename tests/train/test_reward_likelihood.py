"""The reward model's optional likelihood term (model.RewardModel, likelihood_weight λ): the mean
log-probability of the answer's tokens against numbers computed by hand, the score it adds to, the
answer marks encode_response and pair_batch give it, and its weight's round trip through the head
file."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import safetensors.torch
import torch

from llamaforge import ModelConfig
from llamaforge.checkpoint import REWARD_HEAD_FILE, load_reward_model, save_reward_state
from llamaforge.data.preferences import Preference
from llamaforge.data.scoring import encode_response, score_inputs
from llamaforge.errors import UserError
from llamaforge.losses import MARGINS
from llamaforge.model import RewardModel, mean_answer_logprob
from llamaforge.train.reward import pair_batch

CONFIG = ModelConfig(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=400, multiple_of=16, max_seq_len=128)


def test_mean_answer_logprob_by_hand():
    # vocabulary of 3, dim 2: output logits = (h0, h1, 0), so each position's log-softmax is known
    output = torch.nn.Linear(2, 3, bias=False)
    output.weight.data = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    trunk = SimpleNamespace(output=output)
    hidden = torch.tensor([[[0.0, 0.0], [math.log(2), 0.0], [0.0, 0.0], [5.0, 5.0]],
                           [[0.0, math.log(3)], [0.0, 0.0], [9.0, 9.0], [9.0, 9.0]]])  # (B=2, T=4, dim=2)
    tokens = torch.tensor([[1, 2, 0, 1], [0, 1, 2, 2]])
    answer = torch.tensor([[False, False, True, True], [False, True, False, False]])
    got = mean_answer_logprob(trunk, hidden, tokens, answer)
    # row 0: token 0 at t=2 from position 1, logits (log 2, 0, 0): log(2/4); token 1 at t=3 from
    # position 2, logits (0, 0, 0): log(1/3)
    # row 1: token 1 at t=1 from position 0, logits (0, log 3, 0): log(3/5)
    assert got.tolist() == pytest.approx([(math.log(0.5) + math.log(1 / 3)) / 2, math.log(0.6)], abs=1e-6)


def test_score_adds_the_weighted_likelihood_of_the_answer_whatever_the_padding():
    torch.manual_seed(0)
    plain = RewardModel(CONFIG).eval()
    weighted = RewardModel(CONFIG, likelihood_weight=2.0).eval()
    weighted.load_state_dict(plain.state_dict() | {"likelihood_weight": torch.tensor(2.0)})
    g = torch.Generator().manual_seed(1)
    seqs = [torch.randint(3, 400, (n,), generator=g) for n in (9, 5)]
    answers = [3, 2]  # the last 3 and the last 2 tokens are the answers
    with torch.no_grad():
        expected = []
        for s, n in zip(seqs, answers):  # by the definition: the trunk's own logits, one row at a time
            logp = torch.log_softmax(plain.trunk(s[None])[0].float(), dim=-1)
            mean = sum(float(logp[t - 1, s[t]]) for t in range(len(s) - n, len(s))) / n
            head = float(plain(s[None], torch.ones(1, len(s), dtype=torch.bool)))
            expected.append(head + 2.0 * mean)
        T = 12
        right = torch.stack([torch.cat([s, torch.zeros(T - len(s), dtype=torch.long)]) for s in seqs])
        real = torch.stack([torch.arange(T) < len(s) for s in seqs])
        answer = torch.stack([(torch.arange(T) >= len(s) - n) & (torch.arange(T) < len(s)) for s, n in zip(seqs, answers)])
        assert weighted(right, real, answer).tolist() == pytest.approx(expected, abs=1e-4)
        rolled = [(r.roll(T - len(s)), m.roll(T - len(s)), a.roll(T - len(s))) for r, m, a, s in zip(right, real, answer, seqs)]
        left, left_real, left_answer = (torch.stack(x) for x in zip(*rolled))
        assert weighted(left, left_real, left_answer).tolist() == pytest.approx(expected, abs=1e-4)
        # the test can fail: the plain model's scores differ by the likelihood term
        assert abs(float(plain(right, real)[0]) - expected[0]) > 1e-2
        with pytest.raises(ValueError, match="answer"):
            weighted(right, real)


def test_encode_response_counts_the_last_answers_tokens(tokenizer):
    prompt = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}, {"role": "user", "content": "what is the river ?"}]
    ids, answer = encode_response(tokenizer, prompt, "the river is Varn .", 128)
    full, mask = tokenizer.encode_dialog([*prompt, {"role": "assistant", "content": "the river is Varn ."}])
    assert ids == full and ids[-1] == tokenizer.eos_id
    assert answer == len(mask) - 1 - max(i for i, m in enumerate(mask) if not m)  # not the first turn's answer
    assert tokenizer.decode(ids[-answer:]).strip() == "the river is Varn ."
    cut, cut_answer = encode_response(tokenizer, prompt, "the river is Varn .", 4)  # shorter than the answer
    assert cut == full[-4:] and cut_answer == 3
    tokens, real, marks = score_inputs([(ids, answer), (cut, cut_answer)])
    assert marks[0].tolist() == [False] * (len(ids) - answer) + [True] * answer
    assert marks[1].tolist() == [False] + [True] * 3 + [False] * (len(ids) - 4)
    assert not (marks & ~real).any()


def test_pair_batch_marks_each_sequences_answer(tokenizer):
    prompt = ({"role": "user", "content": "what is the river ?"},)
    pairs = [Preference(prompt, "the river is Varn .", "no", "better", None, False)]
    batch = pair_batch(pairs, tokenizer, MARGINS["small"], max_len=64, device="cpu")
    for row, response in enumerate(["the river is Varn .", "no"]):
        ids, n = encode_response(tokenizer, prompt, response, 64)
        assert batch["answer"][row].nonzero().flatten().tolist() == list(range(len(ids) - n, len(ids)))


def test_likelihood_weight_round_trips_through_the_head_file(tmp_path, tokenizer):
    torch.manual_seed(3)
    model = RewardModel(CONFIG, likelihood_weight=1.5).eval()
    directory = save_reward_state(model.state_dict(), CONFIG, tmp_path / "rm", tokenizer.path, {"stage": "reward"})
    assert safetensors.torch.load_file(directory / REWARD_HEAD_FILE)["likelihood_weight"].tolist() == [1.5]
    loaded = load_reward_model(directory)
    assert float(loaded.likelihood_weight) == 1.5
    plain = save_reward_state(RewardModel(CONFIG).state_dict(), CONFIG, tmp_path / "plain", tokenizer.path, {})
    assert set(safetensors.torch.load_file(plain / REWARD_HEAD_FILE)) == {"weight"}  # the paper's head file, as before
    assert float(load_reward_model(plain).likelihood_weight) == 0.0
    safetensors.torch.save_file({"weight": torch.zeros(1, 64), "likelihood_weight": torch.zeros(2)}, plain / REWARD_HEAD_FILE)
    with pytest.raises(UserError, match=REWARD_HEAD_FILE):
        load_reward_model(plain)
