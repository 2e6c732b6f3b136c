"""Sequences a reward model scores: a prompt with one response, as a complete chat-format dialog."""

from __future__ import annotations

import torch

from llamaforge.tokenizer import Tokenizer


def encode_response(tokenizer: Tokenizer, prompt, response: str, max_len: int) -> list[int]:
    """The complete dialog (prompt + this answer, ending with EOS), keeping its last max_len tokens:
    the score is read at the end, so a long prompt loses its beginning, never the answer."""
    ids, _ = tokenizer.encode_dialog([*prompt, {"role": "assistant", "content": response}])
    return ids[-max_len:]


def pad_right(sequences: list[list[int]], device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens, real) (B, T): each sequence at the start of its row, zeros after it."""
    length = max(len(s) for s in sequences)
    tokens = torch.zeros(len(sequences), length, dtype=torch.long)
    real = torch.zeros(len(sequences), length, dtype=torch.bool)
    for i, s in enumerate(sequences):
        tokens[i, : len(s)] = torch.tensor(s)
        real[i, : len(s)] = True
    return tokens.to(device), real.to(device)
