"""Reward-model evaluation (paper §3.2.2, Table 8): accuracy per rating level on held-out pairs.

A pair counts as correct when the reward model scores the chosen response above the rejected one,
and as half correct on a tie (rare for a reward model, common for a coarse gold judge: two refusals).
`llamaforge eval reward` prints the table for any reward models and preference files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from llamaforge.checkpoint import TOKENIZER_FILE, load_for_scoring, load_reward_model
from llamaforge.data.preferences import Preference, read_all
from llamaforge.data.scoring import encode_response, score_inputs
from llamaforge.device import DeviceName, resolve_device
from llamaforge.errors import UserError
from llamaforge.flags import RequiredPaths
from llamaforge.losses import RATINGS
from llamaforge.model import RewardModel
from llamaforge.tokenizer import Tokenizer

COLUMNS = {"significantly_better": "sig. better", "better": "better", "slightly_better": "slightly", "negligibly_better": "negligibly"}


@torch.no_grad()
def response_scores(model: RewardModel, tokenizer: Tokenizer, prompts, responses, max_len: int = 512, batch_size: int = 32) -> torch.Tensor:
    """The reward model's score of each (prompt, response), (N,). A dialog longer than max_len or
    than the model's context keeps its end (encode_response). An empty response (a policy that
    sampled EOS first) scores -inf: the chat format has no empty turn to score, and an empty answer
    is never the best of its samples. Batches are formed in order of length, so that little of each
    is padding (1.6x faster on the demo's evaluation answers than in the given order)."""
    device = next(model.parameters()).device
    max_len = min(max_len, model.config.max_seq_len)
    model.eval()
    encoded = {i: encode_response(tokenizer, prompts[i], r, max_len) for i, r in enumerate(responses) if r.strip()}
    order = sorted(encoded, key=lambda i: len(encoded[i][0]))
    scores = torch.full((len(responses),), float("-inf"))
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        scores[rows] = model(*score_inputs([encoded[i] for i in rows], device)).float().cpu()
    return scores


def pair_scores(model: RewardModel, tokenizer: Tokenizer, pairs: list[Preference], max_len: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    prompts = [p.prompt for p in pairs]
    chosen = response_scores(model, tokenizer, prompts, [p.chosen for p in pairs], max_len)
    rejected = response_scores(model, tokenizer, prompts, [p.rejected for p in pairs], max_len)
    return chosen, rejected


def accuracy_by_rating(chosen: torch.Tensor, rejected: torch.Tensor, ratings: list[str | None]) -> dict:
    """{rating: {"accuracy", "pairs"}} for each rating present, and "all" (every pair)."""
    correct = ((chosen > rejected).float() + 0.5 * (chosen == rejected).float()).tolist()
    table = {}
    for rating in [*RATINGS, "all"]:
        hits = [c for c, r in zip(correct, ratings) if rating == "all" or r == rating]
        if hits:
            table[rating] = {"accuracy": sum(hits) / len(hits), "pairs": len(hits)}
    return table


def markdown_table(rows: dict[str, dict]) -> str:
    """Rows of accuracy_by_rating results laid out like the paper's Table 8 (percentages)."""
    lines = ["| model / test set | " + " | ".join(COLUMNS.values()) + " | all |", "|---" * (len(COLUMNS) + 2) + "|"]
    for name, table in rows.items():
        cells = [f"{100 * table[r]['accuracy']:.1f} ({table[r]['pairs']})" if r in table else "–" for r in [*COLUMNS, "all"]]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_scores(path: Path, points: dict[str, tuple[list[float], list[float]]]) -> Path:
    """Scatter of reward-model score (y) against gold score (x), one series per reward model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, (gold, rm) in points.items():
        ax.scatter(gold, rm, s=6, alpha=0.4, label=name)
    ax.set_xlabel("gold judge score")
    ax.set_ylabel("reward-model score")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


@dataclass
class EvalRewardArgs:
    """Accuracy of reward models per rating level on preference files (the paper's Table 8)."""

    rm: RequiredPaths
    """Reward model directories (from `llamaforge reward`)."""
    data: RequiredPaths
    """Held-out preference files (each file is one test set)."""
    max_len: int = 512
    """Tokens per scored sequence."""
    hh_is_safety: bool = False
    """Treat records without an is_safety field as safety data."""
    device: DeviceName = "auto"
    """cpu, cuda, or auto."""


def short_names(paths: list[Path]) -> list[str]:
    """Each path's last parts (the file without its suffix), as few as keep the names apart:
    runs/a/model and runs/b/model are a/model and b/model."""
    parts = [(*p.parts[:-1], p.stem) for p in paths]
    for k in range(1, max((len(q) for q in parts), default=1) + 1):
        names = ["/".join(q[-k:]) for q in parts]
        if len(set(names)) == len(set(map(str, paths))):
            return names
    return [str(p) for p in paths]


def main(args: EvalRewardArgs) -> dict:
    device = resolve_device(args.device)
    rows = {}
    rm_names, data_names = short_names(args.rm), short_names(args.data)
    for rm_dir, rm_name in zip(args.rm, rm_names):
        model, tokenizer = load_for_scoring(rm_dir, device)  # as the pipeline's Table 8 scores
        for data, data_name in zip(args.data, data_names):
            pairs, _ = read_all([data], "error", args.hh_is_safety)
            if not pairs:
                raise UserError(f"{data}: no preference pair")
            chosen, rejected = pair_scores(model, tokenizer, pairs, args.max_len)
            rows[f"{rm_name} / {data_name}"] = accuracy_by_rating(chosen, rejected, [p.rating for p in pairs])
    print(markdown_table(rows))
    return rows


@dataclass
class ScoreArgs:
    """Score one response to one prompt with a reward model."""

    rm: Path
    """Reward model directory."""
    prompt: str
    """The user's message."""
    response: str
    """The assistant's answer to score."""
    system: str | None = None
    """Optional system prompt."""
    device: DeviceName = "auto"
    """cpu, cuda, or auto."""


def score_main(args: ScoreArgs) -> float:
    # one response: the checkpoint's own fp32, not the bf16 that bulk scoring uses for speed
    model = load_reward_model(args.rm, device=resolve_device(args.device))
    tokenizer = Tokenizer(args.rm / TOKENIZER_FILE)
    prompt = ([{"role": "system", "content": args.system}] if args.system else []) + [{"role": "user", "content": args.prompt}]
    score = float(response_scores(model, tokenizer, [prompt], [args.response])[0])
    print(f"{score:.4f}")
    return score
