"""Training-step benchmark: llamaforge vs Hugging Face transformers, same weights, same process.

    python bench/train.py                 # CPU: the `tiny` preset, 16 x 256 tokens, fp32
    python bench/train.py --device cuda   # GPU: Llama-2-7B layer shapes with 8 layers (1.88B
                                          # parameters), batch 2 x 4096, bf16 autocast, fused AdamW,
                                          # eager and torch.compile'd

Prints tokens/s, achieved TFLOP/s (6N + 12 * n_layers * dim * seq_len per token), the share of a
bf16 matmul peak measured in the same run (GPU), peak memory, and ours/transformers ratios; writes
JSON with --json. Not a test: timings depend on the machine.
"""

from __future__ import annotations

import argparse
import gc
import json
import tempfile

import torch
import transformers

from common import matmul_peak, median_times, train_step_fn
from llamaforge.carbon import flops_per_token
from llamaforge.config import llama2_7b, tiny
from llamaforge.model import Llama


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--layers", type=int, help="override the number of layers")
    parser.add_argument("--batch", type=int, help="sequences per step")
    parser.add_argument("--seq", type=int, help="tokens per sequence")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    torch.set_num_threads(args.threads)
    config = llama2_7b().replace(n_layers=8) if gpu else tiny()
    config = config.replace(n_layers=args.layers or config.n_layers)
    batch_size, seq_len = args.batch or (2 if gpu else 16), args.seq or (4096 if gpu else 256)
    config = config.replace(max_seq_len=max(config.max_seq_len, seq_len))
    flops = flops_per_token(config, seq_len)
    peak = matmul_peak(device) if gpu else None
    sync = torch.cuda.synchronize if gpu else (lambda: None)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if gpu else None
    print(f"{config}: {config.num_parameters() / 1e9:.2f}B parameters, batch {batch_size} x {seq_len}, "
          f"{'bf16 autocast' if gpu else 'fp32'}, torch {torch.__version__}, transformers {transformers.__version__}")
    if peak:
        print(f"bf16 8192^3 matmul: {peak / 1e12:.0f} TFLOP/s ({torch.cuda.get_device_name()})")

    torch.manual_seed(0)
    batch = torch.randint(0, config.vocab_size, (batch_size, seq_len + 1), device=device)
    results = {"config": str(config), "batch": [batch_size, seq_len], "matmul_peak_flops": peak}
    rows = [("eager", False)] + ([] if args.no_compile else [("compiled", True)])
    for label, compiled in rows:
        with tempfile.TemporaryDirectory() as tmp:
            Llama(config).save_pretrained(tmp)  # the same weights for both
            ours = Llama.from_pretrained(tmp, device=device)
            theirs = transformers.LlamaForCausalLM.from_pretrained(tmp, attn_implementation="sdpa").to(device)
        if compiled:
            for block in ours.layers:
                block.compile()
            theirs.compile()
        steps = {}
        for name, model in (("ours", ours), ("transformers", theirs)):
            steps[name] = train_step_fn(model, batch, ours=name == "ours", autocast=autocast, fused=gpu or None)
        memory = {}
        for name in steps:  # peak memory of each alone
            if gpu:
                torch.cuda.reset_peak_memory_stats()
            steps[name](), sync()
            memory[name] = torch.cuda.max_memory_allocated() / 2**30 if gpu else None
        seconds = median_times(steps["ours"], steps["transformers"], args.repeats, sync)
        for name, s in zip(("ours", "transformers"), seconds):
            tokens_per_s = batch_size * seq_len / s
            results[f"{label}_{name}"] = {
                "tokens_per_s": tokens_per_s,
                "tflops": tokens_per_s * flops / 1e12,
                "peak_fraction": tokens_per_s * flops / peak if peak else None,
                "peak_memory_gib": memory[name],
            }
        results[f"{label}_ratio"] = results[f"{label}_ours"]["tokens_per_s"] / results[f"{label}_transformers"]["tokens_per_s"]
        del ours, theirs, steps
        gc.collect()
        if gpu:
            torch.cuda.empty_cache()

    print("\n| mode | library | tokens/s | TFLOP/s | % of matmul peak | peak memory GiB |")
    print("|---|---|---|---|---|---|")
    for label, _ in rows:
        for name in ("ours", "transformers"):
            r = results[f"{label}_{name}"]
            share = f"{100 * r['peak_fraction']:.0f}%" if r["peak_fraction"] else "-"
            memory = f"{r['peak_memory_gib']:.1f}" if r["peak_memory_gib"] else "-"
            print(f"| {label} | {name} | {r['tokens_per_s']:,.0f} | {r['tflops']:.2f} | {share} | {memory} |")
        print(f"| {label} | ours / transformers | {results[f'{label}_ratio']:.2f} | | | |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
