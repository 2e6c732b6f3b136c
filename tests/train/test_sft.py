"""`llamaforge sft` (llamaforge/train/sft.py, paper §3.1): a tiny run learns held-out answers, padding
mode, micro-batches across processes, the paper preset."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest
import torch

from llamaforge import Llama, ModelConfig
from llamaforge.data.jsonl import write_jsonl
from llamaforge.data.sft import Example, encode_example
from llamaforge.losses import IGNORE_INDEX
from llamaforge.train.distributed import Distributed
from llamaforge.train.sft import SftArgs, llama2_7b_sft, load_examples, main, micro_batches, plan_steps

CONFIG = ModelConfig(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=400, multiple_of=16, max_seq_len=128)

# Made-up entities and their capitals, spelled from the test tokenizer's syllables and digits.
NAMES = ["Varn", "Orin", "Telsa", "Mirak", "Quell"]


def capital_pairs() -> list[tuple[str, str]]:
    pairs = []
    for k in range(60):
        country = f"{NAMES[k % 5]}{k // 5}"  # Varn0, Orin0, ..., Quell11
        capital = f"{NAMES[(k * 3 + 1) % 5]}{(k * 7) % 10}"
        pairs.append((country, capital))
    return pairs


def dialog(country: str, capital: str) -> dict:
    return {
        "messages": [
            {"role": "user", "content": f"what is the capital of {country} ?"},
            {"role": "assistant", "content": f"the capital of {country} is {capital} ."},
        ]
    }


@pytest.fixture
def sft_files(tmp_path, tokenizer):
    """A random tiny model with the test tokenizer; 48 training and 12 held-out dialogs (split by
    entity: no held-out country appears in training)."""
    pairs = capital_pairs()
    train, held_out = pairs[:48], pairs[48:]
    assert not {c for c, _ in train} & {c for c, _ in held_out}
    torch.manual_seed(0)
    init = Llama(CONFIG).save_pretrained(tmp_path / "init", tokenizer_path=tokenizer.path)
    return {
        "init": init,
        "train": write_jsonl(tmp_path / "train.jsonl", [dialog(*p) for p in train]),
        "val": write_jsonl(tmp_path / "val.jsonl", [dialog(*p) for p in held_out]),
    }


def read_metrics(out: Path) -> tuple[list[dict], list[dict]]:
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if r.get("split") != "val"], [r for r in records if r.get("split") == "val"]


def tiny_args(files, out: Path, **changes) -> SftArgs:
    settings = dict(
        init=files["init"], data=[files["train"]], val_data=[files["val"]], out=out, preset="smoke",
        seq_len=128, batch_size=8, micro_batch_size=4, epochs=20, max_steps=40, lr=3e-3, warmup_steps=2,
        log_every=5, eval_every=5, save_every=40, eval_rows=12, device="cpu",
    )
    return SftArgs(**{**settings, **changes})


def test_tiny_sft_lowers_held_out_answer_loss(sft_files, tmp_path):
    out = main(tiny_args(sft_files, tmp_path / "run"))
    train_log, val_log = read_metrics(out)
    assert [r["step"] for r in val_log] == [0, 5, 10, 15, 20, 25, 30, 35, 40]
    first, last = val_log[0]["loss"], val_log[-1]["loss"]
    # Before training (step 0) a random model scores about ln(400) = 5.99 nats per answer token.
    assert first == pytest.approx(math.log(400), abs=0.1)
    # The answers' template ("the capital of", the country copied from the question, "is", ".",
    # EOS) is learnable; the held-out capitals are not. Demand a drop of at least 3 nats per answer
    # token from the first evaluation (step 0) to the last (step 40); seed 0 gives 6.03 -> 1.56.
    assert last < first - 3.0, (first, last)
    assert train_log[-1]["loss"] < train_log[0]["loss"] - 1.5
    tuned = Llama.from_pretrained(out / "model").config
    assert (tuned.dim, tuned.n_layers, tuned.kv_heads, tuned.hidden_dim) == (64, 2, 2, CONFIG.hidden_dim)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["val_loss"] == pytest.approx(last)


def test_no_packing_runs_with_one_example_per_row(sft_files, tmp_path, tokenizer):
    args = tiny_args(sft_files, tmp_path / "run", packing=False, max_steps=4, eval_every=2, save_every=4)
    examples = load_examples(args.data, tokenizer, args, print)
    steps = plan_steps(examples, args)
    assert len(steps) == args.epochs * math.ceil(48 / 8)  # 48 dialogs, 8 rows a step, one dialog a row
    assert all(len(row) == 1 for step in steps for row in step)
    for micro in micro_batches(steps[0], args, Distributed()):
        batch = micro["batch"]
        assert batch.segments.max() == 0  # one example per row: segment 0, then padding (-1)
        lengths = (batch.segments == 0).sum(dim=1)
        assert batch.tokens.shape[1] == int(lengths.max()) < args.seq_len  # padded to the longest row only
        assert micro["count"] == int((batch.targets != IGNORE_INDEX).sum())

    packed_args = tiny_args(sft_files, tmp_path / "unused")
    packed_steps = plan_steps(examples, packed_args)
    assert any(len(row) > 1 for row in packed_steps[0])  # packing does put several dialogs in a row

    out = main(args)
    train_log, val_log = read_metrics(out)
    assert [r["step"] for r in train_log] == [1, 4] and [r["step"] for r in val_log] == [0, 2, 4]
    assert all(math.isfinite(r["loss"]) for r in train_log + val_log)
    assert (out / "model" / "model.safetensors").is_file()


@pytest.mark.parametrize("packing", [True, False])
def test_tokens_count_every_position_the_forward_pass_processes(sft_files, tmp_path, tokenizer, packing):
    """tokens/s and the token totals count what the model computes on, prompts and padding included,
    while the loss is still normalized by the answer tokens alone."""
    args = tiny_args(sft_files, tmp_path / "run", packing=packing, max_steps=3, val_data=[], log_every=1, save_every=3)
    steps = plan_steps(load_examples(args.data, tokenizer, args, print), args)
    per_step = [micro_batches(steps[s], args, Distributed()) for s in range(3)]
    processed = list(itertools.accumulate(sum(m["batch"].tokens.numel() for m in ms) for ms in per_step))
    answers = list(itertools.accumulate(sum(m["count"] for m in ms) for ms in per_step))
    assert all(p > 2 * a for p, a in zip(processed, answers))  # prompts (and padding) are most of a row
    out = main(args)
    train_log, _ = read_metrics(out)
    assert [r["tokens"] for r in train_log] == processed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["tokens"] == processed[-1]
    assert summary["tokens_per_s"] == pytest.approx(processed[-1] / summary["elapsed_s"], rel=1e-9)
    if packing:
        assert processed[-1] == 3 * args.batch_size * args.seq_len  # full rows of seq_len


def numbered(lengths: list[int]) -> list[list[Example]]:
    return [[Example([k + 1] * n, [IGNORE_INDEX] * (n - 1) + [9])] for k, n in enumerate(lengths)]


@pytest.mark.parametrize("packing", [True, False])
def test_micro_batches_same_count_on_every_rank(packing):
    rows = numbered([3, 5, 2, 4, 6])  # five rows: odd, one rank gets an empty row
    args = SftArgs(seq_len=8, micro_batch_size=2, packing=packing)
    per_rank = [micro_batches(rows, args, Distributed(rank=r, world_size=2)) for r in range(2)]
    # 5 rows padded to 6, 3 per rank, micro-batches of 2: 2 micro-batches on each rank.
    assert [len(m) for m in per_rank] == [2, 2]
    assert [[m["batch"].tokens.shape[0] for m in ms] for ms in per_rank] == [[2, 1], [2, 1]]
    # Rank 0 gets rows 0, 2, 4; rank 1 rows 1, 3 and the empty one. Each real row exactly once.
    seen = sorted(int(t) for ms in per_rank for m in ms for t in m["batch"].tokens[:, 0] if t > 0)
    assert seen == [1, 2, 3, 4, 5]
    empty = per_rank[1][1]["batch"]
    assert empty.segments.max() == -1 and empty.targets.eq(IGNORE_INDEX).all() and per_rank[1][1]["count"] == 0
    # Every row's one target counts once over both ranks.
    assert sum(m["count"] for ms in per_rank for m in ms) == 5
    if packing:
        assert all(m["batch"].tokens.shape[1] == 8 for ms in per_rank for m in ms)
    else:  # padded to the longest row of each micro-batch: rows 0,2 -> 3; 4 -> 6; 1,3 -> 5; empty -> 1
        assert [[m["batch"].tokens.shape[1] for m in ms] for ms in per_rank] == [[3, 6], [5, 1]]


def test_llama2_7b_sft_preset_is_the_papers():
    args = llama2_7b_sft()
    assert args.lr == 2e-5  # §3.1: "initial learning rate of 2 x 10^-5"
    assert args.weight_decay == 0.1
    assert args.batch_size == 64
    assert args.seq_len == 4096
    assert args.epochs == 2
    assert args.max_steps == 0  # steps follow from the data and the 2 epochs
    assert args.packing and not args.last_turn_only and args.lora_rank == 0


def test_encode_example_of_training_dialog_fits(tokenizer):
    # The fixture's dialogs are short enough for seq_len 128 with room to pack several per row.
    lengths = [len(encode_example(tokenizer, dialog(*p)["messages"], False).ids) for p in capital_pairs()]
    assert max(lengths) < 64
