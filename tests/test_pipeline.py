"""The whole pipeline on the smoke preset: every stage runs and records what it computed, from
what; a re-run skips what matches, refuses what does not, and `--from` re-runs a stage onward."""

import json
import shutil

import pytest
import safetensors.torch

from llamaforge.cli import main as cli_main
from llamaforge.pipeline import PipelineArgs, main, stages
from llamaforge.pipeline.presets import smoke
from llamaforge.pipeline.records import record_hash

NAMES = [stage.name for stage in stages(smoke())]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("pipeline")
    main(PipelineArgs(out=out, preset="smoke", seed=0))
    return out


@pytest.fixture
def copy(run, tmp_path):
    """A copy of the finished run that a test may change."""
    return shutil.copytree(run, tmp_path / "run")


def snapshot(directory):
    return {str(p.relative_to(directory)): p.stat().st_mtime_ns for p in sorted(directory.rglob("*"))}


def test_every_stage_completes_and_is_summarized(run):
    summary = json.loads((run / "summary.json").read_text())
    assert sorted(summary["stages"]) == sorted(NAMES)
    for name in NAMES:
        assert json.loads((run / name / "stage.json").read_text())["stage"] == name
    pretrain = summary["stages"]["pretrain"]["metrics"]
    assert pretrain["steps"] == 20 and pretrain["val_loss"] < 6.2  # below ln(512) = 6.24, a uniform guess
    sft = summary["stages"]["sft"]["metrics"]
    for model in ("pretrained", "sft"):
        for key in ("helpful_helpfulness", "borderline_helpfulness", "false_refusal_rate", "violation_rate"):
            assert 0.0 <= sft[model][key] <= 1.0
    reward = summary["stages"]["reward"]["metrics"]
    assert reward["rm_accuracy"]["batches"] == 3
    assert (run / "reward" / "table8.md").read_text().startswith("| model / test set |")
    assert (run / "reward" / "rm_vs_gold.png").stat().st_size > 1000
    selection = reward["best_of_k_by_gold"]
    assert selection["random"] <= selection["best"] and selection["prompts"] == 6
    # 3 responses per prompt of each guideline in the weekly batches (up to 3 pairs each), one pair in the test sets
    pairs_per_prompt = {}
    for folder in ("batch_00/helpfulness", "batch_00/safety", "test_helpfulness/helpfulness", "test_safety/safety"):
        prompts = (run / "reward" / folder / "prompts.jsonl").read_text().splitlines()
        pairs_per_prompt[folder] = len((run / "reward" / folder / "preferences.jsonl").read_text().splitlines()) / len(prompts)
    assert pairs_per_prompt["test_helpfulness/helpfulness"] <= 1 < pairs_per_prompt["batch_00/helpfulness"] <= 3
    assert pairs_per_prompt["test_safety/safety"] <= 1 < pairs_per_prompt["batch_00/safety"] <= 3
    heads = {kind: safetensors.torch.load_file(run / "reward" / f"rm_{kind}" / "model" / "reward_head.safetensors")
             for kind in ("helpfulness", "safety")}
    assert heads["helpfulness"]["likelihood_weight"].tolist() == [1.0] and "likelihood_weight" not in heads["safety"]
    for n in (1, 2):
        version = summary["stages"][f"rlhf_v{n}"]["metrics"]
        assert 0.0 <= version["helpful_helpfulness"] <= 1.0 and 0.0 <= version["sampled"]["violation_rate"] <= 1.0
        win = version["win_vs_reference"]["sampled"]
        assert win["win"] + win["tie"] + win["loss"] == pytest.approx(1.0) and win["pairs"] == 8
        assert set(version["rm_mean"]) == {"helpfulness", "safety"}
        # a point of Fig. 6: the version's reward models on the reward stage's test pairs, one more batch each
        accuracy = version["rm_accuracy"]
        assert accuracy["batches"] == 3 + n and all(0.0 <= accuracy[kind] <= 1.0 for kind in ("helpfulness", "safety"))


