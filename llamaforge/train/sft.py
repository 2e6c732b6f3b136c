"""`llamaforge sft`: supervised fine-tuning on dialogs (paper §3.1).

build -> data (validated dialogs, answer-only targets, packed rows) -> model (--init, optional LoRA)
-> loop -> save. The loss covers assistant answers and their EOS; with packing, examples share a row
but neither attention nor positions cross between them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

import torch

from llamaforge import carbon
from llamaforge.checkpoint import TOKENIZER_FILE, load_model_and_tokenizer, load_tensors, our_name, weight_files
from llamaforge.data.sft import Example, SequenceBatch, encode_example, epoch_rows, fit_length, layout, read_dialogs
from llamaforge.device import DeviceName
from llamaforge.errors import UserError
from llamaforge.flags import OptionalPaths, RequiredPath, RequiredPaths
from llamaforge.lora import add_lora, merge_lora
from llamaforge.losses import IGNORE_INDEX
from llamaforge.train.distributed import Distributed, distributed_run
from llamaforge.train.loop import LoopConfig, llama_writer, train


@dataclass
class SftArgs(LoopConfig):
    """Fine-tune a model on dialogs, training on the assistant answers only."""

    max_steps: int = 0
    """Optimizer steps; 0: --epochs passes over the data."""
    lr: float = 2e-5
    """Peak learning rate (paper §3.1: 2e-5)."""
    init: RequiredPath = None
    """Checkpoint to start from (a Hugging Face Llama directory with tokenizer.model)."""
    data: RequiredPaths = field(default_factory=list)
    """Training dialogs, JSONL: {"messages": [{"role": ..., "content": ...}, ...]}."""
    val_data: OptionalPaths = field(default_factory=list)
    """Held-out dialogs for the validation answer loss."""
    out: Path = Path("runs/sft")
    """Run directory; model/ holds the result. Re-running resumes."""
    preset: str = "demo"
    """Defaults for every option: demo, smoke, llama2_7b_sft (flags override them)."""
    seq_len: int = 512
    """Tokens per training row."""
    batch_size: int = 16
    """Rows per optimizer step, all processes together."""
    micro_batch_size: int = 16
    """Rows per forward pass in each process."""
    epochs: int = 2
    """Passes over the data; sets max_steps unless --max-steps is given (> 0)."""
    packing: bool = True
    """Concatenate examples to fill each row (paper §3.1); --no-packing pads one example per row."""
    last_turn_only: bool = False
    """Train on the last assistant turn of each dialog only (default: every assistant turn)."""
    too_long: Literal["truncate", "drop"] = "truncate"
    """Examples longer than seq_len: cut from the prompt side, or drop them."""
    eval_rows: int = 32
    """Validation rows scored at each evaluation (from --val-data)."""
    lora_rank: int = 0
    """LoRA adapter rank; 0 trains every weight (the paper's recipe)."""
    lora_alpha: float = 16.0
    """LoRA scale numerator (adapters are scaled by alpha / rank)."""
    seed: int = 0
    """Seed of the data order."""
    device: DeviceName = "auto"
    """cpu, cuda, or auto."""

    PRESETS: ClassVar[dict] = {}


def demo() -> SftArgs:
    """The laptop pipeline's SFT: 3,000 world demonstrations, 3 epochs (60 steps). The paper's 2e-5
    is for 7B+ models; the 6M model fine-tunes at 1e-3. The paper's 2 epochs left it underfit: on
    the same pretrained model, 3 epochs took greedy gold helpfulness on held-out helpful prompts
    from 0.48 to 0.60 and validation loss from 0.83 to 0.75 for 35 s more (docs/results.md)."""
    return SftArgs(
        preset="demo", seq_len=512, batch_size=16, micro_batch_size=16, epochs=3, max_steps=0, lr=1e-3,
        warmup_steps=5, log_every=5, eval_every=20, save_every=50, eval_rows=16,
    )


def smoke() -> SftArgs:
    return SftArgs(
        preset="smoke", seq_len=256, batch_size=8, micro_batch_size=4, epochs=1, max_steps=6, lr=1e-3,
        warmup_steps=2, log_every=2, eval_every=3, save_every=3, eval_rows=4,
    )


def llama2_7b_sft() -> SftArgs:
    """Paper §3.1: cosine schedule, initial LR 2e-5, weight decay 0.1, batch 64, sequence 4096,
    2 epochs. Warmup is not stated; 3% of a ~900-step run is used here."""
    return SftArgs(
        preset="llama2_7b_sft", seq_len=4096, batch_size=64, micro_batch_size=1, epochs=2, max_steps=0, lr=2e-5,
        warmup_steps=30, log_every=10, eval_every=100, save_every=200, eval_rows=64, precision="bf16",
    )


SftArgs.PRESETS.update(demo=demo, smoke=smoke, llama2_7b_sft=llama2_7b_sft)


def load_examples(paths: list[Path], tokenizer, args: SftArgs, log) -> list[Example]:
    examples, dropped = [], 0
    for path in paths:
        for dialog in read_dialogs(path):
            example = fit_length(encode_example(tokenizer, dialog, args.last_turn_only), args.seq_len, args.too_long)
            if example is None:
                dropped += 1
            else:
                examples.append(example)
    if dropped:
        log(f"{dropped} of {dropped + len(examples)} dialogs dropped: longer than {args.seq_len} tokens "
            f"({'--too-long drop' if args.too_long == 'drop' else 'no answer token left after truncation'})")
    if not examples and paths:
        if not dropped:
            raise UserError(f"{paths[0]}: no dialog to train on (the file is empty)")
        raise UserError(f"{paths[0]}: no trainable dialog (all {dropped} longer than --seq-len {args.seq_len})")
    return examples


def plan_steps(examples: list[Example], args: SftArgs) -> list[list[list[Example]]]:
    """Every optimizer step's rows, epoch after epoch: a pure function of the data and seed."""
    steps = []
    for epoch in range(args.epochs):
        rows = epoch_rows(examples, args.seq_len, args.packing, args.seed, epoch)
        steps += [rows[i : i + args.batch_size] for i in range(0, len(rows), args.batch_size)]
    return steps


def micro_batches(rows: list[list[Example]], args: SftArgs, env: Distributed) -> list[dict]:
    """This process's rows of a step, in micro-batches. Every process gets the same number of rows
    (empty rows pad the step), because sharded training needs the same number of forward passes."""
    rows = rows + [[] for _ in range(-len(rows) % env.world_size)]
    mine = rows[env.rank :: env.world_size]
    batches = []
    for i in range(0, len(mine), args.micro_batch_size):
        chunk = mine[i : i + args.micro_batch_size]
        length = args.seq_len if args.packing else max([sum(len(e.ids) for e in row) for row in chunk] + [1])
        batch = layout(chunk, length).to(env.device)
        # count: the answer tokens (the loss terms); tokens: every position the forward pass runs,
        # prompts and padding included (what tokens/s counts)
        batches.append({"batch": batch, "count": int((batch.targets != IGNORE_INDEX).sum()), "tokens": batch.tokens.numel()})
    return batches


def sequence_loss(model, batch: SequenceBatch) -> torch.Tensor:
    """Summed answer loss; the model computes it in chunks, never holding all the logits."""
    return model(batch.tokens, positions=batch.positions, mask=batch.attention_mask(), targets=batch.targets)[0]


@dataclass
class FinetuneOptions:
    """How a command that fine-tunes on data it made (rejection sampling, GAtt, distillation) calls
    SFT: a preset and the few values it may change."""

    sft_preset: str = "demo"
    """Preset of the fine-tuning (llamaforge sft --preset)."""
    epochs: int = 0
    """Fine-tuning epochs; 0: the SFT preset's."""
    max_steps: int = 0
    """Fine-tuning optimizer steps; 0: from the epochs."""
    lr: float = 0.0
    """Fine-tuning peak learning rate; 0: the SFT preset's."""


def finetune_args(options: FinetuneOptions, **fields) -> SftArgs:
    """The SFT preset `options.sft_preset` with `fields` set, and the options' `epochs`,
    `max_steps` and `lr` where they are non-zero (0: the preset's)."""
    args = dataclasses.replace(SftArgs.PRESETS[options.sft_preset](), **fields)
    chosen = {name: getattr(options, name) for name in ("epochs", "max_steps", "lr") if getattr(options, name)}
    return dataclasses.replace(args, **chosen)


def main(args: SftArgs) -> Path:
    if args.init is None or not args.data:
        raise UserError("sft needs --init CKPT and --data FILES")
    if args.epochs < 1:
        raise UserError(f"--epochs {args.epochs}: must be at least 1")
    with distributed_run(args.device) as env:
        log = env.print
        model, tokenizer = load_model_and_tokenizer(args.init, device=env.device)
        if args.seq_len > model.config.max_seq_len:
            raise UserError(f"--seq-len {args.seq_len} exceeds the model's context of {model.config.max_seq_len}")
        train_examples = load_examples(args.data, tokenizer, args, log)
        val_examples = load_examples(args.val_data, tokenizer, args, log)
        steps = plan_steps(train_examples, args)
        max_steps = args.max_steps if args.max_steps > 0 else len(steps)
        run = dataclasses.replace(args, max_steps=max_steps)
        if args.lora_rank > 0:
            add_lora(model, args.lora_rank, args.lora_alpha)
        rows_per_epoch = len(steps) // args.epochs * args.batch_size
        log(f"fine-tuning {args.init} on {len(train_examples):,} dialogs ({'packed' if args.packing else 'padded'}, "
            f"~{rows_per_epoch:,} rows of {args.seq_len} per epoch), {max_steps} steps"
            + (f", LoRA rank {args.lora_rank}" if args.lora_rank else ""))

        val_rows = [[e] for e in val_examples][: args.eval_rows]

        writer = llama_writer(model.config, args.init / TOKENIZER_FILE, {"stage": "sft", "parent": str(args.init)})

        def save_weights(state, directory, write_more=None):
            if args.lora_rank > 0 and write_more is None:  # the final model: adapters merged into weights
                state = merge_lora(state, args.lora_rank, args.lora_alpha)
            writer(state, directory, write_more)

        identity = {
            "stage": "sft",
            "init": str(args.init),
            "model_config": dataclasses.asdict(model.config),
            "data": [str(p) for p in args.data],
            "examples": len(train_examples),
            **{k: getattr(args, k) for k in ("seq_len", "batch_size", "epochs", "packing", "last_turn_only", "too_long", "lora_rank", "seed")},
        }
        train(
            model,
            run,
            env,
            args.out,
            identity=identity,
            micro_batches=lambda step: micro_batches(steps[step % len(steps)], args, env),
            loss_fn=lambda train_model, micro: sequence_loss(train_model, micro["batch"]),
            save_weights=save_weights,
            load_weights=_load_resume_weights,
            val_batches=micro_batches(val_rows, dataclasses.replace(args, packing=False), env) if val_rows else None,
            flops_per_token=carbon.flops_per_token(model.config, args.seq_len),
        )
    return args.out



def _load_resume_weights(directory: Path) -> dict:
    """A checkpoint's weights under our names, LoRA adapters included (kept unmerged until the end)."""
    return {our_name(name): tensor for file in weight_files(directory) for name, tensor in load_tensors(file).items()}
