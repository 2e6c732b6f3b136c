"""The whole pipeline on the smoke preset: every stage runs, records its metrics, and a re-run
skips what is complete."""

import json

import pytest

from llamaforge.pipeline import STAGES, PipelineArgs, main


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("pipeline")
    main(PipelineArgs(out=out, preset="smoke", seed=0))
    return out


def test_every_stage_completes_and_is_summarized(run):
    summary = json.loads((run / "summary.json").read_text())
    assert sorted(summary["stages"]) == sorted(name for name, _ in STAGES)
    for name, _ in STAGES:
        assert json.loads((run / name / "stage.json").read_text())["stage"] == name
    pretrain = summary["stages"]["pretrain"]["metrics"]
    assert pretrain["steps"] == 20 and pretrain["val_loss"] < 6.2  # below ln(512) = 6.24, a uniform guess
    sft = summary["stages"]["sft"]["metrics"]
    for model in ("pretrained", "sft"):
        for key in ("helpful_helpfulness", "borderline_helpfulness", "false_refusal_rate", "violation_rate"):
            assert 0.0 <= sft[model][key] <= 1.0
    reward = summary["stages"]["reward"]["metrics"]
    assert set(reward["by_batches"]) == {"1", "2", "3"} and set(reward["by_margin"]) == {"none", "small", "large"}
    assert (run / "reward" / "table8.md").read_text().startswith("| model / test set |")
    assert (run / "reward" / "rm_vs_gold.png").stat().st_size > 1000


def test_annotation_rounds_split_by_guideline(run):
    # Helpful prompts: two samples of the SFT model; adversarial and borderline prompts: the SFT
    # model against the pretrained one. Smoke batches hold 10 prompts: 7 helpful, 2 + 1 safety.
    for k in range(3):
        batch = run / "reward" / f"batch_{k:02d}"
        helpful = [json.loads(line) for line in (batch / "helpfulness" / "prompts.jsonl").read_text().splitlines()]
        safety = [json.loads(line) for line in (batch / "safety" / "prompts.jsonl").read_text().splitlines()]
        assert [r["category"] for r in helpful] == ["helpful"] * 7
        assert sorted(r["category"] for r in safety) == ["adversarial", "adversarial", "borderline"]
        pairs = [json.loads(line) for line in (batch / "safety" / "preferences.jsonl").read_text().splitlines()]
        assert all(p["is_safety"] for p in pairs)


def test_rerun_skips_completed_stages(run, capsys):
    before = (run / "pretrain" / "model" / "model.safetensors").stat().st_mtime_ns
    main(PipelineArgs(out=run, preset="smoke", seed=0))
    printed = capsys.readouterr().out
    assert all(f"{name}: already complete, skipping" in printed for name, _ in STAGES)
    assert (run / "pretrain" / "model" / "model.safetensors").stat().st_mtime_ns == before
