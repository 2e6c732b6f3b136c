"""Correctness of the GPU fast paths on the device itself, in about a minute: run it before bench/gpu.py.

    python bench/gpu_check.py            # on CUDA when available, else on the CPU

The CPU test suite proves these paths on the CPU; CUDA brings other kernels (flash/cuDNN attention,
CUDA graphs, fused AdamW), so each check compares a fast path with its plain counterpart on the
device. Prints one line per check and exits non-zero if any fails.
"""

from __future__ import annotations

import sys
import tempfile
import traceback
from pathlib import Path

import torch

from llamaforge.config import ModelConfig
from llamaforge.generate import generate
from llamaforge.losses import chunked_next_token_loss, next_token_loss
from llamaforge.model import Llama
from llamaforge.train.distributed import Distributed
from llamaforge.train.loop import LoopConfig, llama_writer, train

CONFIG = ModelConfig(dim=128, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=512, multiple_of=32, max_seq_len=512)
PROMPTS = [[1, 5, 6, 7, 8, 9, 10, 11], [1, 20], [1, 3, 3, 3], [1] + list(range(40, 60))]


def model_on(device: torch.device, dtype=torch.float32, seed: int = 0) -> Llama:
    torch.manual_seed(seed)
    return Llama(CONFIG).to(device=device, dtype=dtype).eval()


def check_compiled_decode_matches_plain(device: torch.device) -> str:
    model = model_on(device)
    for kwargs in ({}, {"temperature": 0.9, "top_p": 0.9, "seed": 3}):
        plain = generate(model, PROMPTS, max_new_tokens=40, eos_id=-1, decode="plain", **kwargs)
        for _ in range(2):  # the second call replays the recorded graph
            compiled = generate(model, PROMPTS, max_new_tokens=40, eos_id=-1, decode="compiled", **kwargs)
            assert compiled[0] == plain[0], f"tokens differ ({kwargs or 'greedy'})"
            gap = max(abs(a - b) for x, y in zip(compiled[1], plain[1]) for a, b in zip(x, y))
            assert gap < 1e-3, f"log-probabilities differ by {gap:.2e}"
    return "compiled decode = plain decode (fp32, ragged, greedy and sampled, two calls)"


def check_bf16_decode_runs(device: torch.device) -> str:
    model = model_on(device, torch.bfloat16)
    plain = generate(model, PROMPTS, max_new_tokens=24, eos_id=-1, decode="plain")[0]
    compiled = generate(model, PROMPTS, max_new_tokens=24, eos_id=-1, decode="compiled")[0]
    same = sum(a == b for x, y in zip(plain, compiled) for a, b in zip(x, y)) / sum(map(len, plain))
    assert same > 0.5, f"only {same:.0%} of bf16 tokens agree"
    return f"bf16 compiled decode runs; {same:.0%} of tokens equal to plain (bf16 ties on random weights)"


def check_chunked_loss(device: torch.device) -> str:
    generator = torch.Generator(device=device).manual_seed(0)
    hidden = torch.randn(4, 300, 128, device=device, generator=generator, requires_grad=True)
    weight = torch.randn(4096, 128, device=device, generator=generator, requires_grad=True)
    targets = torch.randint(0, 4096, (4, 300), device=device, generator=generator)
    plain, count = next_token_loss(hidden @ weight.T, targets)
    plain_grads = torch.autograd.grad(plain, (hidden, weight))
    chunked = chunked_next_token_loss(hidden, weight, targets, chunk_size=256)[0]
    grads = torch.autograd.grad(chunked, (hidden, weight))
    torch.testing.assert_close(chunked, plain, rtol=1e-4, atol=1e-2)
    for a, b in zip(grads, plain_grads):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)
    if device.type == "cuda":
        with torch.autocast("cuda", dtype=torch.bfloat16):
            lean = chunked_next_token_loss(hidden, weight, targets)[0]
        assert abs(float(lean) - float(plain)) / float(plain) < 1e-2
    return f"chunked loss = plain loss and gradients (loss per token {float(plain.detach() / count):.3f})"


def check_compiled_blocks(device: torch.device) -> str:
    eager, compiled = model_on(device), model_on(device)
    for block in compiled.layers:
        block.compile()
    tokens = torch.randint(0, CONFIG.vocab_size, (2, 128), device=device)
    torch.testing.assert_close(compiled(tokens), eager(tokens), atol=2e-3, rtol=2e-3)
    return "compiled blocks = eager logits"


def check_training_precisions(device: torch.device) -> str:
    tokens = torch.randint(0, CONFIG.vocab_size, (4, 129), generator=torch.Generator().manual_seed(0)).to(device)

    def batches(step):
        return [{"inputs": tokens[:, :-1], "targets": tokens[:, 1:], "count": tokens[:, 1:].numel(),
                 "tokens": tokens[:, :-1].numel()}]

    def loss_fn(model, batch):
        return model(batch["inputs"], targets=batch["targets"])[0]

    finals = {}
    for precision in ("fp32", "bf16", "bf16-params"):
        with tempfile.TemporaryDirectory() as out:
            torch.manual_seed(0)
            model = Llama(CONFIG).to(device)
            cfg = LoopConfig(max_steps=10, lr=3e-3, warmup_steps=1, log_every=1, save_every=100, eval_every=0,
                             precision=precision, compile=precision == "bf16")
            summary = train(model, cfg, Distributed(device=device), Path(out), identity={}, micro_batches=batches,
                            loss_fn=loss_fn, save_weights=llama_writer(CONFIG, None, {}))
            finals[precision] = summary["final_loss"]
    assert finals["fp32"] < 5.0, finals  # from ln 512 = 6.24
    for precision in ("bf16", "bf16-params"):
        assert abs(finals[precision] - finals["fp32"]) < 0.15, finals
    return "10 training steps, final loss " + ", ".join(f"{k} {v:.3f}" for k, v in finals.items())


CHECKS = [check_compiled_decode_matches_plain, check_bf16_decode_runs, check_chunked_loss, check_compiled_blocks,
          check_training_precisions]


def main() -> int:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"{name}, torch {torch.__version__}")
    failures = 0
    for check in CHECKS:
        try:
            print(f"PASS {check.__name__}: {check(device)}", flush=True)
        except Exception as err:  # report every check, then fail
            failures += 1
            print(f"FAIL {check.__name__}: {err}", flush=True)
            traceback.print_exc()
    print(f"{len(CHECKS) - failures}/{len(CHECKS)} checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