def test_records_split_each_stage_time_into_its_parts(run):
    summary = json.loads((run / "summary.json").read_text())
    expected = {
        "sft": {"fine-tuning", "evaluation"},
        "reward": {"annotation", "test pairs", "reward models", "evaluation", "best of K by gold"},
        "rlhf_v1": {"annotation", "reward models", "rejection sampling", "evaluation"},
        "rlhf_ppo": {"ppo", "evaluation"},
        "gatt": {"command", "evaluation"},
        "distill": {"distill", "evaluation"},
    }
    for name, parts in expected.items():
        record = summary["stages"][name]
        assert set(record["metrics"]["seconds"]) == parts, name
        assert 0 < sum(record["metrics"]["seconds"].values()) <= record["seconds"] + 0.2, name  # disjoint parts


def test_records_name_settings_inputs_by_hash_and_relative_outputs(run):
    records = {name: json.loads((run / name / "stage.json").read_text()) for name in NAMES}
    assert records["world"]["settings"] == {"seed": 0}
    assert records["tokenizer"]["settings"] == {"vocab_size": 512}
    assert records["pretrain"]["settings"]["max_steps"] == 20 and records["pretrain"]["settings"]["seed"] == 0
    assert records["sft"]["inputs"] == {"world": record_hash(records["world"]), "pretrain": record_hash(records["pretrain"])}
    assert records["sft"]["outputs"]["model"] == "sft/model"
    for record in records.values():
        for path in record["outputs"].values():
            for relative in path if isinstance(path, list) else [path]:
                assert (run / relative).exists()
    plan = json.loads((run / "pipeline.json").read_text())
    assert plan["preset"] == "smoke" and plan["stages"]["pretrain"] == records["pretrain"]["settings"]


def test_rlhf_versions_chain_models_preferences_and_pool(run):
    v1, v2 = (json.loads((run / f"rlhf_v{n}" / "stage.json").read_text()) for n in (1, 2))
    reward = json.loads((run / "reward" / "stage.json").read_text())
    # V2 annotates a fresh batch, keeps every batch's preferences so far, and pools V1's picks (which
    # reward models train on which batches: test_reward_models_continue_or_retrain)
    assert v2["inputs"]["rlhf_v1"] == record_hash(v1)
    assert v1["outputs"]["preferences"][: len(reward["outputs"]["preferences"])] == reward["outputs"]["preferences"]
    assert v2["outputs"]["preferences"][: len(v1["outputs"]["preferences"])] == v1["outputs"]["preferences"]
    assert len(v2["outputs"]["preferences"]) > len(v1["outputs"]["preferences"])
    assert v2["outputs"]["rejection_sampling_runs"] == v1["outputs"]["rejection_sampling_runs"] + ["rlhf_v2/rejection_sampling"]
    assert v2["metrics"]["rejection_sampling"]["pooled"] > 0 and v1["metrics"]["rejection_sampling"]["pooled"] == 0


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
    assert all(f"{name}: already complete, skipping" in printed for name in NAMES)
    assert (run / "pretrain" / "model" / "model.safetensors").stat().st_mtime_ns == before


def test_a_stage_that_did_not_finish_is_run_again_and_says_so(copy, capsys):
    """In a copy of the run, too: its training runs recorded the original's paths (train/state.py)."""
    (copy / "distill" / "stage.json").unlink()  # as if killed after distillation's files, before its record
    main(PipelineArgs(out=copy, preset="smoke", seed=0))
    printed = capsys.readouterr().out
    assert "distill... (an earlier attempt did not finish: running it again" in printed
    assert "gatt: already complete, skipping" in printed
    assert (copy / "distill" / "stage.json").is_file()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--seed", "7"], "/world: recorded seed 0, asked 7; use a new --out or --from world"),
        (["--preset", "demo"], ": made with --preset smoke, asked demo; use a new --out or --from world"),
    ],
)
def test_rerun_with_other_settings_is_refused_and_writes_nothing(copy, capsys, flags, message):
    before = snapshot(copy)
    assert cli_main(["pipeline", "--out", str(copy), "--preset", "smoke", *flags]) == 1
    err = capsys.readouterr().err
    assert err == f"error: {copy}{message}\n"  # one line, no traceback
    assert snapshot(copy) == before


