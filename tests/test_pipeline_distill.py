"""The distillation stage (paper §4.2.4) on tiny random checkpoints and the world's prompts:
untargeted and targeted runs from one model on the same answers, the three models evaluated, and
the table the report shows; plus SFT's reference answers cut to the prompts evaluated."""

import json
import types

import torch

from llamaforge.checkpoint import save_model, save_reward_state
from llamaforge.config import ModelConfig
from llamaforge.data.jsonl import write_jsonl
from llamaforge.model import Llama, RewardModel
from llamaforge.pipeline.distill import DISTILL_STAGE, distill_stage, reference_answers
from llamaforge.pipeline.evaluation import EvalPlan
from llamaforge.pipeline.stage import StageContext
from llamaforge.rlhf import distill
from llamaforge.world import World

CONFIG = ModelConfig(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=400, multiple_of=16, max_seq_len=256)


def test_reference_answers_keep_the_first_prompts_of_each_sample():
    sft = {"greedy": {"helpful": ["g0", "g1", "g2"]}, "sampled": {"helpful": ["a0", "a1", "a2", "b0", "b1", "b2"]}}
    assert reference_answers(sft, 2, 2) == {"greedy": {"helpful": ["g0", "g1"]}, "sampled": {"helpful": ["a0", "a1", "b0", "b1"]}}
    assert reference_answers(sft, 3, 1)["sampled"]["helpful"] == ["a0", "a1", "a2"]
    assert reference_answers(sft, 4, 1) is None and reference_answers(sft, 2, 3) is None  # SFT never answered those


def test_the_stage_distils_both_ways_and_tables_the_three_models(tmp_path, tokenizer):
    run_dir, world = tmp_path / "run", World(0)
    torch.manual_seed(0)
    save_model(Llama(CONFIG), run_dir / "policy", tokenizer.path)
    torch.manual_seed(1)
    save_reward_state(RewardModel(CONFIG).state_dict(), CONFIG, run_dir / "rm_safety", tokenizer.path, {"stage": "reward"})
    for name in ("helpful", "borderline", "adversarial"):
        write_jsonl(run_dir / "world" / f"prompts_{name}_test.jsonl", world.prompts(name, "test")[:3])
    (run_dir / "sft").mkdir()
    (run_dir / "sft" / "answers.json").write_text(json.dumps({"answers": {"greedy": {"helpful": ["a", "b", "c"]},
                                                                          "sampled": {"helpful": ["d", "e", "f"]}}}))
    upstream = {"world": {"outputs": {"data": "world"}}, "sft": {"outputs": {"answers": "sft/answers.json"}},
                "rlhf_ppo": {"outputs": {"model": "policy", "rm_safety": "rm_safety"}}}
    plan = types.SimpleNamespace(prompts=4, evaluation=EvalPlan(prompts=2, samples=1, max_new_tokens=8),
                                 distill=distill.DistillArgs(**{**distill.smoke().__dict__, "max_steps": 1, "device": "cpu"}))
    stage = distill_stage("rlhf_ppo", "rlhf_ppo")
    assert stage.name == DISTILL_STAGE and stage.inputs == ("world", "sft", "rlhf_ppo")
    preset = types.SimpleNamespace(distill=plan)
    assert stage.settings(preset, 0)["prompts"] == 4
    ctx = StageContext(run_dir, run_dir / "distill", preset, 0, upstream)
    ctx.out.mkdir()

    outputs, metrics = stage.run(ctx)
    reports = {name: json.loads((ctx.out / name / "distill.json").read_text()) for name in ("targeted", "untargeted")}
    assert str(outputs["model"]) == reports["targeted"]["model"] and str(outputs["untargeted_model"]) == reports["untargeted"]["model"]
    assert all("model" not in metrics["distill"][name] for name in reports)  # an output (relative), not a metric
    assert outputs["rm_safety"] == run_dir / "rm_safety" and outputs["answers"].is_file()
    assert len(json.loads((ctx.out / "templates.json").read_text())) == len(world.hazards)
    targeted_rows = [json.loads(line) for line in (ctx.out / "targeted" / "distill.jsonl").read_text().splitlines()]
    assert len(targeted_rows) == 4 and all(r["risk_category"] for r in targeted_rows)
    assert all(world.answer_templates()[r["risk_category"]] in r["system"] for r in targeted_rows)
    assert reports["untargeted"]["kept"] >= reports["targeted"]["kept"]

    table = metrics["table"]
    assert list(table) == ["before", "untargeted", "targeted"]
    assert table["before"]["kept share"] is None and table["targeted"]["kept share"] == reports["targeted"]["kept_share"]
    for row in table.values():
        assert 0 <= row["violation %"] <= 100 and 0 <= row["false refusal %"] <= 100 and row["win rate vs SFT"] is not None
    assert set(metrics["distill_data"]) >= {"violation_plain", "violation_distilled", "rm_agrees_with_gold"}
