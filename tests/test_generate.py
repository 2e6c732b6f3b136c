import pytest
import torch

from llamaforge.config import ModelConfig
from llamaforge.generate import generate, sample_top_p
from llamaforge.model import Llama

PROMPTS = [[1, 5, 6, 7, 8, 9, 10, 11], [1, 20], [1, 3, 3, 3], [1, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51]]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    config = ModelConfig(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=96, multiple_of=16, max_seq_len=64)
    return Llama(config).eval()


def test_greedy_ragged_batch_equals_one_by_one(model):
    tokens, logprobs = generate(model, PROMPTS, max_new_tokens=16, eos_id=-1)
    for i, prompt in enumerate(PROMPTS):
        alone_tokens, alone_logprobs = generate(model, [prompt], max_new_tokens=16, eos_id=-1)
        assert tokens[i] == alone_tokens[0]
        torch.testing.assert_close(torch.tensor(logprobs[i]), torch.tensor(alone_logprobs[0]), atol=1e-5, rtol=0)


def test_sampled_ragged_batch_equals_one_by_one(model):
    tokens, _ = generate(model, PROMPTS, max_new_tokens=16, temperature=1.2, top_p=0.95, seed=7, eos_id=-1)
    for i, prompt in enumerate(PROMPTS):  # sequence i draws from generator seed + i
        alone, _ = generate(model, [prompt], max_new_tokens=16, temperature=1.2, top_p=0.95, seed=7 + i, eos_id=-1)
        assert tokens[i] == alone[0]
    again, _ = generate(model, PROMPTS, max_new_tokens=16, temperature=1.2, top_p=0.95, seed=7, eos_id=-1)
    assert again == tokens
    other, _ = generate(model, PROMPTS, max_new_tokens=16, temperature=1.2, top_p=0.95, seed=8, eos_id=-1)
    assert other != tokens


def test_logprobs_are_those_of_the_full_forward(model):
    tokens, logprobs = generate(model, PROMPTS[:2], max_new_tokens=10, temperature=0.8, top_p=1.0, seed=1, eos_id=-1)
    for prompt, new, new_logprobs in zip(PROMPTS, tokens, logprobs):
        with torch.no_grad():
            logits = model(torch.tensor([prompt + new]))[0, len(prompt) - 1 : -1]  # predicts each new token
        expected = torch.log_softmax(logits / 0.8, dim=-1).gather(-1, torch.tensor(new)[:, None]).squeeze(-1)
        torch.testing.assert_close(torch.tensor(new_logprobs), expected, atol=1e-5, rtol=0)


def test_each_sequence_stops_at_its_own_eos(model):
    free, _ = generate(model, PROMPTS, max_new_tokens=12, eos_id=-1)
    eos = free[0][4]  # make the token sequence 0 emits at step 4 the EOS
    tokens, logprobs = generate(model, PROMPTS, max_new_tokens=12, eos_id=eos)
    for i in range(len(PROMPTS)):
        stop = free[i].index(eos) + 1 if eos in free[i] else 12
        assert tokens[i] == free[i][:stop]  # ends with the EOS itself, nothing after
        assert len(logprobs[i]) == len(tokens[i])
    assert tokens[0][-1] == eos and len(tokens[0]) <= 5


def test_generation_stops_at_the_context_length(model):
    tokens, _ = generate(model, [[1] * 60], max_new_tokens=50, eos_id=-1)
    assert len(tokens[0]) == 4  # 64-token context
    with pytest.raises(ValueError, match="no room"):
        generate(model, [[1] * 64], max_new_tokens=5)


def test_no_truncation_inverts_the_cdf_in_vocabulary_order():
    probs = torch.tensor([[0.1, 0.6, 0.3]]).expand(4, 3)  # CDF 0.1, 0.7, 1.0
    picks = sample_top_p(probs, None, torch.tensor([0.05, 0.1, 0.5, 0.95]))
    assert picks.tolist() == [0, 1, 1, 2]  # a uniform u picks the first token whose CDF exceeds u


def test_top_p_keeps_the_smallest_nucleus():
    # probs 0.5, 0.3, 0.15, 0.05 (tokens 1, 3, 0, 2) with top_p 0.7: the mass before token 3 is
    # 0.5 <= 0.7 (kept), before token 0 it is 0.8 > 0.7 (dropped). Renormalized: 0.625 and 0.375.
    probs = torch.tensor([[0.15, 0.5, 0.05, 0.3]])
    # Inverse CDF over the kept mass 0.8: u * 0.8 below 0.5 picks token 1, from 0.5 on token 3.
    picks = sample_top_p(probs.expand(4, 4), 0.7, torch.tensor([0.0, 0.62, 0.63, 0.999]))
    assert picks.tolist() == [1, 1, 3, 3]
    draws = sample_top_p(probs.expand(4000, 4), 0.7, torch.rand(4000, generator=torch.Generator().manual_seed(0)))
    counts = torch.bincount(draws, minlength=4).float() / 4000
    assert counts[0] == 0 and counts[2] == 0
    assert abs(counts[1].item() - 0.625) < 0.03 and abs(counts[3].item() - 0.375) < 0.03
    # A nucleus smaller than the top token's probability keeps only that token.
    assert sample_top_p(probs.expand(5, 4), 0.1, torch.rand(5)).tolist() == [1] * 5


@pytest.mark.parametrize("decode", ["static", "compiled"])
def test_static_decoding_gives_the_plain_path_tokens(model, decode):
    # Ragged prompts, greedy, and an EOS that stops sequence 0 early while the others go on.
    free, _ = generate(model, PROMPTS, max_new_tokens=12, eos_id=-1)
    eos = free[0][3]
    plain, plain_logprobs = generate(model, PROMPTS, max_new_tokens=12, eos_id=eos)
    tokens, logprobs = generate(model, PROMPTS, max_new_tokens=12, eos_id=eos, decode=decode)
    assert tokens == plain
    assert tokens[0][-1] == eos and len(tokens[0]) <= 4
    for a, b in zip(logprobs, plain_logprobs):
        torch.testing.assert_close(torch.tensor(a), torch.tensor(b), atol=1e-4, rtol=0)


