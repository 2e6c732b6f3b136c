"""Batched sampling with a KV cache, shared by chat, rejection sampling, PPO rollouts and evaluation.

Prompts of different lengths are left-padded into one batch; each sequence gets its own rotary
positions (starting at 0 at its first real token) and never attends to padding, so its output is
the one it would get alone. Each sequence also draws its random numbers from its own generator
(sequence i seeded with `seed + i`), so sampled outputs do not depend on batch composition either.

Rejection sampling (paper §3.2.3) draws K answers per prompt: with `samples_per_prompt=K` each
prompt is prefilled once and its cache copied into K rows that then decode together. The outputs
are those of the prompts each repeated K times (output n seeded with `seed + n`), at 1/K the
prefill cost.

Three decode paths give the same tokens: "plain" attends over the filled part of the cache (the
reference, and the fastest on CPU); "static" runs every step on the whole preallocated cache with
a mask, so that shapes never change; "compiled" is "static" compiled once, with token choice
(greedy or temperature/top-p sampling) inside the step; on CUDA it is replayed as a CUDA graph.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

from llamaforge.model import KVCache, Llama

Decode = Literal["auto", "plain", "static", "compiled"]


def sample_top_p(probs: Tensor, top_p: float | Tensor | None, uniforms: Tensor) -> Tensor:
    """Nucleus sampling as in Meta's `sample_top_p`: keep the smallest set of most likely tokens whose
    probability mass reaches top_p (the token crossing the threshold included), renormalize, draw.

    The draw inverts the cumulative distribution at `uniforms` (B,) in [0, 1), drawn beforehand
    from each sequence's own generator: no random state inside, so it can be compiled and captured.
    top_p None (no truncation; `generate` passes it for top_p >= 1) takes the CDF in vocabulary
    order instead of sorted order: the same distribution without a sort (20% of rejection
    sampling's time, bench/), though a given uniform picks another token than at top_p 0.9999.
    probs: (B, V). Returns (B,) token ids.
    """
    if top_p is None:  # nothing truncated: draw without the (B, V) sort
        cdf = probs.cumsum(dim=-1)
        picks = (cdf <= uniforms[:, None] * cdf[:, -1:]).sum(dim=-1)
        return picks.clamp(max=probs.shape[-1] - 1)
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
    kept = sorted_probs.masked_fill(mass_before > top_p, 0.0).cumsum(dim=-1)  # unnormalized CDF
    threshold = uniforms[:, None] * kept[:, -1:]
    picks = (kept <= threshold).sum(dim=-1, keepdim=True).clamp(max=probs.shape[-1] - 1)
    return order.gather(-1, picks).squeeze(-1)


def choose_next(
    logits: Tensor, temperature: float | Tensor, top_p: float | Tensor | None, uniforms: Tensor, greedy: bool
) -> tuple[Tensor, Tensor]:
    """The next token of each sequence and its log-probability under softmax(logits / temperature)
    (temperature 1 when greedy), before top-p truncation. logits: (B, V) float."""
    if greedy:
        logp = torch.log_softmax(logits, dim=-1)
        token = logits.argmax(dim=-1)
    else:
        logp = torch.log_softmax(logits / temperature, dim=-1)
        token = sample_top_p(logp.exp(), top_p, uniforms)
    return token, logp.gather(-1, token[:, None]).squeeze(-1)


def _decode_step(
    model: Llama, token, position, slot, real, cache: KVCache, temperature, top_p, uniforms, greedy: bool
) -> tuple[Tensor, Tensor]:
    """One token per sequence, written at cache position `slot` (a (1,) tensor), attending to the
    real tokens up to it; every shape is fixed by the cache, whatever the step."""
    visible = (real & (torch.arange(real.shape[1], device=real.device) <= slot))[:, None, :]  # (B, 1, S)
    hidden = model.hidden_states(token, position, visible, cache, slot=slot)
    return choose_next(model.output(hidden[:, -1]).float(), temperature, top_p, uniforms, greedy)


_static_caches: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@functools.cache
def compiled_decode_step(mode: str):
    """`_decode_step` compiled (one per mode, shared by every model: the model is an argument, so no
    compiled function keeps a model alive). On CUDA mode is "reduce-overhead", which replays the
    step as a CUDA graph: one launch per token instead of one per kernel."""
    return torch.compile(_decode_step, mode=mode, dynamic=False)


def static_cache(model: Llama, batch_size: int, max_len: int, dtype: torch.dtype) -> KVCache:
    """The model's preallocated decode cache, reused while the batch size and length stay the same:
    a CUDA graph records the cache's addresses, so a new cache would mean recording again. Stale
    entries need no clearing (the mask hides every slot not written by the current batch)."""
    parameter = next(model.parameters())
    cache = _static_caches.get(model)
    if cache is None or cache.keys[0].shape[0] != batch_size or cache.max_len != max_len or cache.keys[0].dtype != dtype:
        _static_caches.pop(model, None)  # free the old one before allocating
        cache = KVCache.allocate(model.config, batch_size, max_len, device=parameter.device, dtype=dtype)
        for tensor in cache.keys + cache.values:
            torch._dynamo.mark_static_address(tensor)
        _static_caches[model] = cache
    cache.length = 0
    return cache


def release_static_cache(model: Llama) -> None:
    """Free the decode cache kept by static/compiled decoding (e.g. before a PPO training phase)."""
    _static_caches.pop(model, None)


def share_prefill(prefill: KVCache, cache: KVCache, k: int) -> None:
    """Copy each prompt's cached keys and values (P rows) into its k decode rows of `cache` (P * k
    rows; row i*k + j gets prompt i), so that the prompt is run through the model once, not k times."""
    n = prefill.length
    for source, target in zip(prefill.keys + prefill.values, cache.keys + cache.values):
        # (P, KV, n, hd) broadcast into the (P, k, KV, n, hd) view of the target's first n slots
        target.unflatten(0, (-1, k))[:, :, :, :n] = source[:, None, :, :n]
    cache.length = n


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
    decode: Decode = "auto",
    samples_per_prompt: int = 1,
    seeds: list[int] | None = None,
) -> tuple[list[list[int]], list[list[float]]]:
    """Continue each prompt; return the new token ids and their log-probabilities, per prompt.

    temperature 0 is greedy decoding. A sequence stops after emitting `eos_id` (kept as its last
    token) or at `max_new_tokens`, or when it reaches the model's context length. Log-probabilities
    are under softmax(logits / temperature) (temperature 1 when greedy), before top-p truncation.
    `on_token(sequence_index, token_id)` is called as each token is chosen (for streaming).
    `decode` picks the path (module docstring; "auto": compiled on CUDA, plain elsewhere); all
    give the same tokens.

    `samples_per_prompt=K` returns len(prompts) * K outputs, prompt i's at indices i*K .. i*K+K-1,
    each prompt's prefill computed once and shared by its K samples (any decode path). Output n
    samples with seed `seed + n` and `on_token` gets n: the results are those of
    `generate([p for p in prompts for _ in range(K)], ...)`.

    `seeds` (one per output) replaces `seed + n`: a process of a data-parallel PPO run samples its
    own rows of the global batch with the seeds the rows have in a one-process run.
    """
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("generate needs at least one prompt, and every prompt needs at least one token")
    if decode not in ("auto", "plain", "static", "compiled"):
        raise ValueError(f"decode must be auto, plain, static or compiled, not {decode!r}")
    if samples_per_prompt < 1:
        raise ValueError(f"samples_per_prompt must be at least 1, not {samples_per_prompt}")
    if seeds is not None and len(seeds) != len(prompts) * samples_per_prompt:
        raise ValueError(f"seeds: one per output expected ({len(prompts) * samples_per_prompt}), got {len(seeds)}")
    device = next(model.parameters()).device
    if decode == "auto":
        decode = "compiled" if device.type == "cuda" else "plain"
    K, lengths = samples_per_prompt, torch.tensor([len(p) for p in prompts], device=device)
    P = len(prompts)
    B = P * K  # rows of the decode batch: prompt i's samples are rows i*K .. i*K+K-1
    prompt_len = int(lengths.max())
    total_len = min(prompt_len + max_new_tokens, model.config.max_seq_len)
    if prompt_len >= model.config.max_seq_len:
        raise ValueError(f"a prompt of {prompt_len} tokens leaves no room in a {model.config.max_seq_len}-token context")
    steps = total_len - prompt_len

    padding = (prompt_len - lengths).repeat_interleave(K)  # (B,) left padding of each sequence
    tokens = torch.zeros(P, prompt_len, dtype=torch.long, device=device)
    for i, p in enumerate(prompts):
        tokens[i, prompt_len - len(p) :] = torch.tensor(p, device=device)
    dtype = next(model.parameters()).dtype
    if decode == "plain":
        cache = KVCache.allocate(model.config, B, total_len, device=device, dtype=dtype)
    else:  # rounded up to a multiple of 256 slots, so that few shapes (compilations) occur
        cache = static_cache(model, B, min(-(-total_len // 256) * 256, model.config.max_seq_len), dtype)
    slots = torch.arange(cache.max_len, device=device)
    real = slots[None, :] >= padding[:, None]  # (B, cache length): which cache slots hold real tokens
    positions = (slots[None, :] - padding[:, None]).clamp(min=0)  # (B, cache length)

    # Prefill, once per prompt (rows ::K): causal over real tokens. A padding query attends to
    # itself only, so no row is empty.
    causal = torch.ones(prompt_len, prompt_len, dtype=torch.bool, device=device).tril()
    mask = causal & real[::K, None, :prompt_len] | torch.eye(prompt_len, dtype=torch.bool, device=device)
    padded = bool(padding.any())  # without padding, plain causal attention needs no mask
    prefill_cache = cache if K == 1 else KVCache.allocate(model.config, P, prompt_len, device=device, dtype=dtype)
    hidden = model.hidden_states(tokens, positions[::K, :prompt_len], mask if padded else None, prefill_cache)
    logits = model.output(hidden[:, -1]).float()  # (P, V): only the last position is needed
    if K > 1:
        share_prefill(prefill_cache, cache, K)
        logits = logits.repeat_interleave(K, dim=0)  # (B, V)

    greedy = temperature <= 0
    uniforms = torch.zeros(B, max(steps, 1), device=device)
    if not greedy:  # sequence i's numbers come from its own generator: batch-independent draws
        for i in range(B):
            row_seed = seed + i if seeds is None else seeds[i]
            uniforms[i] = torch.rand(steps, generator=torch.Generator(device=device).manual_seed(row_seed), device=device)
    top_p = None if top_p >= 1.0 else top_p  # the sort-free draw, on every decode path alike
    temperature_t = torch.tensor(temperature, device=device)
    top_p_t = None if top_p is None else torch.tensor(top_p, device=device)
    step_fn = _decode_step
    if decode == "compiled":
        step_fn = compiled_decode_step("reduce-overhead" if device.type == "cuda" else "default")

    next_token, chosen_logp = choose_next(logits, temperature, top_p, uniforms[:, 0], greedy)
    new_tokens = [[] for _ in range(B)]
    logprobs = [[] for _ in range(B)]
    done = [False] * B
    for step in range(steps):
        for i, (token, token_logp) in enumerate(zip(next_token.tolist(), chosen_logp.tolist())):
            if not done[i]:
                new_tokens[i].append(token)
                logprobs[i].append(token_logp)
                done[i] = token == eos_id
                if on_token is not None:
                    on_token(i, token)
        if all(done) or step == steps - 1:
            break
        slot = prompt_len + step
        if decode == "plain":
            step_mask = real[:, None, : slot + 1] if padded else None  # (B, 1, slot + 1)
            logits = model(next_token[:, None], positions[:, slot : slot + 1], step_mask, cache)[:, -1].float()
            next_token, chosen_logp = choose_next(logits, temperature, top_p, uniforms[:, step + 1], greedy)
        else:
            if decode == "compiled" and device.type == "cuda":
                torch.compiler.cudagraph_mark_step_begin()  # the previous step's outputs are consumed
            next_token, chosen_logp = step_fn(
                model, next_token[:, None], positions[:, slot : slot + 1], slots[slot : slot + 1], real, cache,
                temperature_t, top_p_t, uniforms[:, step + 1], greedy,
            )
            next_token = next_token.clone()  # a CUDA graph's output buffer is reused by its next replay
    return new_tokens, logprobs
