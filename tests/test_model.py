import pytest
import torch

from llamaforge.config import ModelConfig, llama2_7b, llama2_13b, llama2_34b, llama2_70b, smoke, tiny
from llamaforge.model import KVCache, Llama


@pytest.mark.parametrize(
    "preset, billions",
    [(llama2_7b, 6.74), (llama2_13b, 13.0), (llama2_34b, 33.7), (llama2_70b, 69.0)],
)
def test_paper_parameter_counts(preset, billions):
    with torch.device("meta"):  # shapes only: nothing is allocated
        model = Llama(preset())
    assert round(model.num_parameters() / 1e9, 2 if billions < 10 else 1) == billions
    assert model.num_parameters() == preset().num_parameters()


def test_ffn_sizes_match_meta():
    # int(2 * 4 * dim / 3), times ffn_dim_multiplier, rounded up to multiple_of (Meta params.json)
    assert llama2_7b().hidden_dim == 11008
    assert llama2_13b().hidden_dim == 13824
    assert llama2_34b().hidden_dim == 22016
    assert llama2_70b().hidden_dim == 28672


def test_small_presets():
    config = tiny()
    assert 5e6 <= config.num_parameters() <= 10e6
    assert config.kv_heads < config.n_heads and config.vocab_size == 4096 and config.max_seq_len == 512
    assert smoke().num_parameters() < 1e6


def test_no_biases_and_untied_embeddings():
    model = Llama(smoke())
    assert all(not name.endswith("bias") for name, _ in model.named_parameters())
    assert model.output.weight.data_ptr() != model.tok_embeddings.weight.data_ptr()


def test_invalid_config_is_refused():
    with pytest.raises(ValueError, match="n_kv_heads"):
        ModelConfig(dim=64, n_heads=4, n_kv_heads=3)


@pytest.mark.parametrize("n_kv_heads", [4, 2, 1])
def test_kv_cache_decoding_equals_full_forward(n_kv_heads):
    torch.manual_seed(0)
    config = ModelConfig(dim=64, n_layers=2, n_heads=4, n_kv_heads=n_kv_heads, vocab_size=100, multiple_of=16, max_seq_len=64)
    model = Llama(config).eval()
    tokens = torch.randint(0, 100, (3, 21))
    with torch.no_grad():
        full = model(tokens)
        cache = KVCache.allocate(config, batch_size=3, max_len=32)
        pieces = [model(tokens[:, :9], cache=cache)]  # prefill
        pieces.append(model(tokens[:, 9:13], cache=cache))  # several tokens after a filled cache
        pieces += [model(tokens[:, t : t + 1], cache=cache) for t in range(13, 21)]  # one at a time
    assert cache.length == 21
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=0)


def test_causality_and_explicit_positions():
    torch.manual_seed(0)
    model = Llama(smoke()).eval()
    tokens = torch.randint(0, 512, (1, 12))
    changed = tokens.clone()
    changed[0, 8] = (changed[0, 8] + 1) % 512
    with torch.no_grad():
        a, b = model(tokens), model(changed)
        # Later tokens never influence earlier logits.
        torch.testing.assert_close(a[:, :8], b[:, :8], atol=0, rtol=0)
        assert (a[:, 8:] - b[:, 8:]).abs().max() > 1e-3
        # Default positions are 0..T-1; shifting every position changes nothing relative (RoPE is
        # relative) only up to float error, while a different relative layout changes logits.
        default = model(tokens, positions=torch.arange(12)[None])
        torch.testing.assert_close(default, a, atol=0, rtol=0)
        shifted = model(tokens, positions=torch.arange(12)[None] + 5)
        torch.testing.assert_close(shifted, a, atol=1e-4, rtol=0)


def test_block_diagonal_mask_isolates_examples():
    # Two examples packed in one row with positions restarting and a block-diagonal causal mask
    # give the same logits as each example alone (what SFT packing relies on).
    torch.manual_seed(0)
    model = Llama(smoke()).eval()
    first, second = torch.randint(0, 512, (1, 7)), torch.randint(0, 512, (1, 5))
    packed = torch.cat([first, second], dim=1)
    positions = torch.cat([torch.arange(7), torch.arange(5)])[None]
    example = torch.tensor([0] * 7 + [1] * 5)
    mask = (example[:, None] == example[None, :]) & torch.ones(12, 12, dtype=torch.bool).tril()
    with torch.no_grad():
        out = model(packed, positions=positions, mask=mask[None])
        torch.testing.assert_close(out[:, :7], model(first), atol=1e-5, rtol=0)
        torch.testing.assert_close(out[:, 7:], model(second), atol=1e-5, rtol=0)


def test_too_long_sequence_is_refused():
    model = Llama(smoke())
    with pytest.raises(ValueError, match="exceeds"):
        model(torch.zeros(1, 257, dtype=torch.long))
