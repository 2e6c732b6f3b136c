"""Rejection-sampling benchmark (paper §3.2.3): K sampled answers per prompt, llamaforge vs transformers.

64 prompts of 24-40 tokens x K = 8 samples x 64 new tokens, temperature 1, top-p 1, on the `tiny`
preset with random weights; same weights, same process, timed alternately (common.median_times).
Ours prefills each prompt once and decodes its K samples from the shared cache
(`generate(..., samples_per_prompt=K)`); transformers' `generate(num_return_sequences=K)` repeats
each prompt K times before its prefill. EOS never stops either, so every sample has exactly
`--new-tokens` tokens. Not a test: timings vary with the machine.

    python bench/rejection_sampling.py [--json results.json] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import tempfile

import torch
import transformers

from common import median_times
from llamaforge.config import smoke, tiny
from llamaforge.generate import generate
from llamaforge.model import Llama


def left_padded(prompts: list[list[int]], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Input ids and attention mask (P, max length) for transformers, padding on the left as batched
    generation needs."""
    width = max(map(len, prompts))
    ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    return ids, mask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--k", type=int, default=8, help="samples per prompt")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--smoke", action="store_true", help="smoke preset, 4 prompts x 2 samples x 8 tokens")
    args = parser.parse_args()
    if args.smoke:
        args.prompts, args.k, args.new_tokens, args.repeats = 4, 2, 8, 1
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    config = smoke() if args.smoke else tiny()
    ours = Llama(config).eval()
    with tempfile.TemporaryDirectory() as tmp:
        ours.save_pretrained(tmp)
        theirs = transformers.LlamaForCausalLM.from_pretrained(tmp, attn_implementation="sdpa").eval()
    rng = random.Random(0)
    prompts = [[1] + [rng.randrange(3, config.vocab_size) for _ in range(rng.randint(23, 39))] for _ in range(args.prompts)]
    ids, attention_mask = left_padded(prompts)
    P, K, new = args.prompts, args.k, args.new_tokens
    print(f"config: {config} ({ours.num_parameters() / 1e6:.2f}M parameters), torch {torch.__version__}, "
          f"transformers {transformers.__version__}, {args.threads} threads, {platform.processor() or platform.machine()}")
    print(f"workload: {P} prompts ({min(map(len, prompts))}-{ids.shape[1]} tokens) x {K} samples x {new} new tokens, "
          "temperature 1, top-p 1")

    def ours_sample():
        tokens, _ = generate(ours, prompts, max_new_tokens=new, temperature=1.0, top_p=1.0, eos_id=-1,
                             decode="plain", samples_per_prompt=K)
        assert len(tokens) == P * K and all(len(t) == new for t in tokens)

    def theirs_sample():
        with torch.inference_mode():  # top_k=0: the checkpoint's generation config would keep the top 50
            out = theirs.generate(ids, attention_mask=attention_mask, do_sample=True, temperature=1.0, top_p=1.0,
                                  top_k=0, num_return_sequences=K, max_new_tokens=new, min_new_tokens=new,
                                  pad_token_id=0)
        assert out.shape == (P * K, ids.shape[1] + new)

    seconds = median_times(ours_sample, theirs_sample, args.repeats)
    ours_tps, theirs_tps = (P * K * new / s for s in seconds)
    results = {
        "prompts": P, "k": K, "new_tokens": new, "repeats": args.repeats, "threads": args.threads,
        "torch": torch.__version__, "transformers": transformers.__version__,
        "ours_tokens_per_s": ours_tps, "transformers_tokens_per_s": theirs_tps, "ratio": ours_tps / theirs_tps,
    }
    print("\n| sampled tokens/s | ours (shared prefill) | transformers (num_return_sequences) | ours / transformers |")
    print("|---|---|---|---|")
    print(f"| {P} x {K} x {new} | {ours_tps:,.0f} | {theirs_tps:,.0f} | {ours_tps / theirs_tps:.2f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
