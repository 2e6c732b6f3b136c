"""CPU benchmark: llamaforge vs Hugging Face transformers, same weights, same process, same shapes.

Measures training tokens/s (forward + backward + AdamW step) and greedy decode tokens/s at batch 1
and batch 32, and prints ours/transformers ratios. Not a test: timings vary with the machine.

    python bench/cpu.py [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile

import torch
import transformers

from common import median_times, train_step_fn
from llamaforge.config import tiny
from llamaforge.generate import generate
from llamaforge.model import Llama


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    config = tiny()
    ours = Llama(config)
    with tempfile.TemporaryDirectory() as tmp:
        ours.save_pretrained(tmp)
        theirs = transformers.LlamaForCausalLM.from_pretrained(tmp, attn_implementation="sdpa")
    print(f"config: {config} ({ours.num_parameters() / 1e6:.2f}M parameters), torch {torch.__version__}, "
          f"transformers {transformers.__version__}, {args.threads} threads, {platform.processor() or platform.machine()}")

    results = {}
    batch = torch.randint(0, config.vocab_size, (16, 257))  # 16 x 256 training tokens per step
    train_tokens = 16 * 256
    ours.train(), theirs.train()
    seconds = median_times(train_step_fn(ours, batch, ours=True), train_step_fn(theirs, batch, ours=False), args.repeats)
    results["train_ours"], results["train_transformers"] = (train_tokens / s for s in seconds)

    ours.eval(), theirs.eval()
    for batch_size in (1, 32):
        prompts = torch.randint(3, config.vocab_size, (batch_size, 32))
        new = args.new_tokens

        def ours_decode(decode="plain"):
            tokens, _ = generate(ours, prompts.tolist(), max_new_tokens=new, eos_id=-1, decode=decode)
            assert all(len(t) == new for t in tokens)

        def theirs_decode():
            with torch.inference_mode():
                out = theirs.generate(prompts, max_new_tokens=new, min_new_tokens=new, do_sample=False, pad_token_id=0)
            assert out.shape[1] == 32 + new

        seconds = median_times(ours_decode, theirs_decode, args.repeats)
        results[f"decode_b{batch_size}_ours"], results[f"decode_b{batch_size}_transformers"] = (
            batch_size * new / s for s in seconds
        )
        # The compiled decode step (compiled once per batch shape, during the warm-up call).
        ours_seconds, _ = median_times(lambda: ours_decode("compiled"), theirs_decode, args.repeats)
        results[f"decode_b{batch_size}_ours_compiled"] = batch_size * new / ours_seconds

    rows = [("training (16x256, fwd+bwd+AdamW)", "train"), ("greedy decode, batch 1", "decode_b1"),
            ("greedy decode, batch 32", "decode_b32")]
    print("\n| measurement | ours tokens/s | transformers tokens/s | ours / transformers | ours compiled tokens/s | compiled / transformers |")
    print("|---|---|---|---|---|---|")
    for label, key in rows:
        a, b = results[f"{key}_ours"], results[f"{key}_transformers"]
        results[f"{key}_ratio"] = a / b
        compiled = results.get(f"{key}_ours_compiled")
        extra = f"{compiled:,.0f} | {compiled / b:.2f}" if compiled else "- | -"
        print(f"| {label} | {a:,.0f} | {b:,.0f} | {a / b:.2f} | {extra} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
