"""Logits parity with Hugging Face transformers' LlamaForCausalLM, in both directions."""

import pytest
import torch
import transformers

from llamaforge.checkpoint import config_to_hf
from llamaforge.config import ModelConfig
from llamaforge.model import Llama

CONFIGS = {
    "multi-head": ModelConfig(dim=64, n_layers=2, n_heads=4, vocab_size=300, multiple_of=32, max_seq_len=128),
    "gqa": ModelConfig(dim=96, n_layers=3, n_heads=6, n_kv_heads=2, vocab_size=320, multiple_of=32, max_seq_len=128),
    "mqa, ffn multiplier": ModelConfig(
        dim=64, n_layers=2, n_heads=4, n_kv_heads=1, vocab_size=256, ffn_dim_multiplier=1.3, multiple_of=64,
        rope_theta=500000.0, norm_eps=1e-6, max_seq_len=128,
    ),
}


def random_tokens(vocab_size, seed=0):
    return torch.randint(0, vocab_size, (2, 33), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", CONFIGS)
def test_ours_to_hf(name, tmp_path):
    torch.manual_seed(0)
    ours = Llama(CONFIGS[name]).eval()
    ours.save_pretrained(tmp_path / "ckpt")
    theirs = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "ckpt").eval()
    tokens = random_tokens(ours.config.vocab_size)
    with torch.no_grad():
        diff = (ours(tokens) - theirs(tokens).logits).abs().max().item()
    assert diff <= 1e-4


@pytest.mark.parametrize("name", CONFIGS)
def test_hf_to_ours(name, tmp_path):
    c = CONFIGS[name]
    hf_config = transformers.LlamaConfig(
        vocab_size=c.vocab_size, hidden_size=c.dim, intermediate_size=c.hidden_dim, num_hidden_layers=c.n_layers,
        num_attention_heads=c.n_heads, num_key_value_heads=c.kv_heads, rms_norm_eps=c.norm_eps,
        rope_theta=c.rope_theta, max_position_embeddings=c.max_seq_len, tie_word_embeddings=False,
    )
    torch.manual_seed(1)
    theirs = transformers.LlamaForCausalLM(hf_config).eval()
    theirs.save_pretrained(tmp_path / "hf")  # Hugging Face's own writer: safetensors
    ours = Llama.from_pretrained(tmp_path / "hf").eval()
    # Same shape (the FFN size may be expressed with other multiple_of / multiplier values).
    assert config_to_hf(ours.config, torch.float32) == config_to_hf(c, torch.float32)
    tokens = random_tokens(c.vocab_size, seed=1)
    with torch.no_grad():
        diff = (ours(tokens) - theirs(tokens).logits).abs().max().item()
    assert diff <= 1e-4


def test_hf_sharded_checkpoint_loads(tmp_path):
    c = CONFIGS["gqa"]
    hf_config = transformers.LlamaConfig(
        vocab_size=c.vocab_size, hidden_size=c.dim, intermediate_size=c.hidden_dim, num_hidden_layers=c.n_layers,
        num_attention_heads=c.n_heads, num_key_value_heads=c.kv_heads, tie_word_embeddings=False,
        max_position_embeddings=c.max_seq_len, rms_norm_eps=c.norm_eps,
    )
    theirs = transformers.LlamaForCausalLM(hf_config).eval()
    theirs.save_pretrained(tmp_path / "hf", max_shard_size="100KB")
    assert (tmp_path / "hf" / "model.safetensors.index.json").is_file()
    assert len(list((tmp_path / "hf").glob("model-*.safetensors"))) > 1
    ours = Llama.from_pretrained(tmp_path / "hf").eval()
    tokens = random_tokens(c.vocab_size, seed=2)
    with torch.no_grad():
        assert (ours(tokens) - theirs(tokens).logits).abs().max().item() <= 1e-4


def test_kv_cache_parity_with_hf_generate(tmp_path):
    torch.manual_seed(0)
    ours = Llama(CONFIGS["gqa"]).eval()
    ours.save_pretrained(tmp_path / "ckpt")
    theirs = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "ckpt").eval()
    from llamaforge.generate import generate

    prompt = [1, 17, 42, 99, 3, 250]
    tokens, _ = generate(ours, [prompt], max_new_tokens=20, eos_id=-1)
    hf = theirs.generate(torch.tensor([prompt]), max_new_tokens=20, do_sample=False, eos_token_id=None, pad_token_id=0)
    assert tokens[0] == hf[0, len(prompt):].tolist()
