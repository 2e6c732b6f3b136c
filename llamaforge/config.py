"""Model configuration with Meta's field names, and the model presets.

Presets are plain functions returning a `ModelConfig`: the paper's four shapes (§2.2) and small
shapes that train on a 2-core CPU.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class ModelConfig:
    """The shape of a Llama 2 model, named as in Meta's `params.json`."""

    dim: int = 4096
    n_layers: int = 32
    n_heads: int = 32
    n_kv_heads: int | None = None  # None: multi-head attention (n_kv_heads == n_heads)
    vocab_size: int = 32000
    multiple_of: int = 256  # the FFN hidden size is rounded up to a multiple of this
    ffn_dim_multiplier: float | None = None
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    max_seq_len: int = 4096

    def __post_init__(self) -> None:
        if self.dim % self.n_heads:
            raise ValueError(f"dim {self.dim} is not divisible by n_heads {self.n_heads}")
        if self.n_heads % self.kv_heads:
            raise ValueError(f"n_heads {self.n_heads} is not divisible by n_kv_heads {self.kv_heads}")
        if self.head_dim % 2:
            raise ValueError(f"head_dim {self.head_dim} must be even for rotary embeddings")

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def hidden_dim(self) -> int:
        """SwiGLU hidden size: 2/3 of 4*dim (keeps the FLOPs of a 4*dim GELU FFN), scaled, rounded up."""
        hidden = int(2 * 4 * self.dim / 3)
        if self.ffn_dim_multiplier is not None:
            hidden = int(self.ffn_dim_multiplier * hidden)
        return self.multiple_of * -(-hidden // self.multiple_of)

    def num_parameters(self) -> int:
        """Parameter count computed from the shape (equals `sum(p.numel())` of a `Llama`)."""
        d, kv = self.dim, self.kv_heads * self.head_dim
        attention = 2 * d * d + 2 * d * kv
        feed_forward = 3 * d * self.hidden_dim
        per_layer = attention + feed_forward + 2 * d  # + two RMSNorm weights
        return self.n_layers * per_layer + 2 * self.vocab_size * d + d

    def replace(self, **changes) -> ModelConfig:
        return dataclasses.replace(self, **changes)


# --- The paper's shapes (Meta params.json, paper §2.2) ---------------------------------------------


def llama2_7b() -> ModelConfig:
    return ModelConfig(dim=4096, n_layers=32, n_heads=32)


def llama2_13b() -> ModelConfig:
    return ModelConfig(dim=5120, n_layers=40, n_heads=40)


def llama2_34b() -> ModelConfig:
    # Never released as Llama 2; the shape is the one Code Llama 34B shipped with.
    return ModelConfig(dim=8192, n_layers=48, n_heads=64, n_kv_heads=8, ffn_dim_multiplier=1.0)


def llama2_70b() -> ModelConfig:
    return ModelConfig(
        dim=8192, n_layers=80, n_heads=64, n_kv_heads=8, ffn_dim_multiplier=1.3, multiple_of=4096
    )


# --- Small shapes for a 2-core CPU -----------------------------------------------------------------


def tiny() -> ModelConfig:
    """~6.3M parameters with GQA (8 query heads, 2 kv heads); the `demo` pipeline's model."""
    return ModelConfig(
        dim=256, n_layers=6, n_heads=8, n_kv_heads=2, vocab_size=4096, multiple_of=64, max_seq_len=512
    )


def smoke() -> ModelConfig:
    """~0.2M parameters: proves wiring in seconds, learns nothing much."""
    return ModelConfig(
        dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=512, multiple_of=32, max_seq_len=256
    )


MODEL_PRESETS = {
    "llama2_7b": llama2_7b,
    "llama2_13b": llama2_13b,
    "llama2_34b": llama2_34b,
    "llama2_70b": llama2_70b,
    "tiny": tiny,
    "smoke": smoke,
}