def test_from_stage_reruns_that_stage_and_later_ones_only(copy, capsys):
    before = snapshot(copy)
    main(PipelineArgs(out=copy, preset="smoke", seed=0, from_stage="sft"))
    printed = capsys.readouterr().out
    after = snapshot(copy)
    for name in ("world", "tokenizer", "pretrain"):
        assert f"{name}: already complete, skipping" in printed
        assert {k: v for k, v in after.items() if k.startswith(name + "/")} == {
            k: v for k, v in before.items() if k.startswith(name + "/")
        }
    for name in ("sft", "reward"):
        assert f"{name}: already complete" not in printed
        assert after[f"{name}/stage.json"] != before[f"{name}/stage.json"]


def test_stage_whose_upstream_changed_is_refused_not_skipped(copy, capsys):
    record_path = copy / "sft" / "stage.json"
    record = json.loads(record_path.read_text())
    record["inputs"]["pretrain"] = "0" * 16  # as if sft had been trained on another pretrained model
    record_path.write_text(json.dumps(record))
    assert cli_main(["pipeline", "--out", str(copy), "--preset", "smoke"]) == 1
    assert capsys.readouterr().err == f"error: {copy}/sft: its input pretrain changed since it ran; use a new --out or --from sft\n"


def test_unknown_from_stage_is_refused(copy, capsys):
    assert cli_main(["pipeline", "--out", str(copy), "--preset", "smoke", "--from", "rlhf_v9"]) == 1
    assert "--from 'rlhf_v9': unknown stage" in capsys.readouterr().err


def test_reward_ablation_adds_the_margin_and_single_rm_stages_to_a_finished_run(copy, capsys):
    # the report reads the ablations too, so a finished run re-runs from the first ablation stage
    main(PipelineArgs(out=copy, preset="smoke", seed=0, ablation="reward", from_stage="ablation_margin"))
    printed = capsys.readouterr().out
    assert all(f"{name}: already complete, skipping" in printed for name in NAMES if name != "report")
    summary = json.loads((copy / "summary.json").read_text())["stages"]
    assert set(summary["ablation_margin"]["metrics"]["by_margin"]) == {"none", "small", "large"}
    assert summary["ablation_margin"]["metrics"]["by_margin"]["small"] == summary["reward"]["metrics"]["accuracy"][
        "helpfulness RM / helpfulness test"]
    for reward in ("helpfulness", "safety"):
        assert (copy / f"ablation_ppo_{reward}" / "stage.json").exists()


def test_reward_models_continue_or_retrain(run, copy, monkeypatch):
    """`RlhfPlan.reward_models`: "continue" (the presets) trains the previous version's reward models
    (V1: the reward stage's) further on the new weekly batch alone; "retrain" starts each version's
    from its latest chat model and trains them on every batch so far."""
    import dataclasses

    from llamaforge.pipeline import presets

    def data_and_parent(out, n, kind):
        rm = out / f"rlhf_v{n}" / f"rm_{kind}"
        return (json.loads((rm / "run.json").read_text())["data"],
                json.loads((rm / "model" / "llamaforge.json").read_text())["parent"])

    new = lambda out, n: [str(out / f"rlhf_v{n}" / "annotation" / g / "preferences.jsonl") for g in ("helpfulness", "safety")]
    for n, start in ((1, "reward"), (2, "rlhf_v1")):
        for kind in ("helpfulness", "safety"):
            assert data_and_parent(run, n, kind) == (new(run, n), str(run / start / f"rm_{kind}" / "model"))

    def retraining():
        preset = smoke()
        return dataclasses.replace(preset, rlhf=dataclasses.replace(preset.rlhf, reward_models="retrain"))

    monkeypatch.setitem(presets.PRESETS, "smoke", retraining)
    main(PipelineArgs(out=copy, preset="smoke", seed=0, from_stage="rlhf_v1"))
    data, parent = data_and_parent(copy, 2, "helpfulness")
    assert len(data) == 2 * 3 + 2 * 2 and data[-2:] == new(copy, 2)  # 3 reward-stage batches, V1's, V2's
    assert parent == str(copy / "rlhf_v1" / "rejection_sampling" / "sft" / "model")  # V2's latest chat model
    assert json.loads((copy / "rlhf_v2" / "stage.json").read_text())["settings"]["rlhf"]["reward_models"] == "retrain"
