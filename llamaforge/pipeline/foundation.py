"""The stages before any training: the world's data files and the tokenizer."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from llamaforge.data.text import read_documents
from llamaforge.pipeline.stage import Stage, StageContext
from llamaforge.tokenizer import B_INST, E_INST, train_tokenizer
from llamaforge.world.export import ExportArgs
from llamaforge.world.export import main as export_world


def world_stage(ctx: StageContext):
    export_world(ExportArgs(out=ctx.out, seed=ctx.seed))
    files = [f for f in ctx.out.iterdir() if f.name != "stage.json"]
    metrics = {"files": len(files), "megabytes": round(sum(f.stat().st_size for f in files) / 1e6, 2)}
    return {"data": ctx.out}, metrics


def chat_texts(path: Path) -> Iterator[str]:
    """Dialogs rendered with the chat tags, so the tokenizer learns compact pieces for them."""
    with path.open() as lines:
        for line in lines:
            turns = json.loads(line)["messages"]
            yield " ".join(
                f"{B_INST} {m['content']} {E_INST}" if m["role"] != "assistant" else m["content"] for m in turns
            )


def tokenizer_stage(ctx: StageContext):
    world = ctx.input("world", "data")

    def documents() -> Iterator[str]:
        yield from read_documents([world / "corpus.jsonl"])
        yield from chat_texts(world / "sft_train.jsonl")

    train_tokenizer(documents(), ctx.preset.vocab_size, ctx.out)
    return {"tokenizer": ctx.out / "tokenizer.model"}, {"vocab_size": ctx.preset.vocab_size}


WORLD = Stage("world", (), lambda preset, seed: {"seed": seed}, world_stage)
TOKENIZER = Stage("tokenizer", ("world",), lambda preset, seed: {"vocab_size": preset.vocab_size}, tokenizer_stage)
