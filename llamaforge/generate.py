"""Batched sampling with a KV cache, shared by chat, rejection sampling, PPO rollouts and evaluation.

Prompts of different lengths are left-padded into one batch; each sequence gets its own rotary
positions (starting at 0 at its first real token) and never attends to padding, so its output is
the one it would get alone. Each sequence also draws from its own random generator (sequence i
seeded with `seed + i`), so sampled outputs do not depend on batch composition either.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

from llamaforge.model import KVCache, Llama


def sample_top_p(probs: Tensor, top_p: float, generators: list[torch.Generator]) -> Tensor:
    """Nucleus sampling as in Meta's `sample_top_p`: keep the smallest set of most likely tokens whose
    probability mass reaches top_p (the token crossing the threshold included), renormalize, draw.
    probs: (B, V). Returns (B,) token ids.
    """
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
    sorted_probs = sorted_probs.masked_fill(mass_before > top_p, 0.0)
    sorted_probs = sorted_probs / sorted_probs.sum(dim=-1, keepdim=True)
    picks = torch.stack(
        [torch.multinomial(row, 1, generator=g) for row, g in zip(sorted_probs, generators)]
    )  # (B, 1)
    return order.gather(-1, picks).squeeze(-1)


def _decode_step(model: Llama, token, position, slot, mask, cache: KVCache) -> torch.Tensor:
    """One token per sequence at cache position `slot`, with shapes that never change (B, V)."""
    hidden = model.hidden_states(token, position, mask, cache, slot=slot)
    return model.output(hidden[:, -1]).float()


_compiled_steps: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def compiled_decode_step(model: Llama):
    """`_decode_step` compiled once per model; on CUDA with mode="reduce-overhead", which replays
    it as a CUDA graph (one launch per token instead of one per kernel)."""
    if model not in _compiled_steps:
        mode = "reduce-overhead" if next(model.parameters()).is_cuda else "default"
        _compiled_steps[model] = torch.compile(functools.partial(_decode_step, model), mode=mode, dynamic=False)
    return _compiled_steps[model]


@torch.inference_mode()
def generate(
    model: Llama,
    prompts: list[list[int]],
    max_new_tokens: int,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
    eos_id: int = 2,
    on_token: Callable[[int, int], None] | None = None,
    decode: Literal["plain", "static", "compiled"] = "plain",
) -> tuple[list[list[int]], list[list[float]]]:
    """Continue each prompt; return the new token ids and their log-probabilities, per prompt.

    temperature 0 is greedy decoding. A sequence stops after emitting `eos_id` (kept as its last
    token) or at `max_new_tokens`, or when it reaches the model's context length. Log-probabilities
    are under softmax(logits / temperature) (temperature 1 when greedy), before top-p truncation.
    `on_token(sequence_index, token_id)` is called as each token is chosen (for streaming).

    decode: "plain" attends over the filled part of the cache (the reference path, and the fastest
    on CPU); "static" runs every step on the whole preallocated cache with a mask, so shapes never
    change; "compiled" is "static" compiled once (a CUDA graph on GPUs). All three give the same
    tokens.
    """
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("generate needs at least one prompt, and every prompt needs at least one token")
    device = next(model.parameters()).device
    B, lengths = len(prompts), torch.tensor([len(p) for p in prompts], device=device)
    prompt_len = int(lengths.max())
    total_len = min(prompt_len + max_new_tokens, model.config.max_seq_len)
    if prompt_len >= model.config.max_seq_len:
        raise ValueError(f"a prompt of {prompt_len} tokens leaves no room in a {model.config.max_seq_len}-token context")

    # A static cache is rounded up to a multiple of 256 slots, so few lengths (few compilations) occur.
    cache_len = total_len if decode == "plain" else min(-(-total_len // 256) * 256, model.config.max_seq_len)
    padding = prompt_len - lengths  # (B,) left padding of each sequence
    tokens = torch.zeros(B, prompt_len, dtype=torch.long, device=device)
    for i, p in enumerate(prompts):
        tokens[i, prompt_len - len(p) :] = torch.tensor(p, device=device)
    slots = torch.arange(cache_len, device=device)
    real = slots[None, :] >= padding[:, None]  # (B, cache_len): which cache slots hold real tokens
    positions = (slots[None, :] - padding[:, None]).clamp(min=0)  # (B, cache_len)

    # Prefill: causal over real tokens. A padding query attends to itself only, so no row is empty.
    causal = torch.ones(prompt_len, prompt_len, dtype=torch.bool, device=device).tril()
    mask = causal & real[:, None, :prompt_len] | torch.eye(prompt_len, dtype=torch.bool, device=device)
    padded = bool(padding.any())  # without padding, plain causal attention needs no mask
    dtype = next(model.parameters()).dtype
    cache = KVCache.allocate(model.config, B, cache_len, device=device, dtype=dtype)
    hidden = model.hidden_states(tokens, positions[:, :prompt_len], mask if padded else None, cache)
    logits = model.output(hidden[:, -1]).float()  # (B, V): only the last position is needed

    generators = [torch.Generator(device=device).manual_seed(seed + i) for i in range(B)]
    new_tokens = [[] for _ in range(B)]
    logprobs = [[] for _ in range(B)]
    done = torch.zeros(B, dtype=torch.bool, device=device)
    for step in range(total_len - prompt_len):
        if temperature > 0:
            logp = torch.log_softmax(logits / temperature, dim=-1)
            next_token = sample_top_p(logp.exp(), top_p, generators)
        else:
            logp = torch.log_softmax(logits, dim=-1)
            next_token = logits.argmax(dim=-1)
        chosen_logp = logp.gather(-1, next_token[:, None]).squeeze(-1)
        for i, (token, token_logp, finished) in enumerate(
            zip(next_token.tolist(), chosen_logp.tolist(), done.tolist())
        ):
            if not finished:
                new_tokens[i].append(token)
                logprobs[i].append(token_logp)
                if on_token is not None:
                    on_token(i, token)
        done |= next_token == eos_id
        if bool(done.all()) or step == total_len - prompt_len - 1:
            break
        slot = prompt_len + step
        if decode == "plain":
            step_mask = real[:, None, : slot + 1] if padded else None  # (B, 1, slot + 1)
            logits = model(next_token[:, None], positions[:, slot : slot + 1], step_mask, cache)[:, -1].float()
        else:
            step_fn = compiled_decode_step(model) if decode == "compiled" else functools.partial(_decode_step, model)
            visible = (real & (slots <= slot))[:, None, :]  # (B, 1, cache_len)
            slot_tensor = torch.tensor([slot], device=device)
            logits = step_fn(next_token[:, None], positions[:, slot : slot + 1], slot_tensor, visible, cache)
    return new_tokens, logprobs
