"""GPU benchmark: llamaforge vs Hugging Face transformers in one process, on the same shapes and weights.

    python bench/gpu.py --json gpu.json           # one GPU; about 5-8 minutes with compilation
    python bench/gpu.py --only decode             # or --only train
    python bench/gpu.py --smoke --no-compile      # tiny shapes on the CPU: checks the script only

Training: Llama-2-7B layer shapes with 8 layers (1.88B parameters), batch 2 x 4096, bf16 autocast
over fp32 weights, fused AdamW, SDPA; eager and with compiled transformer blocks (ours) / a compiled
model (transformers). Reported as tokens/s, TFLOP/s (6N + 12 * n_layers * dim * seq_len per token),
share of a bf16 matmul peak measured in this run, and peak memory.

Decode: the full Llama-2-7B shape in bf16, 128-token prompts, 256 greedy new tokens, batch 1 and 32:
ours plain and compiled (static cache, CUDA graph), transformers eager (dynamic cache) and with its
static cache (which its `generate` compiles on CUDA). Reported as tokens/s and share of the
memory-bandwidth limit: batch x (copy bandwidth measured in this run) / (bytes of the weights).

Each library is measured alone (the other's training state is not resident), so peak memory is
its own. Not a test: timings depend on the machine.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
import statistics
import time

import torch
import transformers

from common import copy_bandwidth, matmul_peak, synchronize, train_step_fn
from llamaforge.carbon import flops_per_token
from llamaforge.checkpoint import config_to_hf, hf_name
from llamaforge.config import ModelConfig, llama2_7b, tiny
from llamaforge.generate import generate, release_static_cache
from llamaforge.model import Llama


@dataclasses.dataclass
class Shapes:
    train_config: ModelConfig
    train_batch: tuple[int, int]  # sequences x tokens
    decode_config: ModelConfig
    prompt_len: int
    new_tokens: int
    decode_batches: tuple[int, ...]
    matmul_size: int
    copy_gib: float


def full_shapes() -> Shapes:
    return Shapes(llama2_7b().replace(n_layers=8), (2, 4096), llama2_7b(), 128, 256, (1, 32), 8192, 1.0)


def smoke_shapes() -> Shapes:
    return Shapes(tiny(), (2, 64), tiny(), 8, 16, (1, 4), 256, 0.01)


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype):
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def our_model(config: ModelConfig, state: dict, device: torch.device, dtype: torch.dtype) -> Llama:
    with torch.device(device), default_dtype(dtype):
        model = Llama(config)
    model.load_state_dict(state)
    return model


def their_model(config: ModelConfig, state: dict, device: torch.device, dtype: torch.dtype):
    hf = config_to_hf(config, dtype)
    for key in ("architectures", "model_type", "torch_dtype"):
        hf.pop(key)
    hf_config = transformers.LlamaConfig(**hf)
    hf_config._attn_implementation = "sdpa"
    with torch.device(device), default_dtype(dtype):
        model = transformers.LlamaForCausalLM(hf_config)
    model.load_state_dict({hf_name(name): tensor for name, tensor in state.items()})
    return model


def random_state(config: ModelConfig, device: torch.device, dtype: torch.dtype) -> dict:
    """Random initial weights (on the CPU), built on the device for speed; both libraries load them."""
    torch.manual_seed(0)
    with torch.device(device), default_dtype(dtype):
        model = Llama(config)
    state = {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}
    del model
    free(device)
    return state


def free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def median_seconds(fn, repeats: int, device: torch.device) -> float:
    times = []
    for _ in range(repeats):
        synchronize(device)
        started = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def bench_training(shapes: Shapes, device, args, peak: float | None) -> dict:
    config = shapes.train_config
    batch_size, seq_len = shapes.train_batch
    config = config.replace(max_seq_len=max(config.max_seq_len, seq_len))
    flops = flops_per_token(config, seq_len)
    state = random_state(config, device, torch.float32)
    batch = torch.randint(0, config.vocab_size, (batch_size, seq_len + 1), device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16)
    results = {}
    for mode in ("eager",) + (() if args.no_compile else ("compiled",)):
        for name, build in (("ours", our_model), ("transformers", their_model)):
            model = build(config, state, device, torch.float32).train()
            if mode == "compiled":
                if name == "ours":
                    for block in model.layers:
                        block.compile()
                else:
                    model.compile()
            step = train_step_fn(model, batch, ours=name == "ours", autocast=autocast, fused=device.type == "cuda" or None)
            started = time.perf_counter()
            step(), step()  # warm-up: compilation, optimizer state, allocator
            synchronize(device)
            warmup = time.perf_counter() - started
            seconds = median_seconds(step, args.repeats, device)
            tokens_per_s = batch_size * seq_len / seconds
            results[f"{mode}_{name}"] = row = {
                "tokens_per_s": tokens_per_s,
                "tflops": tokens_per_s * flops / 1e12,
                "peak_fraction": tokens_per_s * flops / peak if peak else None,
                "peak_memory_gib": peak_memory_gib(device),
                "warmup_s": warmup,
            }
            print(f"train {mode} {name}: {tokens_per_s:,.0f} tokens/s, {row['tflops']:.1f} TFLOP/s, "
                  f"peak memory {row['peak_memory_gib'] or 0:.1f} GiB (warm-up {warmup:.0f} s)", flush=True)
            del model, step
            free(device)
        results[f"{mode}_ratio"] = results[f"{mode}_ours"]["tokens_per_s"] / results[f"{mode}_transformers"]["tokens_per_s"]
    return results


def bench_decode(shapes: Shapes, device, args, bandwidth: float) -> dict:
    config, new = shapes.decode_config, shapes.new_tokens
    dtype = torch.bfloat16
    state = random_state(config, device, dtype)
    ours = our_model(config, state, device, dtype).eval()
    theirs = their_model(config, state, device, dtype).eval()
    del state
    weight_bytes = ours.num_parameters() * 2
    results = {"weight_bytes": weight_bytes}
    for batch_size in shapes.decode_batches:
        prompts = torch.randint(3, config.vocab_size, (batch_size, shapes.prompt_len), generator=torch.Generator().manual_seed(1))
        limit = batch_size * bandwidth / weight_bytes
        outputs = {}

        def ours_run(decode: str, n: int = new):
            tokens, _ = generate(ours, prompts.tolist(), max_new_tokens=n, eos_id=-1, decode=decode)
            outputs[decode] = tokens

        def theirs_run(static: bool, n: int = new):
            ids = prompts.to(device)
            with torch.inference_mode():
                out = theirs.generate(
                    ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n, do_sample=False,
                    pad_token_id=0, cache_implementation="static" if static else None,
                )
            assert out.shape[1] == shapes.prompt_len + n

        paths = [("ours", "plain", lambda n=new: ours_run("plain", n), False)]
        if not args.no_compile:
            paths.append(("ours", "compiled", lambda n=new: ours_run("compiled", n), True))
        paths.append(("transformers", "eager", lambda n=new: theirs_run(False, n), False))
        paths.append(("transformers", "static", lambda n=new: theirs_run(True, n), True))
        for name, path, run, full_warmup in paths:
            free(device)
            started = time.perf_counter()
            run() if full_warmup else run(8)  # a compiled path warms up on the shapes it is timed on
            synchronize(device)
            warmup = time.perf_counter() - started
            seconds = median_seconds(run, args.decode_repeats, device)
            tokens_per_s = batch_size * new / seconds
            results[f"b{batch_size}_{name}_{path}"] = {
                "tokens_per_s": tokens_per_s,
                "bandwidth_fraction": tokens_per_s / limit,
                "peak_memory_gib": peak_memory_gib(device),
                "warmup_s": warmup,
            }
            print(f"decode b{batch_size} {name} {path}: {tokens_per_s:,.1f} tokens/s "
                  f"({100 * tokens_per_s / limit:.0f}% of the bandwidth limit, warm-up {warmup:.0f} s)", flush=True)
        if "compiled" in outputs:  # the fast path must choose the plain path's tokens (up to bf16 ties)
            same = sum(a == b for p, c in zip(outputs["plain"], outputs["compiled"]) for a, b in zip(p, c))
            results[f"b{batch_size}_compiled_token_agreement"] = same / (batch_size * new)
        release_static_cache(ours)
        results[f"b{batch_size}_limit_tokens_per_s"] = limit
        best_theirs = max(results[f"b{batch_size}_transformers_{p}"]["tokens_per_s"] for p in ("eager", "static"))
        ours_best = max(results[f"b{batch_size}_ours_{p}"]["tokens_per_s"] for p in ("plain", "compiled") if f"b{batch_size}_ours_{p}" in results)
        results[f"b{batch_size}_ratio_vs_best"] = ours_best / best_theirs
    return results


def print_tables(results: dict, shapes: Shapes) -> None:
    train = results.get("train")
    if train:
        print(f"\nTraining, {shapes.train_config.num_parameters() / 1e9:.2f}B parameters, batch "
              f"{shapes.train_batch[0]} x {shapes.train_batch[1]}, bf16 autocast\n")
        print("| mode | library | tokens/s | TFLOP/s | % of matmul peak | peak memory GiB |")
        print("|---|---|---|---|---|---|")
        for mode in ("eager", "compiled"):
            for name in ("ours", "transformers"):
                if (row := train.get(f"{mode}_{name}")) is None:
                    continue
                share = f"{100 * row['peak_fraction']:.0f}%" if row["peak_fraction"] else "-"
                memory = f"{row['peak_memory_gib']:.1f}" if row["peak_memory_gib"] else "-"
                print(f"| {mode} | {name} | {row['tokens_per_s']:,.0f} | {row['tflops']:.1f} | {share} | {memory} |")
            if f"{mode}_ratio" in train:
                print(f"| {mode} | ours / transformers | {train[f'{mode}_ratio']:.2f} | | | |")
    decode = results.get("decode")
    if decode:
        print(f"\nGreedy decode, {decode['weight_bytes'] / 1e9:.2f} GB of bf16 weights, {shapes.prompt_len}-token "
              f"prompts, {shapes.new_tokens} new tokens\n")
        print("| batch | library | path | tokens/s | % of bandwidth limit |")
        print("|---|---|---|---|---|")
        for batch_size in shapes.decode_batches:
            for key in sorted(k for k in decode if k.startswith(f"b{batch_size}_") and isinstance(decode[k], dict)):
                _, name, path = key.split("_", 2)
                row = decode[key]
                print(f"| {batch_size} | {name} | {path} | {row['tokens_per_s']:,.1f} | {100 * row['bandwidth_fraction']:.0f}% |")
            print(f"| {batch_size} | ours best / transformers best | | {decode[f'b{batch_size}_ratio_vs_best']:.2f} | |")
            if (agreement := decode.get(f"b{batch_size}_compiled_token_agreement")) is not None:
                print(f"| {batch_size} | ours compiled = plain tokens | | {100 * agreement:.0f}% | |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", help="write the results to this file (rewritten after each part)")
    parser.add_argument("--only", choices=["train", "decode"], help="run one part")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes (for checking the script on a CPU)")
    parser.add_argument("--no-compile", action="store_true", help="skip the compiled rows")
    parser.add_argument("--repeats", type=int, default=5, help="timed training steps")
    parser.add_argument("--decode-repeats", type=int, default=1, help="timed generations per path (each is 256 steps)")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    shapes = smoke_shapes() if args.smoke else full_shapes()
    peak = matmul_peak(device, shapes.matmul_size)
    bandwidth = copy_bandwidth(device, shapes.copy_gib)
    results = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "matmul_peak_tflops": peak / 1e12,
        "copy_bandwidth_tb_s": bandwidth / 1e12,
    }
    print(f"{results['device']}, torch {torch.__version__}, transformers {transformers.__version__}: bf16 "
          f"{shapes.matmul_size}^3 matmul {peak / 1e12:.1f} TFLOP/s, copy {bandwidth / 1e12:.2f} TB/s", flush=True)

    def save() -> None:
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=2)

    save()
    started = time.perf_counter()
    if args.only in (None, "train"):
        results["train"] = bench_training(shapes, device, args, peak if device.type == "cuda" else None)
        save()
    if args.only in (None, "decode"):
        results["decode"] = bench_decode(shapes, device, args, bandwidth)
        save()
    results["elapsed_s"] = time.perf_counter() - started
    save()
    print_tables(results, shapes)
    print(f"\n{results['elapsed_s']:.0f} s")


if __name__ == "__main__":
    main()
