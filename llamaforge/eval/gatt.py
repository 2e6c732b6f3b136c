"""Ghost Attention evaluation (paper §3.3): does an instruction given once hold for the whole dialog?

Constraint recall by turn: held-out dialogs open with an instruction as the system message; the
model answers every user turn itself (greedy), and a judge the caller supplies checks each answer
against the instruction (the pipeline passes the world's gold `constraint_followed`). The paper
reports recall at turns 2/4/6/20 of 100/10/0/0% before GAtt and 100% after.

Attention on the system message (paper Fig. 10): the share of attention that the answer tokens of
each turn put on the system message's tokens, per layer, averaged over heads and answer tokens.
The model's attention runs in `F.scaled_dot_product_attention`, which never forms the weights, so
they are recomputed here from each attention module's inputs, caught by forward pre-hooks: the
model's code stays as it is.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from llamaforge.model import Llama, apply_rotary
from llamaforge.rlhf.gatt import DialogPlan, converse
from llamaforge.tokenizer import B_INST, B_SYS, Tokenizer


@dataclass(frozen=True)
class RecallPlan:
    """How GAtt is evaluated: held-out dialogs (test instructions, test prompts) and the turns read."""

    dialogs: int = 48
    """Held-out dialogs per instruction split, each planned to the last of `turns` user turns."""
    turns: tuple[int, ...] = (1, 2, 4, 6, 8)
    """Turns whose recall is reported (those the context holds)."""
    max_new_tokens: int = 40
    """Most tokens per answer."""
    attention_dialogs: int = 16
    """Dialogs whose attention on the system message is measured."""
    attribute_dialogs: int = 40
    """Held-out dialogs per condition whose instruction is a character alone (paper Table 30
    measured attributes only): questions that name no one else, and questions that name another
    person each."""


def system_dialogs(model: Llama, tokenizer: Tokenizer, plans: list[DialogPlan], max_new_tokens: int,
                   batch_size: int = 64) -> tuple[list[list[dict]], list[int | None]]:
    """Each plan's dialog answered greedily by the model, the instruction given once as the system
    message, and the turn of an empty answer that ended it early (see `converse`)."""
    starts = [[{"role": "system", "content": p.instruction}] for p in plans]
    return converse(model, tokenizer, starts, [list(p.users) for p in plans], max_new_tokens, 0.0, 1.0, 0,
                    batch_size, model.config.max_seq_len)


def mean_by_turn(dialogs: list[list[dict]], empty_at: list[int | None], score: Callable[[list[dict], int, str], float],
                 turns: tuple[int, ...]) -> dict:
    """{"mean": {turn: mean of score(dialog, turn, answer) over the dialogs that reached the turn},
    "dialogs": {turn: how many reached it}}; an empty answer reaches its turn with answer ""; turns no
    dialog reached are left out. Dialogs are [system, user, assistant, user, assistant, ...]."""
    means, reached = {}, {}
    for turn in turns:
        answers = [(d, d[2 * turn]["content"]) for d in dialogs if len(d) > 2 * turn]
        answers += [(d, "") for d, empty in zip(dialogs, empty_at) if empty == turn]
        if answers:
            means[str(turn)] = sum(score(d, turn, a) for d, a in answers) / len(answers)
            reached[str(turn)] = len(answers)
    return {"mean": means, "dialogs": reached}


def recall_by_turn(dialogs: list[list[dict]], empty_at: list[int | None], followed: Callable[[str, str], bool],
                   turns: tuple[int, ...]) -> dict:
    """{"recall": {turn: share of the dialogs that reached it whose answer there follows the system
    message's instruction}, "dialogs": {turn: how many reached it}}; an empty answer fails."""
    result = mean_by_turn(dialogs, empty_at, lambda d, turn, answer: float(followed(d[0]["content"], answer)), turns)
    return {"recall": result["mean"], "dialogs": result["dialogs"]}


@torch.no_grad()
def attention_weights(model: Llama, tokens: torch.Tensor) -> list[torch.Tensor]:
    """Each layer's attention weights (B, n_heads, T, T) for tokens (B, T) under plain causal
    attention, recomputed from the queries and keys of the inputs each attention module receives."""
    inputs = []
    hooks = [layer.attention.register_forward_pre_hook(lambda module, args: inputs.append((module, *args[:3])))
             for layer in model.layers]
    try:
        model.hidden_states(tokens)
    finally:
        for hook in hooks:
            hook.remove()
    weights = []
    for attention, x, cos, sin in inputs:  # x: the normed block input (B, T, dim)
        B, T, _ = x.shape
        q = attention.wq(x).view(B, T, attention.n_heads, attention.head_dim).transpose(1, 2)  # (B, H, T, hd)
        k = attention.wk(x).view(B, T, attention.n_kv_heads, attention.head_dim).transpose(1, 2)  # (B, KV, T, hd)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        k = k.repeat_interleave(attention.n_heads // attention.n_kv_heads, dim=1)  # query head h reads kv head h // groups
        scores = (q.float() @ k.float().transpose(-1, -2)) / math.sqrt(attention.head_dim)  # (B, H, T, T)
        causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
        weights.append(scores.masked_fill(~causal, float("-inf")).softmax(dim=-1))
    return weights


def attention_mass(weights: list[torch.Tensor], keys: range, queries: range) -> list[float]:
    """Per layer: the attention weight the `queries` positions put on the `keys` positions, summed
    over those keys, averaged over heads and queries (sequence 0 of the batch)."""
    return [float(w[0][:, queries.start : queries.stop, keys.start : keys.stop].sum(-1).mean()) for w in weights]


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def dialog_spans(tokenizer: Tokenizer, dialog: list[dict]) -> tuple[list[int], range, list[range]]:
    """Token ids of a dialog that opens with a system message, the span of the system message's
    text, and the span of each assistant answer's tokens (its EOS excluded)."""
    ids, mask = tokenizer.encode_dialog(dialog)
    system = dialog[0]["content"]
    start = _common_prefix(tokenizer.encode(f"{B_INST} {B_SYS}", bos=True), ids)
    end = _common_prefix(tokenizer.encode(f"{B_INST} {B_SYS}{system}", bos=True), ids)
    answers, i = [], 0
    while i < len(mask):
        if mask[i]:
            j = i
            while j < len(mask) and mask[j]:
                j += 1
            answers.append(range(i, j - 1 if ids[j - 1] == tokenizer.eos_id else j))
            i = j
        else:
            i += 1
    return ids, range(start, end), answers


def system_attention(model: Llama, tokenizer: Tokenizer, dialogs: list[list[dict]]) -> dict:
    """Attention on the system message (paper Fig. 10), averaged over dialogs: "by_layer", at each
    dialog's last answer; "by_turn", each turn's answer averaged over layers (turns as strings)."""
    by_layer, by_turn = [], {}
    model.eval()
    device = next(model.parameters()).device
    for dialog in dialogs:
        ids, system, answers = dialog_spans(tokenizer, dialog)
        weights = attention_weights(model, torch.tensor([ids], device=device))
        for turn, span in enumerate(answers, start=1):
            mass = attention_mass(weights, system, span)
            by_turn.setdefault(str(turn), []).append(sum(mass) / len(mass))
        by_layer.append(attention_mass(weights, system, answers[-1]))
    return {
        "by_layer": [sum(col) / len(col) for col in zip(*by_layer)] if by_layer else [],
        "by_turn": {t: sum(v) / len(v) for t, v in by_turn.items()},
        "dialogs": len(by_layer),
    }


def plot(recall: dict[str, dict[str, float]], attention: dict[str, dict], path: Path) -> Path:
    """A PNG of three panels, one line per label (the keys of `recall` and `attention`): recall by
    turn, attention on the system message by layer (last turn) and by turn (mean of layers)."""
    from llamaforge.report.plots import plt, png  # matplotlib, file-only backend

    fig, axes = plt.subplots(1, 3, figsize=(13.5, 3.4))
    for label, values in recall.items():
        axes[0].plot([int(t) for t in values], [100 * v for v in values.values()], marker="o", label=label)
    for label, values in attention.items():
        axes[1].plot(range(1, len(values["by_layer"]) + 1), values["by_layer"], marker="o", label=label)
        axes[2].plot([int(t) for t in values["by_turn"]], list(values["by_turn"].values()), marker="o", label=label)
    titles = ("constraint recall (%)", "attention on system, last turn", "attention on system, mean of layers")
    for ax, title, xlabel in zip(axes, titles, ("turn", "layer", "turn")):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    path.write_bytes(png(fig))
    return path
