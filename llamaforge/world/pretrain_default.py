"""The `llamaforge pretrain` command's default data: with no --data, the built-in world's corpus.

The stage (llamaforge/train/pretrain.py) reads only the files it is given and knows nothing of the
world; this command-layer wrapper writes the world's corpus as OUT/data/world_corpus.jsonl (one
{"text": document} per line, World(seed).corpus_documents() in order) and passes it as --data.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from llamaforge.train import pretrain
from llamaforge.world.world import World


def world_corpus(path: Path, seed: int) -> Path:
    """The built-in world's corpus as JSONL, written atomically (a killed write leaves no file that
    a re-run would take for the corpus)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    with partial.open("w") as f:
        for doc in World(seed).corpus_documents():
            f.write(json.dumps({"text": doc}) + "\n")
    os.replace(partial, path)
    return path


def pretrain_main(args: pretrain.PretrainArgs) -> Path:
    """`llamaforge pretrain`: pretrain.main, on the world's corpus when --data is not given."""
    if not args.data:
        path = args.out / "data" / "world_corpus.jsonl"
        # Under torchrun only the main process (RANK 0) reads the data (pretrain.prepare_data), so
        # only it writes the file; the others never open it.
        if int(os.environ.get("RANK", "0")) == 0 and not path.is_file():
            world_corpus(path, args.seed)
        args = dataclasses.replace(args, data=[str(path)])
    return pretrain.main(args)
