"""`llamaforge pretrain`: next-token pretraining on packed token sequences (paper §2.2).

build (processes, tokenizer, token files) -> data (packed sequences) -> model -> loop -> save.
--data is required here; the `llamaforge pretrain` command supplies the built-in world's corpus when
it is not given (llamaforge/world/pretrain_default.py). With no --tokenizer one is trained on the
data first. Runs as one process or under `torchrun --nproc_per_node N -m llamaforge pretrain`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
import torch.distributed as dist

from llamaforge import carbon
from llamaforge.config import MODEL_PRESETS
from llamaforge.data.text import read_documents
from llamaforge.data.tokens import TOKENS_INFO, PackedSequences, file_sha256, load_tokens, tokenize_documents
from llamaforge.device import DeviceName
from llamaforge.errors import UserError
from llamaforge.flags import OptionalPath, OptionalSources
from llamaforge.model import Llama
from llamaforge.tokenizer import Tokenizer, train_tokenizer
from llamaforge.train.distributed import Distributed, distributed_run
from llamaforge.train.loop import LoopConfig, llama_writer, train


@dataclass
class PretrainArgs(LoopConfig):
    """Pretrain a Llama 2 model on text (default: the built-in world's corpus)."""

    out: Path = Path("runs/pretrain")
    """Run directory: checkpoints/, model/ (the result), metrics.jsonl, summary.json. Re-running resumes."""
    preset: str = "demo"
    """Defaults for every option: demo, smoke, llama2_7b_pretrain (flags override them)."""
    data: OptionalSources = field(default_factory=list)
    """Text/JSONL/Parquet files or Hub dataset names; empty: the built-in world's corpus (written to
    OUT/data/world_corpus.jsonl)."""
    tokenizer: OptionalPath = None
    """tokenizer.model to use; default: train one on the data (vocabulary of the model preset)."""
    model: str = "tiny"
    """Model preset: llama2_7b, llama2_13b, llama2_34b, llama2_70b, tiny, smoke."""
    seq_len: int = 256
    """Tokens per training sequence."""
    batch_tokens: int = 4096
    """Global batch in tokens per optimizer step (all processes, accumulated); a multiple of seq_len."""
    micro_batch_size: int = 16
    """Sequences per forward pass in each process; the rest of the batch is accumulated."""
    val_fraction: float = 0.01
    """Fraction of documents held out for validation."""
    eval_sequences: int = 64
    """Validation sequences scored at each evaluation."""
    seed: int = 0
    """Seed of the data split and order, the model initialization and the world."""
    device: DeviceName = "auto"
    """cpu, cuda, or auto."""

    PRESETS: ClassVar[dict] = {}  # filled below: name -> function returning PretrainArgs


def demo() -> PretrainArgs:
    """The laptop pipeline's pretraining: the 6.3M `tiny` model, ~1.8M tokens (about 1.5 passes over
    the world's corpus) in 4-6 minutes on 2 CPU cores. At 300 steps the validation loss was still
    falling fast (0.47 -> 0.40 over the last 50 steps) and the SFT model's gold helpfulness moved by
    a third with nothing but a new tokenizer; 450 steps reached 0.35 and lifted SFT's gold
    helpfulness 0.253 -> 0.302 on the same data (docs/results.md). A tiny model over a short run
    wants a larger peak LR than the paper's 3e-4 and a warmup of a few percent of the run instead
    of 2000 steps."""
    return PretrainArgs(
        preset="demo", model="tiny", seq_len=256, batch_tokens=16 * 256, micro_batch_size=16, max_steps=450,
        lr=2e-3, warmup_steps=20, log_every=10, eval_every=50, save_every=100, eval_sequences=64,
    )


def smoke() -> PretrainArgs:
    """Seconds: wiring only."""
    return PretrainArgs(
        preset="smoke", model="smoke", seq_len=64, batch_tokens=8 * 64, micro_batch_size=4, max_steps=20,
        lr=3e-3, warmup_steps=5, log_every=5, eval_every=10, save_every=10, eval_sequences=8,
    )


def llama2_7b_pretrain() -> PretrainArgs:
    """The paper's 7B run (§2.2, Table 1): 4M-token batches of 4096-token sequences, peak LR 3e-4,
    2000 warmup steps, cosine to 10%, 2T tokens (476,837 steps), bf16 on GPUs."""
    return PretrainArgs(
        preset="llama2_7b_pretrain", model="llama2_7b", seq_len=4096, batch_tokens=4 * 2**20, micro_batch_size=1,
        max_steps=476_837, lr=3e-4, warmup_steps=2000, log_every=10, eval_every=1000, save_every=1000,
        eval_sequences=256, precision="bf16",
    )


PretrainArgs.PRESETS.update(demo=demo, smoke=smoke, llama2_7b_pretrain=llama2_7b_pretrain)


def prepare_data(args: PretrainArgs, vocab_size: int) -> tuple[Path, Path]:
    """Tokenizer and token files under out/data, made once (main process) and reused on resume."""
    data_dir = args.out / "data"
    sources = args.data
    tokenizer_path = args.tokenizer or data_dir / "tokenizer" / "tokenizer.model"
    if args.tokenizer is None and not tokenizer_path.is_file():
        train_tokenizer(read_documents(sources), vocab_size, tokenizer_path.parent)
    tokenizer = Tokenizer(tokenizer_path)
    tokens_dir = data_dir / "tokens"
    recorded = json.loads((tokens_dir / TOKENS_INFO).read_text()) if (tokens_dir / TOKENS_INFO).is_file() else None
    wanted = {"sources": sources, "seed": args.seed, "val_fraction": args.val_fraction, "tokenizer_sha256": file_sha256(tokenizer_path)}
    if recorded is None or any(recorded[k] != v for k, v in wanted.items()):
        info = tokenize_documents(read_documents(sources), tokenizer, tokens_dir, args.val_fraction, args.seed, sources)
        print(f"tokenized {info['documents']['train']:,} + {info['documents']['val']:,} documents: "
              f"{info['tokens']['train']:,} train and {info['tokens']['val']:,} validation tokens")
    return tokenizer_path, tokens_dir


def step_micro_batches(
    sequences: PackedSequences, first: int, count: int, micro_batch_size: int, env: Distributed
) -> list[dict]:
    """This process's share of sequences [first, first + count), cut into micro-batches. Process r
    takes every world_size-th sequence, so a step holds the same sequences whatever the number of
    processes (what makes N-process and 1-process runs, and their checkpoints, interchangeable)."""
    mine = list(range(first + env.rank, first + count, env.world_size))
    batches = []
    for i in range(0, len(mine), micro_batch_size):
        tokens = sequences.batch(mine[i : i + micro_batch_size]).to(env.device)
        inputs, targets = tokens[:, :-1], tokens[:, 1:]
        batches.append({"inputs": inputs, "targets": targets, "count": targets.numel(), "tokens": inputs.numel()})
    return batches


def main(args: PretrainArgs) -> Path:
    if not args.data:
        raise UserError("pretrain needs --data FILES")
    with distributed_run(args.device) as env:
        if args.model not in MODEL_PRESETS:
            raise UserError(f"--model {args.model!r}: unknown preset (known: {', '.join(MODEL_PRESETS)})")
        config = MODEL_PRESETS[args.model]()
        batch_size, remainder = divmod(args.batch_tokens, args.seq_len)
        if remainder or batch_size % env.world_size or args.eval_sequences % env.world_size:
            raise UserError(
                f"--batch-tokens {args.batch_tokens} must be a multiple of --seq-len {args.seq_len}, and the "
                f"batch ({batch_size} sequences) and --eval-sequences ({args.eval_sequences}) multiples of {env.world_size} processes"
            )
        if args.seq_len > config.max_seq_len:
            raise UserError(f"--seq-len {args.seq_len} exceeds the {args.model} context of {config.max_seq_len}")

        if env.is_main:
            tokenizer_path, tokens_dir = prepare_data(args, config.vocab_size)
        if env.world_size > 1:
            dist.barrier()  # the other processes wait for the data, then read it
        tokenizer_path = args.tokenizer or args.out / "data" / "tokenizer" / "tokenizer.model"
        tokens_dir = args.out / "data" / "tokens"
        tokenizer = Tokenizer(tokenizer_path)
        config = config.replace(vocab_size=tokenizer.vocab_size)
        train_data = PackedSequences(load_tokens(tokens_dir, "train"), args.seq_len, args.seed)
        val_tokens = load_tokens(tokens_dir, "val")  # empty with --val-fraction 0: no validation
        val_data = PackedSequences(val_tokens, args.seq_len, args.seed) if len(val_tokens) else None

        torch.manual_seed(args.seed)  # the same initialization in every process
        model = Llama(config).to(env.device)
        env.print(f"pretraining {args.model} ({model.num_parameters() / 1e6:.1f}M parameters) on {len(train_data):,} "
                  f"sequences of {args.seq_len} tokens, {batch_size} per step, {args.max_steps} steps, "
                  f"{env.world_size} process(es)")

        def loss_fn(train_model, batch):
            return train_model(batch["inputs"], targets=batch["targets"])[0]  # chunked: no full logits

        tokens_info = json.loads((tokens_dir / TOKENS_INFO).read_text())
        identity = {
            "stage": "pretrain",
            "model_config": dataclasses.asdict(config),
            "seq_len": args.seq_len,
            "batch_size": batch_size,
            "seed": args.seed,
            "data": {k: tokens_info[k] for k in ("sources", "tokens", "tokenizer_sha256")},
        }
        info = {"stage": "pretrain", "parent": None, "args": {k: str(v) for k, v in dataclasses.asdict(args).items()}}
        train(
            model,
            args,
            env,
            args.out,
            identity=identity,
            micro_batches=lambda step: step_micro_batches(train_data, step * batch_size, batch_size, args.micro_batch_size, env),
            loss_fn=loss_fn,
            save_weights=llama_writer(config, tokenizer_path, info),
            val_batches=step_micro_batches(val_data, 0, args.eval_sequences, args.micro_batch_size, env) if val_data else None,
            flops_per_token=carbon.flops_per_token(config, args.seq_len),
        )
    return args.out
