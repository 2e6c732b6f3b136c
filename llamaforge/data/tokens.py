"""Pretraining tokens: documents tokenized once into memory-mapped token files, then read as
fixed-length packed sequences.

Each document becomes [BOS] tokens [EOS] (EOS between documents, and every document starts the way
a prompt does at inference). Documents are shuffled with the seed and a fraction of them is held out
for validation, whole, so no validation text is ever trained on.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from llamaforge.checkpoint import atomic_directory
from llamaforge.errors import UserError
from llamaforge.tokenizer import Tokenizer

TOKENS_INFO = "tokens.json"


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tokenize_documents(
    documents: Iterable[str], tokenizer: Tokenizer, out_dir: Path, val_fraction: float, seed: int, sources: list[str]
) -> dict:
    """Write `train.bin` and `val.bin` (uint16, or uint32 for vocabularies over 65,535) and
    `tokens.json` describing them, atomically. Returns the description."""
    dtype = np.uint16 if tokenizer.vocab_size <= 2**16 - 1 else np.uint32
    encoded = [
        np.asarray(tokenizer.encode(doc, bos=True, eos=True), dtype=dtype)
        for doc in tqdm(documents, desc="tokenizing", unit=" docs", mininterval=1.0)
        if doc.strip()
    ]
    if len(encoded) < 2:
        raise UserError(f"{', '.join(sources)}: need at least 2 non-empty documents, found {len(encoded)}")
    order = np.random.default_rng(seed).permutation(len(encoded))
    n_val = min(max(1, round(val_fraction * len(encoded))), len(encoded) - 1) if val_fraction > 0 else 0
    splits = {"val": order[:n_val], "train": order[n_val:]}
    info = {
        "dtype": np.dtype(dtype).name,
        "documents": {name: len(ids) for name, ids in splits.items()},
        "tokens": {name: int(sum(len(encoded[i]) for i in ids)) for name, ids in splits.items()},
        "seed": seed,
        "val_fraction": val_fraction,
        "sources": sources,
        "tokenizer_sha256": file_sha256(tokenizer.path),
    }
    with atomic_directory(out_dir) as tmp:
        for name, ids in splits.items():
            tokens = np.concatenate([encoded[i] for i in ids]) if len(ids) else np.zeros(0, dtype)
            tokens.tofile(tmp / f"{name}.bin")
        (tmp / TOKENS_INFO).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    return info


def load_tokens(directory: Path, split: str) -> np.ndarray:
    """The memory-mapped tokens of one split."""
    info_path = directory / TOKENS_INFO
    if not info_path.is_file():
        raise UserError(f"{info_path}: file not found")
    info = json.loads(info_path.read_text())
    path = directory / f"{split}.bin"
    if path.is_file() and path.stat().st_size == 0:  # e.g. val.bin with val_fraction 0: mmap refuses empty files
        return np.zeros(0, dtype=np.dtype(info["dtype"]))
    return np.memmap(path, dtype=np.dtype(info["dtype"]), mode="r")


class PackedSequences:
    """The token stream cut into consecutive windows of seq_len + 1 tokens (inputs and shifted
    targets), visited in a seeded random order that is reshuffled every epoch.

    Sequence number n of the whole run (across epochs) is a pure function of (seed, n): a run's data
    position is just how many sequences it has consumed, which makes resuming exact and lets any
    number of processes split a step's sequences among themselves.
    """

    def __init__(self, tokens: np.ndarray, seq_len: int, seed: int):
        self.tokens, self.seq_len, self.seed = tokens, seq_len, seed
        self.n_windows = (len(tokens) - 1) // seq_len
        if self.n_windows < 1:
            raise UserError(f"{len(tokens)} tokens are fewer than one sequence of {seq_len + 1}")
        self._epoch, self._order = -1, None

    def __len__(self) -> int:
        return self.n_windows

    def window(self, n: int) -> torch.Tensor:
        """Run-wide sequence number n -> (seq_len + 1,) token ids."""
        epoch, index = divmod(n, self.n_windows)
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epoch, self._order = epoch, torch.randperm(self.n_windows, generator=generator)
        start = int(self._order[index]) * self.seq_len
        return torch.from_numpy(self.tokens[start : start + self.seq_len + 1].astype(np.int64))

    def batch(self, numbers: Iterable[int]) -> torch.Tensor:
        """(len(numbers), seq_len + 1) token ids."""
        return torch.stack([self.window(n) for n in numbers])
