"""Reward-model evaluation (llamaforge/eval/reward.py): per-rating accuracy with ties as half,
the Table 8 layout, the score plot, and the `score` and `eval reward` commands."""

from __future__ import annotations

import json
import re

import pytest
import torch

from llamaforge import cli
from llamaforge.checkpoint import save_reward_state
from llamaforge.config import ModelConfig
from llamaforge.data.scoring import encode_response, pad_right
from llamaforge.eval.reward import accuracy_by_rating, markdown_table, plot_scores, short_names
from llamaforge.model import RewardModel

CONFIG = ModelConfig(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=400, multiple_of=16, max_seq_len=128)

SIG, BETTER, SLIGHT, NEG = "significantly_better", "better", "slightly_better", "negligibly_better"


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def hand_made() -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """11 pairs: significantly better 3 of 3 right; better 2 of 3; slightly better 1 right, 1 tie
    (half credit), 1 wrong = 1.5 of 3; negligibly better 0 of 2. All: 6.5 of 11."""
    rows = [
        (SIG, 2.0, 1.0), (SIG, 0.5, -3.0), (SIG, 9.0, 8.9),  # right, right, right
        (BETTER, 1.0, 0.0), (BETTER, -1.0, -2.0), (BETTER, 0.0, 0.1),  # right, right, wrong
        (SLIGHT, 3.0, 1.0), (SLIGHT, 0.25, 0.25), (SLIGHT, -1.0, 1.0),  # right, tie, wrong
        (NEG, 0.0, 5.0), (NEG, 1.0, 1.5),  # wrong, wrong
    ]
    ratings = [r for r, _, _ in rows]
    return torch.tensor([c for _, c, _ in rows]), torch.tensor([r for _, _, r in rows]), ratings


def test_accuracy_by_rating_counts_ties_as_half():
    table = accuracy_by_rating(*hand_made())
    assert table == {
        SIG: {"accuracy": 1.0, "pairs": 3},
        BETTER: {"accuracy": pytest.approx(2 / 3), "pairs": 3},
        SLIGHT: {"accuracy": 0.5, "pairs": 3},  # (1 + 0.5 + 0) / 3
        NEG: {"accuracy": 0.0, "pairs": 2},
        "all": {"accuracy": pytest.approx(6.5 / 11), "pairs": 11},  # 0.590909
    }


def test_absent_ratings_are_absent_and_unrated_pairs_count_in_all_only():
    chosen = torch.tensor([1.0, 0.0, 2.0, 3.0])
    rejected = torch.tensor([0.0, 1.0, 2.0, 1.0])
    table = accuracy_by_rating(chosen, rejected, [BETTER, BETTER, NEG, None])
    assert table == {
        BETTER: {"accuracy": 0.5, "pairs": 2},
        NEG: {"accuracy": 0.5, "pairs": 1},  # one tie
        "all": {"accuracy": pytest.approx(2.5 / 4), "pairs": 4},
    }
    assert accuracy_by_rating(torch.zeros(0), torch.zeros(0), []) == {}


def test_markdown_table_layout():
    full = accuracy_by_rating(*hand_made())
    partial = {BETTER: {"accuracy": 0.5, "pairs": 2}, "all": {"accuracy": 0.625, "pairs": 4}}
    lines = markdown_table({"Helpfulness RM / Meta Helpful": full, "Safety RM / held-out": partial}).splitlines()
    assert lines[0] == "| model / test set | sig. better | better | slightly | negligibly | all |"
    assert lines[1] == "|---|---|---|---|---|---|"
    assert lines[2] == "| Helpfulness RM / Meta Helpful | 100.0 (3) | 66.7 (3) | 50.0 (3) | 0.0 (2) | 59.1 (11) |"
    assert lines[3] == "| Safety RM / held-out | – | 50.0 (2) | – | – | 62.5 (4) |"
    assert len(lines) == 4


def test_plot_scores_writes_a_png(tmp_path):
    path = plot_scores(tmp_path / "rm_vs_gold.png", {"helpfulness": ([0.0, 0.5, 1.0], [-1.0, 0.2, 1.3]), "safety": ([0.1], [0.4])})
    assert path == tmp_path / "rm_vs_gold.png"
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000


# --- the commands ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reward_dir(tmp_path_factory, tokenizer):
    torch.manual_seed(0)
    model = RewardModel(CONFIG)
    directory = tmp_path_factory.mktemp("rm") / "rm"
    save_reward_state(model.state_dict(), model.config, directory, tokenizer.path)
    return directory, model.eval()


def direct_score(model, tokenizer, prompt: list[dict], response: str) -> float:
    tokens, real = pad_right([encode_response(tokenizer, prompt, response, 512)[0]])
    with torch.no_grad():
        return float(model(tokens, real)[0])