@pytest.mark.parametrize("decode", ["static", "compiled"])
def test_static_sampling_gives_the_plain_path_tokens(model, decode):
    # Sampling happens inside the (compiled) step, from the same pre-drawn per-sequence numbers.
    kwargs = dict(max_new_tokens=10, temperature=0.9, top_p=0.9, seed=3, eos_id=-1)
    plain, plain_logprobs = generate(model, PROMPTS, **kwargs)
    tokens, logprobs = generate(model, PROMPTS, decode=decode, **kwargs)
    assert tokens == plain
    for a, b in zip(logprobs, plain_logprobs):
        torch.testing.assert_close(torch.tensor(a), torch.tensor(b), atol=1e-4, rtol=0)


def test_static_cache_is_reused_while_the_shape_stays():
    from llamaforge.generate import release_static_cache, static_cache

    torch.manual_seed(0)
    small = Llama(ModelConfig(dim=32, n_layers=1, n_heads=2, vocab_size=64, multiple_of=16, max_seq_len=512))
    first = static_cache(small, 2, 256, torch.float32)
    assert static_cache(small, 2, 256, torch.float32) is first
    assert static_cache(small, 3, 256, torch.float32) is not first
    release_static_cache(small)
    assert static_cache(small, 3, 256, torch.float32).keys[0].shape == (3, 2, 256, 16)


def test_compiled_decoding_serves_several_models_and_keeps_none_alive():
    import gc
    import weakref

    torch.manual_seed(1)
    config = ModelConfig(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=96, multiple_of=16, max_seq_len=64)
    first, second = Llama(config).eval(), Llama(config).eval()
    for model in (first, second):  # the shared compiled step must use each model's own weights
        plain, _ = generate(model, PROMPTS, max_new_tokens=8, eos_id=-1)
        assert generate(model, PROMPTS, max_new_tokens=8, eos_id=-1, decode="compiled")[0] == plain
    alive = weakref.ref(second)
    del model, second
    gc.collect()
    assert alive() is None


def test_shared_prefill_samples_equal_each_prompt_sampled_alone(model):
    # Ragged prompts, K = 3: output n = i*K + j is prompt i's j-th sample, drawn with seed 5 + n.
    K = 3
    tokens, logprobs = generate(model, PROMPTS, max_new_tokens=12, temperature=1.0, seed=5, eos_id=-1, samples_per_prompt=K)
    assert len(tokens) == len(logprobs) == len(PROMPTS) * K
    for n in range(len(tokens)):
        alone, alone_logprobs = generate(model, [PROMPTS[n // K]], max_new_tokens=12, temperature=1.0, seed=5 + n, eos_id=-1)
        assert tokens[n] == alone[0]
        torch.testing.assert_close(torch.tensor(logprobs[n]), torch.tensor(alone_logprobs[0]), atol=1e-5, rtol=0)
    assert tokens[0] != tokens[1]  # the K samples of a prompt differ (own seeds)


@pytest.mark.parametrize("decode", ["static", "compiled"])
def test_shared_prefill_on_static_paths_equals_repeated_prompts(model, decode):
    # The same outputs as passing each prompt K times, with an EOS that stops some samples early.
    K, kwargs = 2, dict(max_new_tokens=10, temperature=1.0, top_p=0.9, seed=11)
    free, _ = generate(model, PROMPTS, eos_id=-1, samples_per_prompt=K, **kwargs)
    eos = free[1][2]
    repeated = [p for p in PROMPTS for _ in range(K)]
    expected, expected_logprobs = generate(model, repeated, eos_id=eos, decode="plain", **kwargs)
    tokens, logprobs = generate(model, PROMPTS, eos_id=eos, decode=decode, samples_per_prompt=K, **kwargs)
    assert tokens == expected and tokens[1][-1] == eos and len(tokens[1]) <= 3
    for a, b in zip(logprobs, expected_logprobs):
        torch.testing.assert_close(torch.tensor(a), torch.tensor(b), atol=1e-4, rtol=0)


def test_shared_prefill_runs_each_prompt_through_the_model_once(model, monkeypatch):
    calls = []  # (rows, tokens per row) of every pass through the model
    hidden_states = model.hidden_states

    def counting(tokens, *args, **kwargs):
        calls.append(tuple(tokens.shape))
        return hidden_states(tokens, *args, **kwargs)

    monkeypatch.setattr(model, "hidden_states", counting)
    prompts = [[1, 5, 6, 7], [1, 8, 9, 10]]  # equal lengths: the prefill holds no padding
    generate(model, prompts, max_new_tokens=5, temperature=1.0, eos_id=-1, samples_per_prompt=4)
    assert calls[0] == (2, 4)  # 8 tokens = the sum of the prompt lengths, not 4 x 8
    assert calls[1:] == [(8, 1)] * 4  # then one token for each of the 2 x 4 samples per step
    calls.clear()
    generate(model, PROMPTS, max_new_tokens=3, temperature=1.0, eos_id=-1, samples_per_prompt=4)
    assert calls[0] == (len(PROMPTS), max(map(len, PROMPTS))) and all(c == (4 * len(PROMPTS), 1) for c in calls[1:])


def test_samples_per_prompt_must_be_positive(model):
    with pytest.raises(ValueError, match="samples_per_prompt"):
        generate(model, PROMPTS, max_new_tokens=4, samples_per_prompt=0)
