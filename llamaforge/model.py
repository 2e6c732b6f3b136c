"""The Llama 2 model (paper §2.2): pre-norm RMSNorm, SwiGLU, rotary embeddings, grouped-query attention.

One forward serves training (full causal sequences, or any boolean mask, e.g. for packed examples)
and decoding (a `KVCache` that the forward reads and appends to). Module names follow Meta's
reference code; the rotary embedding uses the "rotate half" layout of Hugging Face checkpoints, so
those load without permuting weights (Meta's own checkpoints are permuted once, on import).
Nothing here knows about training, parallelism or file formats.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from llamaforge.config import ModelConfig
from llamaforge.losses import chunked_next_token_loss


class RMSNorm(nn.Module):
    """x / rms(x) * weight, computed in fp32 whatever the input dtype."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        normed = F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps)  # x / sqrt(mean(x^2) + eps)
        return self.weight * normed.type_as(x)


def rotary_cos_sin(positions: Tensor, head_dim: int, theta: float) -> tuple[Tensor, Tensor]:
    """cos and signed sin of each position's rotation angles, (B, 1, T, head_dim) in fp32.

    Dimension pair (i, i + head_dim/2) rotates by angle position * theta^(-2i/head_dim). The sin
    is negated on the first half, the sign the rotation gives those dimensions (see apply_rotary).
    """
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, device=positions.device).float() / head_dim)
    angles = positions.float()[..., None] * inv_freq  # (B, T, head_dim/2)
    sin = angles.sin()
    cos = torch.cat([angles.cos()] * 2, dim=-1)[:, None]  # (B, 1, T, head_dim)
    return cos, torch.cat([-sin, sin], dim=-1)[:, None]


def apply_rotary(x: Tensor, cos: Tensor, signed_sin: Tensor) -> Tensor:
    """Rotate query or key vectors x (B, heads, T, head_dim) by their positions' angles.

    Pair (a, b) = (x_i, x_{i+h}), h = head_dim/2, becomes (a cos - b sin, b cos + a sin): rolling x
    by h lines each b up with its a, and the signed sin supplies the minus.
    """
    return x * cos + x.roll(x.shape[-1] // 2, dims=-1) * signed_sin


@dataclass
class KVCache:
    """Preallocated keys and values of every layer, (B, n_kv_heads, max_len, head_dim) each.

    `length` is how many positions are filled; a forward with a cache writes its T new positions at
    `length` and advances it.
    """

    keys: list[Tensor]
    values: list[Tensor]
    length: int = 0

    @classmethod
    def allocate(
        cls, config: ModelConfig, batch_size: int, max_len: int, device=None, dtype=torch.float32
    ) -> KVCache:
        shape = (batch_size, config.kv_heads, max_len, config.head_dim)
        return cls(
            keys=[torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layers)],
            values=[torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layers)],
        )

    @property
    def max_len(self) -> int:
        return self.keys[0].shape[2]


