"""Sequences a reward model scores: a prompt with one response, as a complete chat-format dialog."""

from __future__ import annotations

import torch

from llamaforge.tokenizer import Tokenizer


def encode_response(tokenizer: Tokenizer, prompt, response: str, max_len: int) -> tuple[list[int], int]:
    """The complete dialog (prompt + this answer, ending with EOS), keeping its last max_len tokens:
    the score is read at the end, so a long prompt loses its beginning, never the answer. Also how
    many of the last ids are the answer (its EOS included; at most all ids but the first, which
    nothing predicts): what a reward model's likelihood term reads."""
    ids, assistant = tokenizer.encode_dialog([*prompt, {"role": "assistant", "content": response}])
    answer = assistant[::-1].index(False)  # the last assistant turn's tokens: the mask's last run of True
    ids = ids[-max_len:]
    return ids, min(answer, len(ids) - 1)


def score_inputs(encoded: list[tuple[list[int], int]], device=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(tokens, real, answer) (B, T) of encode_response results, right-padded: the arguments of
    RewardModel.forward. `answer` marks each row's answer tokens."""
    tokens, real = pad_right([ids for ids, _ in encoded], device)
    answer = torch.zeros_like(real)
    for i, (ids, answer_length) in enumerate(encoded):
        answer[i, len(ids) - answer_length : len(ids)] = True
    return tokens, real, answer


def pad_right(sequences: list[list[int]], device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens, real) (B, T): each sequence at the start of its row, zeros after it."""
    length = max(len(s) for s in sequences)
    tokens = torch.zeros(len(sequences), length, dtype=torch.long)
    real = torch.zeros(len(sequences), length, dtype=torch.bool)
    for i, s in enumerate(sequences):
        tokens[i, : len(s)] = torch.tensor(s)
        real[i, : len(s)] = True
    return tokens.to(device), real.to(device)