def test_score_command_prints_the_models_score(reward_dir, tokenizer, capsys):
    directory, model = reward_dir
    assert cli.main(["score", "--rm", str(directory), "--prompt", "hi", "--response", "hello", "--device", "cpu"]) == 0
    printed = float(capsys.readouterr().out.strip())
    expected = direct_score(model, tokenizer, [{"role": "user", "content": "hi"}], "hello")
    assert printed == pytest.approx(expected, abs=6e-5)  # printed with 4 decimals

    argv = ["score", "--rm", str(directory), "--prompt", "hi", "--response", "hello", "--system", "be brief", "--device", "cpu"]
    assert cli.main(argv) == 0
    with_system = float(capsys.readouterr().out.strip())
    prompt = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    assert with_system == pytest.approx(direct_score(model, tokenizer, prompt, "hello"), abs=6e-5)
    assert abs(with_system - printed) > 1e-3  # the system prompt is part of what is scored


def test_score_of_a_long_dialog_reads_its_last_context_of_tokens(reward_dir, tokenizer, capsys):
    """A dialog longer than the model's context (128 tokens here) loses the start of its prompt,
    as in training; the answer and the end of the dialog are what is scored."""
    directory, model = reward_dir
    prompt = "tell me about the river and the mountain people " * 12
    full, _ = tokenizer.encode_dialog([{"role": "user", "content": prompt}, {"role": "assistant", "content": "hello"}])
    assert len(full) > 128
    tokens, real = pad_right([full[-128:]])
    with torch.no_grad():
        expected = float(model(tokens, real)[0])
    assert cli.main(["score", "--rm", str(directory), "--prompt", prompt, "--response", "hello", "--device", "cpu"]) == 0
    assert float(capsys.readouterr().out.strip()) == pytest.approx(expected, abs=6e-5)


def test_eval_reward_command_prints_the_table(reward_dir, tokenizer, tmp_path, capsys):
    """'better': three response pairs, each in both orders, so exactly half are right whatever the
    model scores (no ties). 'significantly better': four pairs written with the response this model
    scores higher as chosen, all right. All: (3 + 4) / 10 = 70.0 %."""
    directory, model = reward_dir
    responses = ["the river is big .", "a mountain of people", "Varn 3 , Orin 4 .", "please tell me"]
    prompt = [{"role": "user", "content": "what is the city ?"}]
    scores = {r: direct_score(model, tokenizer, prompt, r) for r in responses}
    assert len({round(s, 6) for s in scores.values()}) == 4  # no ties
    records = []
    for a, b in [(0, 1), (1, 2), (2, 3)]:
        for chosen, rejected in [(responses[a], responses[b]), (responses[b], responses[a])]:
            records.append({"prompt": prompt, "chosen": chosen, "rejected": rejected, "rating": BETTER, "is_safety": False})
    for a, b in [(0, 1), (0, 2), (1, 3), (2, 3)]:
        high, low = sorted([responses[a], responses[b]], key=scores.get, reverse=True)
        records.append({"prompt": prompt, "chosen": high, "rejected": low, "rating": SIG, "is_safety": False})
    data = tmp_path / "heldout.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))

    assert cli.main(["eval", "reward", "--rm", str(directory), "--data", str(data), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith(f"| {directory.name} / heldout |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1:] == ["100.0 (4)", "50.0 (6)", "–", "–", "70.0 (10)"]


def test_eval_reward_command_names_a_bad_file(reward_dir, tmp_path, capsys):
    directory, _ = reward_dir
    data = tmp_path / "bad.jsonl"
    data.write_text(json.dumps({"prompt": "hi", "chosen": "a", "rejected": "b", "rating": "much_better", "is_safety": False}) + "\n")
    assert cli.main(["eval", "reward", "--rm", str(directory), "--data", str(data), "--device", "cpu"]) == 1
    assert re.search(r"bad\.jsonl:1: field 'rating'", capsys.readouterr().err)


def test_table_rows_are_named_by_as_much_of_each_path_as_tells_them_apart():
    """`eval reward` keys its rows by these names: two runs' model/ directories or two preferences.jsonl
    files must not overwrite each other's row."""
    from pathlib import Path

    assert short_names([Path("runs/rm_helpfulness/model"), Path("runs/rm_safety/model")]) == [
        "rm_helpfulness/model", "rm_safety/model"]
    assert short_names([Path("r/test_h/helpfulness/preferences.jsonl"), Path("r/test_s/safety/preferences.jsonl")]) == [
        "helpfulness/preferences", "safety/preferences"]
    assert short_names([Path("a/x.jsonl"), Path("b/y.jsonl")]) == ["x", "y"]
    assert short_names([Path("d/x.json"), Path("d/x.jsonl")]) == ["d/x.json", "d/x.jsonl"]  # only the whole path differs