class Attention(nn.Module):
    """Grouped-query attention: n_heads query heads share n_kv_heads key/value heads (paper §2.2)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = config.n_heads, config.kv_heads, config.head_dim
        self.wq = nn.Linear(config.dim, self.n_heads * self.head_dim, bias=False)
        self.wk = nn.Linear(config.dim, self.n_kv_heads * self.head_dim, bias=False)
        self.wv = nn.Linear(config.dim, self.n_kv_heads * self.head_dim, bias=False)
        self.wo = nn.Linear(self.n_heads * self.head_dim, config.dim, bias=False)

    def forward(
        self,
        x: Tensor,
        cos: Tensor,
        sin: Tensor,
        mask: Tensor | None,
        cache: tuple[Tensor, Tensor] | None = None,
        start: int | Tensor = 0,
    ) -> Tensor:
        B, T, _ = x.shape
        q = self.wq(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, hd)
        k = self.wk(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, KV, T, hd)
        v = self.wv(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, KV, T, hd)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)

        if cache is not None and isinstance(start, Tensor):
            # Shape-static decoding: write at a slot given as a tensor and attend over the whole
            # preallocated cache (the mask hides empty slots), so every step has the same shapes
            # and can be compiled once and replayed as a CUDA graph.
            cache[0].index_copy_(2, start, k)
            cache[1].index_copy_(2, start, v)
            k, v = cache  # (B, KV, max_len, hd)
        elif cache is not None:
            cache_k, cache_v = cache
            cache_k[:, :, start : start + T] = k
            cache_v[:, :, start : start + T] = v
            k, v = cache_k[:, :, : start + T], cache_v[:, :, : start + T]  # (B, KV, S, hd)

        groups = self.n_heads // self.n_kv_heads
        if T == 1 and groups > 1:
            # One new token per sequence: fold each kv head's query group into the query axis, so
            # attention runs on (B, KV, groups, hd) queries without expanding the cached keys.
            attn_mask = None if mask is None else mask[:, None]  # (B, 1, 1, S)
            q = q.reshape(B, self.n_kv_heads, groups, self.head_dim)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask).view(B, self.n_heads, 1, self.head_dim)
            return self.wo(out.view(B, 1, self.n_heads * self.head_dim))
        if mask is not None:
            attn_mask, is_causal = mask[:, None], False  # (B, 1, T, S), True = may attend
        elif start == 0:
            attn_mask, is_causal = None, T > 1
        elif T == 1:
            attn_mask, is_causal = None, False  # one new token sees the whole cache
        else:  # several new tokens after a filled cache: causal, shifted by `start`
            S = start + T
            attn_mask = torch.ones(T, S, dtype=torch.bool, device=x.device).tril(diagonal=start)
            is_causal = False
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, is_causal=is_causal, enable_gqa=groups > 1
        )  # (B, H, T, hd)
        return self.wo(out.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim))


class FeedForward(nn.Module):
    """SwiGLU: w2(silu(w1 x) * w3 x)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.w1 = nn.Linear(config.dim, config.hidden_dim, bias=False)
        self.w2 = nn.Linear(config.hidden_dim, config.dim, bias=False)
        self.w3 = nn.Linear(config.dim, config.hidden_dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Block(nn.Module):
    """Pre-norm residual block: x + attention(norm(x)), then + feed_forward(norm(x))."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.attention_norm = RMSNorm(config.dim, config.norm_eps)
        self.attention = Attention(config)
        self.ffn_norm = RMSNorm(config.dim, config.norm_eps)
        self.feed_forward = FeedForward(config)

    def forward(self, x, cos, sin, mask, cache=None, start=0) -> Tensor:
        x = x + self.attention(self.attention_norm(x), cos, sin, mask, cache, start)
        return x + self.feed_forward(self.ffn_norm(x))


class Llama(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.dim)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.norm = RMSNorm(config.dim, config.norm_eps)
        self.output = nn.Linear(config.dim, config.vocab_size, bias=False)  # untied from the embedding
        self.apply(_init_weights)

    def hidden_states(
        self,
        tokens: Tensor,
        positions: Tensor | None = None,
        mask: Tensor | None = None,
        cache: KVCache | None = None,
        slot: Tensor | None = None,
    ) -> Tensor:
        """Final-norm hidden states (B, T, dim) of tokens (B, T).

        positions: (B, T) rotary positions; default 0..T-1 after whatever the cache holds.
        mask: (B, T, S) bool, True where a query may attend a key (S = cached + T); default causal.
        cache: appended to and advanced by T.
        slot: (1,) cache position for one token in shape-static decoding (see Attention): the token
        is written there, `mask` (B, 1, max_len) covers the whole cache, `cache.length` is untouched.
        """
        B, T = tokens.shape
        start = slot if slot is not None else (cache.length if cache is not None else 0)
        if slot is None and start + T > (cache.max_len if cache is not None else self.config.max_seq_len):
            raise ValueError(f"sequence of {start + T} tokens exceeds the model's or cache's length")
        if positions is None:
            positions = torch.arange(start, start + T, device=tokens.device).expand(B, T)
        h = self.tok_embeddings(tokens)  # (B, T, dim)
        cos, sin = rotary_cos_sin(positions, self.config.head_dim, self.config.rope_theta)
        cos, sin = cos.to(h.dtype), sin.to(h.dtype)  # computed in fp32, applied in the model's dtype
        for i, layer in enumerate(self.layers):
            layer_cache = (cache.keys[i], cache.values[i]) if cache is not None else None
            h = layer(h, cos, sin, mask, layer_cache, start)
        if cache is not None and slot is None:
            cache.length += T
        return self.norm(h)

    def forward(self, tokens, positions=None, mask=None, cache=None, targets=None):
        """Next-token logits (B, T, vocab_size); arguments as in `hidden_states`.

        With `targets` (B, T) (IGNORE_INDEX where there is none), returns instead the summed
        next-token loss and the number of targets, computed in chunks so that the (B, T, V) logits
        never exist at once (losses.chunked_next_token_loss). It is part of forward so that a
        sharded model gathers the output weight for it as for any forward.
        """
        hidden = self.hidden_states(tokens, positions, mask, cache)
        if targets is not None:
            return chunked_next_token_loss(hidden, self.output.weight, targets)
        return self.output(hidden)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @classmethod
    def from_pretrained(cls, path: str | Path, device=None, dtype=None) -> Llama:
        """Load a Hugging Face Llama checkpoint directory (safetensors or weights-only .bin)."""
        from llamaforge.checkpoint import load_model

        return load_model(path, device=device, dtype=dtype)

    def save_pretrained(self, path: str | Path, tokenizer_path=None, info: dict | None = None) -> Path:
        """Write a Hugging Face Llama checkpoint directory, atomically."""
        from llamaforge.checkpoint import save_model

        return save_model(self, path, tokenizer_path=tokenizer_path, info=info)


class RewardModel(nn.Module):
    """A Llama trunk whose next-token head is replaced by a scalar regression head (paper §3.2.2).

    The score of a sequence is read at its last real token. Which tokens are real is given by a
    mask, and positions and attention are derived from it, so left or right padding and the other
    sequences in the batch never change a score. The trunk keeps its frozen next-token head, so
    that it stays a complete Llama checkpoint and can read its own likelihood of the answer.

    likelihood_weight λ (0: the paper's model) adds λ times the trunk's mean log-probability of
    the answer's tokens to the score. The paper starts the reward model from the chat model so that
    it "knows what the chat model knows" (§3.2.2); a head on one hidden state learns to read that
    knowledge only from many preference pairs, while the trunk's own likelihood of an answer reads
    it directly (docs/results.md measures both as selectors). λ is a fixed setting, saved with the
    head; training the trunk also trains the term.
    """

    def __init__(self, config: ModelConfig, trunk: Llama | None = None, likelihood_weight: float = 0.0):
        super().__init__()
        self.trunk = trunk if trunk is not None else Llama(config)  # e.g. the chat model it starts from
        self.trunk.output.requires_grad_(False)
        device = next(self.trunk.parameters()).device
        self.head = nn.Linear(config.dim, 1, bias=False, device=device)
        nn.init.normal_(self.head.weight, std=1.0 / config.dim**0.5)
        self.register_buffer("likelihood_weight", torch.tensor(float(likelihood_weight), device=device))

    @property
    def config(self) -> ModelConfig:
        return self.trunk.config

    def forward(self, tokens: Tensor, real: Tensor, answer: Tensor | None = None) -> Tensor:
        """Scores (B,) of token sequences (B, T) whose real tokens are marked True in `real` (B, T);
        `answer` (B, T) marks the answer's tokens, needed when likelihood_weight is not 0."""
        hidden = self.trunk.hidden_states(tokens, *padded_positions_and_mask(real))  # (B, T, dim)
        T = tokens.shape[1]
        last = T - 1 - real.flip(dims=[1]).long().argmax(dim=1)  # index of each row's last real token
        scores = self.head(hidden[torch.arange(len(tokens), device=tokens.device), last]).squeeze(-1)
        weight = float(self.likelihood_weight)
        if weight == 0:
            return scores
        if answer is None:
            raise ValueError("this reward model adds its likelihood of the answer (likelihood_weight): pass `answer`")
        return scores + weight * mean_answer_logprob(self.trunk, hidden, tokens, answer).to(scores.dtype)

    def token_scores(self, tokens: Tensor, real: Tensor) -> Tensor:
        """The head read at every position (B, T): the score of each prefix (PPO's value model)."""
        hidden = self.trunk.hidden_states(tokens, *padded_positions_and_mask(real))
        return self.head(hidden).squeeze(-1)


def mean_answer_logprob(trunk: Llama, hidden: Tensor, tokens: Tensor, answer: Tensor) -> Tensor:
    """(B,) the mean over each row's answer tokens of log p(token | everything before it), from the
    trunk's final hidden states (B, T, dim); answer (B, T) marks the tokens (its first column, which
    nothing predicts, must be False). Only the answer's positions go through the vocabulary."""
    predicted = answer[:, 1:]  # (B, T - 1): token t + 1 is predicted from position t
    rows = predicted.nonzero()[:, 0]
    logits = trunk.output(hidden[:, :-1][predicted]).float()  # (N, V), N answer tokens in the batch
    logp = torch.log_softmax(logits, dim=-1).gather(-1, tokens[:, 1:][predicted][:, None]).squeeze(-1)  # (N,)
    total = torch.zeros(len(tokens), device=tokens.device).index_add(0, rows, logp)
    return total / predicted.sum(dim=1).clamp(min=1)


def padded_positions_and_mask(real: Tensor) -> tuple[Tensor, Tensor]:
    """Rotary positions (B, T), counted over real tokens only, and the causal mask (B, T, T) that
    lets no query see padding, for a batch whose real tokens are marked True in `real` (B, T): any
    padding, left or right, then leaves each sequence's outputs as they are alone. A padding query
    attends to itself only, so no row of the softmax is empty."""
    T = real.shape[1]
    positions = (real.long().cumsum(dim=1) - 1).clamp(min=0)
    causal = torch.ones(T, T, dtype=torch.bool, device=real.device).tril()
    mask = causal & real[:, None, :] | torch.eye(T, dtype=torch.bool, device=real.device)
    return positions, mask


def _init_weights(module: nn.Module) -> None:
    # Normal(0, 0.02) for every projection and the embedding, as Hugging Face's Llama initializes.
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
