"""Supervised fine-tuning data (paper §3.1): dialogs in the messages format, validated, encoded with
the Llama 2 chat format, and packed into fixed-length sequences without cross-talk.

Targets are the assistant answers and their EOS only: the user side is masked (§3.1, "we zero-out
the loss on tokens from the user prompt"). Packing concatenates examples to fill the sequence as the
paper does, but each token attends only within its own example and positions restart at each
example, so a packed example's logits are those it would have alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from llamaforge.data.jsonl import jsonl_records
from llamaforge.errors import UserError
from llamaforge.losses import IGNORE_INDEX
from llamaforge.tokenizer import DialogError, Tokenizer, validate_dialog


@dataclass
class Example:
    ids: list[int]
    targets: list[int]  # targets[i]: the token position i must predict, or IGNORE_INDEX


def read_dialogs(path: Path) -> list[list[dict]]:
    """Dialogs of a JSONL file, each validated; errors name the file, line and field."""
    dialogs = []
    for where, record in jsonl_records(path):
        if not isinstance(record, dict) or "messages" not in record:
            raise UserError(f"{where}: missing field 'messages'")
        unknown = set(record) - {"messages"}
        if unknown:
            raise UserError(f"{where}: unknown field '{sorted(unknown)[0]}' (an SFT record holds 'messages')")
        try:
            dialogs.append(validate_dialog(record["messages"], ends_with="assistant"))
        except DialogError as err:
            raise UserError(f"{where}: field 'messages': {err}") from None
    return dialogs


def encode_example(tokenizer: Tokenizer, dialog: list[dict], last_turn_only: bool) -> Example:
    """Token ids and next-token targets; targets only where the next token is an answer token."""
    ids, mask = tokenizer.encode_dialog(dialog)
    if last_turn_only:  # keep only the final answer's span (the mask's last run of True)
        start = len(mask) - 1
        while start > 0 and mask[start - 1]:
            start -= 1
        mask = [False] * start + mask[start:]
    targets = [ids[i + 1] if mask[i + 1] else IGNORE_INDEX for i in range(len(ids) - 1)] + [IGNORE_INDEX]
    return Example(ids, targets)


def fit_length(example: Example, seq_len: int, policy: Literal["truncate", "drop"]) -> Example | None:
    """An example that fits seq_len tokens: cut from the prompt side (the start), or dropped.
    None when nothing to train on is left (every answer token was cut away)."""
    if len(example.ids) > seq_len:
        if policy == "drop":
            return None
        example = Example(example.ids[-seq_len:], example.targets[-seq_len:])
    return example if any(t != IGNORE_INDEX for t in example.targets) else None


@dataclass
class SequenceBatch:
    """Examples laid out in rows: tokens, targets, rotary positions and segment ids (B, T)."""

    tokens: torch.Tensor
    targets: torch.Tensor
    positions: torch.Tensor
    segments: torch.Tensor  # example index within its row; -1 on padding

    def attention_mask(self) -> torch.Tensor:
        """(B, T, T) True where a query may attend a key: same example, not later, not padding.
        Padding rows attend to themselves only, so no row of the mask is empty."""
        T = self.tokens.shape[1]
        causal = torch.ones(T, T, dtype=torch.bool, device=self.tokens.device).tril()
        same = self.segments[:, :, None] == self.segments[:, None, :]
        return (same & causal & (self.segments[:, :, None] >= 0)) | torch.eye(T, dtype=torch.bool, device=self.tokens.device)

    def to(self, device) -> SequenceBatch:
        return SequenceBatch(*(t.to(device) for t in (self.tokens, self.targets, self.positions, self.segments)))


def layout(rows: list[list[Example]], length: int) -> SequenceBatch:
    """Place each row's examples one after another, padding the rest of the row (`length` tokens)."""
    shape = (len(rows), length)
    tokens = torch.zeros(shape, dtype=torch.long)
    targets = torch.full(shape, IGNORE_INDEX, dtype=torch.long)
    positions = torch.zeros(shape, dtype=torch.long)
    segments = torch.full(shape, -1, dtype=torch.long)
    for r, row in enumerate(rows):
        at = 0
        for s, example in enumerate(row):
            n = len(example.ids)
            tokens[r, at : at + n] = torch.tensor(example.ids)
            targets[r, at : at + n] = torch.tensor(example.targets)
            positions[r, at : at + n] = torch.arange(n)
            segments[r, at : at + n] = s
            at += n
    return SequenceBatch(tokens, targets, positions, segments)


def pack(examples: list[Example], seq_len: int) -> list[list[Example]]:
    """Rows of examples in order, each row filled until the next example would overflow it."""
    rows: list[list[Example]] = []
    used = seq_len
    for example in examples:
        if used + len(example.ids) > seq_len:
            rows.append([])
            used = 0
        rows[-1].append(example)
        used += len(example.ids)
    return rows


def epoch_rows(examples: list[Example], seq_len: int, packing: bool, seed: int, epoch: int) -> list[list[Example]]:
    """One epoch's rows: examples in a seeded order, packed or one per row."""
    order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch)).tolist()
    shuffled = [examples[i] for i in order]
    return pack(shuffled, seq_len) if packing else [[e] for e in shuffled]
