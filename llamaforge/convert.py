"""Import Meta's original Llama 2 checkpoints (`params.json` + `consolidated.NN.pth`) into our layout.

Meta's 13B and 70B checkpoints are split for model parallelism: each shard holds a slice of every
projection. Column-parallel weights (wq, wk, wv, w1, w3, output) were split along their output
dimension, row-parallel ones (wo, w2) and the embedding along their input dimension; norms are
replicated. Meta's rotary embedding rotates interleaved pairs (2i, 2i+1) where ours rotates
(i, i + head_dim/2), so wq and wk rows are permuted once here and the model stays unchanged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import torch
import tyro

from llamaforge.checkpoint import TOKENIZER_FILE, load_tensors, read_json
from llamaforge.config import ModelConfig
from llamaforge.errors import UserError
from llamaforge.flags import OptionalPath
from llamaforge.model import Llama

_CONCAT_DIM = {"wq": 0, "wk": 0, "wv": 0, "w1": 0, "w3": 0, "output": 0, "wo": 1, "w2": 1, "tok_embeddings": 1}


def merge_shards(shards: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """One state dict from Meta's model-parallel shards (a single shard passes through)."""
    merged = {}
    for name in shards[0]:
        if name == "rope.freqs":  # precomputed rotary frequencies; we compute our own
            continue
        kind = name.split(".")[-2]  # "layers.0.attention.wq.weight" -> "wq"; "norm.weight" -> "norm"
        if kind in _CONCAT_DIM and len(shards) > 1:
            merged[name] = torch.cat([s[name] for s in shards], dim=_CONCAT_DIM[kind])
        else:
            merged[name] = shards[0][name]
    return merged


def interleaved_to_half(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Reorder the rows of wq or wk (n_heads * head_dim, dim) from Meta's rotary pairing to ours."""
    rows, dim = weight.shape
    head_dim = rows // n_heads
    return weight.view(n_heads, head_dim // 2, 2, dim).transpose(1, 2).reshape(rows, dim)


def config_from_meta(params: dict, vocab_size: int, source: Path) -> ModelConfig:
    known = {"dim", "n_layers", "n_heads", "n_kv_heads", "multiple_of", "ffn_dim_multiplier", "norm_eps", "rope_theta"}
    try:
        fields = {k: v for k, v in params.items() if k in known and v is not None}
        return ModelConfig(**fields, vocab_size=vocab_size)
    except (TypeError, ValueError) as err:
        raise UserError(f"{source}: {err}") from None


def load_meta(directory: Path) -> Llama:
    params_path = directory / "params.json"
    params = read_json(params_path)
    shard_files = sorted(directory.glob("consolidated.*.pth"), key=lambda p: int(re.findall(r"\d+", p.name)[-1]))
    if not shard_files:
        raise UserError(f"{directory}: no consolidated.NN.pth files")
    state = merge_shards([load_tensors(f) for f in shard_files])
    if "tok_embeddings.weight" not in state:
        raise UserError(f"{shard_files[0]}: missing tensor 'tok_embeddings.weight'")
    config = config_from_meta(params, state["tok_embeddings.weight"].shape[0], params_path)
    for name in state:
        if name.endswith("attention.wq.weight"):
            state[name] = interleaved_to_half(state[name], config.n_heads)
        elif name.endswith("attention.wk.weight"):
            state[name] = interleaved_to_half(state[name], config.kv_heads)
    with torch.device("meta"):
        model = Llama(config)
    expected = model.state_dict()
    for name, tensor in state.items():
        if name not in expected or expected[name].shape != tensor.shape:
            shape = tuple(expected[name].shape) if name in expected else "no such tensor"
            raise UserError(f"{params_path}: tensor '{name}' {tuple(tensor.shape)} does not fit the shape it gives ({shape})")
    missing = set(expected) - set(state)
    if missing:
        raise UserError(f"{directory}: missing tensor '{sorted(missing)[0]}'")
    model.load_state_dict(state, assign=True)
    return model


@dataclass
class ConvertArgs:
    """Import Meta's original checkpoint format into a Hugging Face Llama directory."""

    src: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="SRC")]
    """Meta checkpoint directory (params.json, consolidated.00.pth, ...)."""
    dst: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="DST")]
    """Output directory (Hugging Face Llama layout)."""
    source_format: Annotated[Literal["meta"], tyro.conf.arg(name="from")] = "meta"
    """Format of SRC."""
    tokenizer: OptionalPath = None
    """tokenizer.model to include; default: SRC/tokenizer.model or its parent's, if present."""


def main(args: ConvertArgs) -> Path:
    if not args.src.is_dir():
        raise UserError(f"{args.src}: no such directory")
    tokenizer = args.tokenizer
    if tokenizer is None:
        tokenizer = next((p for p in (args.src / TOKENIZER_FILE, args.src.parent / TOKENIZER_FILE) if p.is_file()), None)
    elif not tokenizer.is_file():
        raise UserError(f"{tokenizer}: file not found")
    model = load_meta(args.src)
    out = model.save_pretrained(args.dst, tokenizer_path=tokenizer, info={"stage": "convert", "parent": str(args.src)})
    print(f"wrote {out} ({model.num_parameters() / 1e9:.2f}B parameters{', with tokenizer' if tokenizer else ''})")
    return out
