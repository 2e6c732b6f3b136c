"""Importing Meta's checkpoint format (params.json + model-parallel consolidated.NN.pth shards).

The expected logits come from a reference forward written here from Meta's description of the
model: rotary embedding on interleaved pairs (2i, 2i+1) as complex multiplication, the layout of
Meta's weights, which llamaforge permutes on import into Hugging Face's rotate-half layout.
"""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from llamaforge.cli import main
from llamaforge.model import Llama

VOCAB = 300
# (params.json, FFN hidden size by Meta's formula, worked out by hand)
MHA = ({"dim": 64, "n_layers": 2, "n_heads": 4, "multiple_of": 32, "norm_eps": 1e-5, "vocab_size": -1}, 192)
# GQA with a multiplier: int(1.3 * int(8 * 64 / 3)) = int(1.3 * 170) = 221 -> next multiple of 16: 224
GQA = (
    {"dim": 64, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "multiple_of": 16, "ffn_dim_multiplier": 1.3,
     "norm_eps": 1e-6, "vocab_size": -1},
    224,
)


def meta_weights(params: dict, hidden: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random unsharded weights with Meta's names and shapes."""
    gen = torch.Generator().manual_seed(seed)
    dim, heads = params["dim"], params["n_heads"]
    kv_dim = params.get("n_kv_heads", heads) * dim // heads
    shapes = {"tok_embeddings.weight": (VOCAB, dim), "norm.weight": (dim,), "output.weight": (VOCAB, dim)}
    for i in range(params["n_layers"]):
        shapes |= {
            f"layers.{i}.attention.wq.weight": (dim, dim),
            f"layers.{i}.attention.wk.weight": (kv_dim, dim),
            f"layers.{i}.attention.wv.weight": (kv_dim, dim),
            f"layers.{i}.attention.wo.weight": (dim, dim),
            f"layers.{i}.feed_forward.w1.weight": (hidden, dim),
            f"layers.{i}.feed_forward.w2.weight": (dim, hidden),
            f"layers.{i}.feed_forward.w3.weight": (hidden, dim),
            f"layers.{i}.attention_norm.weight": (dim,),
            f"layers.{i}.ffn_norm.weight": (dim,),
        }
    # std 0.15 makes attention far from uniform, so a wrong rotary layout changes the logits.
    return {
        name: 1 + 0.2 * torch.randn(shape, generator=gen) if len(shape) == 1 else 0.15 * torch.randn(shape, generator=gen)
        for name, shape in shapes.items()
    }


def split_like_meta(weights: dict[str, torch.Tensor], head_dim: int, parts: int = 2) -> list[dict]:
    """Meta's model parallelism: column-parallel layers split their output rows (dim 0), row-parallel
    layers and the embedding their input columns (dim 1); norms are copied into every shard."""
    rope_freqs = 1.0 / 10000.0 ** (torch.arange(0, head_dim, 2).float() / head_dim)
    shards = [{"rope.freqs": rope_freqs.to(torch.bfloat16)} for _ in range(parts)]
    for name, tensor in weights.items():
        kind = name.split(".")[-2]
        if kind in ("wq", "wk", "wv", "w1", "w3", "output"):
            pieces = tensor.chunk(parts, dim=0)
        elif kind in ("wo", "w2", "tok_embeddings"):
            pieces = tensor.chunk(parts, dim=1)
        else:
            pieces = [tensor] * parts
        for shard, piece in zip(shards, pieces):
            shard[name] = piece.clone()
    return shards


def write_meta_checkpoint(directory, params: dict, weights: dict, parts: int = 2) -> None:
    directory.mkdir(parents=True)
    (directory / "params.json").write_text(json.dumps(params))
    for i, shard in enumerate(split_like_meta(weights, params["dim"] // params["n_heads"], parts)):
        torch.save(shard, directory / f"consolidated.{i:02d}.pth")


def meta_reference_logits(w: dict, params: dict, tokens: torch.Tensor) -> torch.Tensor:
    """Llama 2 forward as Meta describes it, on Meta-layout weights. tokens (B, T) -> (B, T, V)."""
    B, T = tokens.shape
    dim, n_heads, eps = params["dim"], params["n_heads"], params["norm_eps"]
    n_kv = params.get("n_kv_heads", n_heads)
    head_dim = dim // n_heads

    def rms_norm(x, weight):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight

    # Pair (2i, 2i+1) of each head is one complex number, rotated by angle t * 10000^(-2i/head_dim).
    freqs = 10000.0 ** (-torch.arange(0, head_dim, 2).float() / head_dim)  # (head_dim/2,)
    angles = torch.outer(torch.arange(T).float(), freqs)  # (T, head_dim/2)
    rotation = torch.polar(torch.ones_like(angles), angles)[None, :, None, :]  # (1, T, 1, head_dim/2)

    def rotate(x):  # (B, T, heads, head_dim)
        pairs = torch.view_as_complex(x.reshape(*x.shape[:-1], head_dim // 2, 2))
        return torch.view_as_real(pairs * rotation).flatten(-2)

    causal = torch.full((T, T), float("-inf")).triu(1)
    h = w["tok_embeddings.weight"][tokens]  # (B, T, dim)
    for i in range(params["n_layers"]):
        p = f"layers.{i}."
        x = rms_norm(h, w[p + "attention_norm.weight"])
        q = rotate((x @ w[p + "attention.wq.weight"].T).view(B, T, n_heads, head_dim))
        k = rotate((x @ w[p + "attention.wk.weight"].T).view(B, T, n_kv, head_dim))
        v = (x @ w[p + "attention.wv.weight"].T).view(B, T, n_kv, head_dim)
        k = k.repeat_interleave(n_heads // n_kv, dim=2)  # query head j reads kv head j // n_rep
        v = v.repeat_interleave(n_heads // n_kv, dim=2)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, heads, T, head_dim)
        scores = q @ k.transpose(-1, -2) / math.sqrt(head_dim) + causal
        attended = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, T, dim)
        h = h + attended @ w[p + "attention.wo.weight"].T
        x = rms_norm(h, w[p + "ffn_norm.weight"])
        gate, up = x @ w[p + "feed_forward.w1.weight"].T, x @ w[p + "feed_forward.w3.weight"].T
        h = h + (F.silu(gate) * up) @ w[p + "feed_forward.w2.weight"].T
    return rms_norm(h, w["norm.weight"]) @ w["output.weight"].T


TOKENS = torch.tensor([[1, 17, 250, 3, 99, 99, 42, 7, 128, 299, 0, 64], [1, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]])


@pytest.mark.parametrize("params, hidden", [MHA, GQA], ids=["mha", "gqa"])
def test_convert_matches_meta_reference(tmp_path, params, hidden):
    weights = meta_weights(params, hidden)
    src, dst = tmp_path / "meta", tmp_path / "hf"
    write_meta_checkpoint(src, params, weights)
    with torch.no_grad():
        expected = meta_reference_logits(weights, params, TOKENS)

    assert main(["convert", "--from", "meta", str(src), str(dst)]) == 0
    model = Llama.from_pretrained(dst)
    assert model.config.vocab_size == VOCAB and model.config.hidden_dim == hidden
    assert model.config.kv_heads == params.get("n_kv_heads", 4) and model.config.norm_eps == params["norm_eps"]
    with torch.no_grad():
        assert (model(TOKENS) - expected).abs().max() <= 1e-4

        # The check is sensitive to the rotary layout: Meta's rows loaded unpermuted disagree.
        unpermuted = Llama(model.config)
        unpermuted.load_state_dict(weights)
        assert (unpermuted(TOKENS) - expected).abs().max() > 1e-2

    transformers = pytest.importorskip("transformers")
    hf_model = transformers.LlamaForCausalLM.from_pretrained(dst, dtype=torch.float32).eval()
    with torch.no_grad():
        assert (hf_model(TOKENS).logits - expected).abs().max() <= 1e-4


def test_single_shard_and_four_shards_give_the_same_model(tmp_path):
    params, hidden = GQA
    params = {**params, "n_kv_heads": 4}  # four shards need the kv heads to split four ways
    weights = meta_weights(params, hidden, seed=1)
    models = []
    for parts in (1, 4):
        src, dst = tmp_path / f"meta{parts}", tmp_path / f"hf{parts}"
        write_meta_checkpoint(src, params, weights, parts)
        assert len(list(src.glob("consolidated.*.pth"))) == parts
        assert main(["convert", str(src), str(dst)]) == 0
        models.append(Llama.from_pretrained(dst))
    with torch.no_grad():
        expected = meta_reference_logits(weights, params, TOKENS)
        for model in models:
            assert (model(TOKENS) - expected).abs().max() <= 1e-4


def test_tokenizer_next_to_shards_is_copied(tmp_path):
    params, hidden = MHA
    src = tmp_path / "meta"
    write_meta_checkpoint(src, params, meta_weights(params, hidden))
    (src / "tokenizer.model").write_bytes(b"sentencepiece bytes \x00\x01")
    assert main(["convert", "--from", "meta", str(src), str(tmp_path / "hf")]) == 0
    assert (tmp_path / "hf" / "tokenizer.model").read_bytes() == b"sentencepiece bytes \x00\x01"
    record = json.loads((tmp_path / "hf" / "llamaforge.json").read_text())
    assert record["stage"] == "convert" and record["parent"] == str(src)


def convert_error(capsys, src, dst) -> str:
    assert main(["convert", "--from", "meta", str(src), str(dst)]) == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "Traceback" not in err
    assert not dst.exists()
    return err


def test_missing_params_json_is_a_one_line_error(tmp_path, capsys):
    params, hidden = MHA
    src = tmp_path / "meta"
    write_meta_checkpoint(src, params, meta_weights(params, hidden))
    (src / "params.json").unlink()
    assert str(src / "params.json") in convert_error(capsys, src, tmp_path / "hf")


def test_no_shards_is_a_one_line_error(tmp_path, capsys):
    src = tmp_path / "meta"
    src.mkdir()
    (src / "params.json").write_text(json.dumps(MHA[0]))
    err = convert_error(capsys, src, tmp_path / "hf")
    assert str(src) in err and "consolidated" in err


def test_missing_source_directory_is_a_one_line_error(tmp_path, capsys):
    assert str(tmp_path / "nope") in convert_error(capsys, tmp_path / "nope", tmp_path / "hf")


def test_params_that_do_not_fit_the_weights_is_a_one_line_error(tmp_path, capsys):
    params, hidden = MHA
    src = tmp_path / "meta"
    write_meta_checkpoint(src, params, meta_weights(params, hidden))
    (src / "params.json").write_text(json.dumps({**params, "multiple_of": 256}))  # FFN 256, weights 192
    err = convert_error(capsys, src, tmp_path / "hf")
    assert str(src / "params.json") in err and "192" in err and "256" in err
