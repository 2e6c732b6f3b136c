"""Safety context distillation (paper §4.2.4): the targeting rule by hand, the preprompt and its
answer template in the system message only, a run on tiny random checkpoints whose files agree
with each other, and bad inputs refused in one line."""

import json
import shutil

import pytest
import torch

from llamaforge.checkpoint import load_for_scoring, save_model, save_reward_state
from llamaforge.cli import run as cli_run
from llamaforge.config import ModelConfig
from llamaforge.data.jsonl import write_jsonl
from llamaforge.errors import UserError
from llamaforge.eval.reward import response_scores
from llamaforge.model import Llama, RewardModel
from llamaforge.rlhf import distill
from llamaforge.rlhf.distill import DistillArgs, keep_distilled, safety_preprompt, score_or_minus_inf, with_system

CONFIG = ModelConfig(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=400, multiple_of=16, max_seq_len=256)
INF = float("inf")


def test_targeted_keeps_only_answers_the_safety_rm_scores_higher():
    plain = [0.1, 0.5, -1.0, 0.3, -INF, 0.2]
    distilled = [0.4, 0.5, -2.0, -INF, -1.5, 0.21]
    # strictly higher wins; a tie is not an improvement; an empty distilled answer (-inf) is never
    # kept; one against an empty plain answer always is
    assert keep_distilled(plain, distilled, targeted=True) == [True, False, False, False, True, True]
    # untargeted: every distilled answer there is to train on
    assert keep_distilled(plain, distilled, targeted=False) == [True, True, True, False, True, True]
    assert keep_distilled([], [], targeted=True) == []


TEMPLATES = {"poisoning": "Refuse to name any ingredient of a poison."}


def test_the_category_and_its_template_land_in_the_system_message():
    system = safety_preprompt("You are a safe and responsible assistant.", "poisoning", TEMPLATES)
    assert system.startswith("You are a safe and responsible assistant.")
    assert "'poisoning'" in system and system.endswith(TEMPLATES["poisoning"])
    # a category without a template of its own gets the generic one; no category, the preprompt alone
    assert safety_preprompt("Be safe.", "forgery", TEMPLATES).endswith(distill.GENERIC_TEMPLATE)
    assert safety_preprompt("Be safe.", None, TEMPLATES) == "Be safe."

    user = [{"role": "user", "content": "How do I brew the tonic?"}]
    assert with_system(user, system) == [{"role": "system", "content": system}, *user]
    own = [{"role": "system", "content": "Answer briefly."}, *user]
    assert with_system(own, "Be safe.") == [{"role": "system", "content": "Be safe.\nAnswer briefly."}, *user]
    assert own[0]["content"] == "Answer briefly."  # the prompt itself is not changed


@pytest.fixture
def checkpoints(tmp_path, tokenizer):
    torch.manual_seed(0)
    policy = save_model(Llama(CONFIG), tmp_path / "policy", tokenizer.path)
    torch.manual_seed(2)
    rm = save_reward_state(RewardModel(CONFIG).state_dict(), CONFIG, tmp_path / "rm_safety", tokenizer.path, {"stage": "reward"})
    return policy, rm


PROMPTS = [
    {"messages": [{"role": "user", "content": "how do I brew the tonic ?"}], "category": "adversarial", "risk_category": "poisoning"},
    {"messages": [{"role": "user", "content": "how do I pick the lock ?"}], "category": "adversarial", "risk_category": "burglary"},
    {"messages": [{"role": "user", "content": "what is the tonic ?"}, {"role": "assistant", "content": "a tonic of Varn ."},
                  {"role": "user", "content": "tell me how to brew the tonic"}], "category": "adversarial"},
    {"messages": [{"role": "user", "content": "please tell me about the seal"}], "category": "adversarial", "risk_category": "poisoning"},
]


def read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def args(tmp_path, checkpoints, **changes) -> DistillArgs:
    policy, rm = checkpoints
    templates = tmp_path / "templates.json"
    templates.write_text(json.dumps(TEMPLATES))
    values = {"policy": policy, "rm_safety": rm, "prompts": [write_jsonl(tmp_path / "prompts.jsonl", PROMPTS)], "templates": templates,
              "max_steps": 1, "device": "cpu"}
    return DistillArgs(**{**distill.smoke().__dict__, **values, **changes})


def test_a_run_writes_answers_scores_and_training_dialogs_that_agree(tmp_path, checkpoints, tokenizer):
    out = distill.main(args(tmp_path, checkpoints, out=tmp_path / "targeted"))
    rows = read(out / "distill.jsonl")
    assert [r["messages"] for r in rows] == [p["messages"] for p in PROMPTS]
    assert [r["system"] for r in rows] == [safety_preprompt(distill.PREPROMPT, p.get("risk_category"), TEMPLATES) for p in PROMPTS]
    assert any(r["plain_answer"] != r["distilled_answer"] for r in rows)  # same seed: the preprompt made the difference

    # both answers scored by the safety RM against the prompt WITHOUT the preprompt
    _, rm = checkpoints
    prompts = [p["messages"] for p in PROMPTS]
    for name in ("plain", "distilled"):
        expected = response_scores(load_for_scoring(rm)[0], tokenizer, prompts, [r[f"{name}_answer"] for r in rows])
        recorded = [score_or_minus_inf(r[f"{name}_score"]) for r in rows]
        assert recorded == pytest.approx(expected.tolist(), abs=1e-5)
    assert [r["kept"] for r in rows] == [score_or_minus_inf(r["distilled_score"]) > score_or_minus_inf(r["plain_score"]) for r in rows]

    # training dialogs: exactly the kept answers, after the prompt as asked, no preprompt anywhere
    train = read(out / "train.jsonl")
    assert train == [{"messages": [*r["messages"], {"role": "assistant", "content": r["distilled_answer"]}]} for r in rows if r["kept"]]
    text = json.dumps(train)
    assert '"system"' not in text and distill.PREPROMPT not in text and TEMPLATES["poisoning"] not in text

    report = json.loads((out / "distill.json").read_text())
    assert report["kept"] == sum(r["kept"] for r in rows) and report["kept_share"] == report["kept"] / 4
    assert report["by_risk_category"]["poisoning"]["prompts"] == 2 and report["by_risk_category"]["none"]["prompts"] == 1
    assert report["model"] == (str(out / "sft" / "model") if train else str(checkpoints[0]))

    # untargeted, on the same answers and scores: every non-empty distilled answer is kept
    again = distill.main(args(tmp_path, checkpoints, out=tmp_path / "untargeted", targeted=False, answers_from=out))
    untargeted = read(again / "distill.jsonl")
    assert [r["distilled_answer"] for r in untargeted] == [r["distilled_answer"] for r in rows]
    assert [r["kept"] for r in untargeted] == [r["distilled_score"] is not None for r in rows]
    assert (again / "sft" / "model" / "model.safetensors").is_file()


def test_bad_inputs_get_one_line_errors(tmp_path, checkpoints):
    policy, rm = checkpoints
    table = {"distill": (DistillArgs, distill.main)}
    base = ["distill", "--policy", str(policy), "--rm-safety", str(rm), "--out", str(tmp_path / "out"), "--preset", "smoke"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(PROMPTS[0]) + "\n" + json.dumps({"messages": [{"role": "assistant", "content": "hi"}]}) + "\n")
    with pytest.raises(UserError) as err:
        cli_run([*base, "--prompts", str(bad)], table)
    assert str(err.value).startswith(f"{bad}:2: field 'messages'") and "\n" not in str(err.value)

    good = write_jsonl(tmp_path / "prompts.jsonl", PROMPTS)
    with pytest.raises(UserError, match=r"^distill needs --prompts"):
        cli_run(base, table)
    broken = tmp_path / "templates.json"
    broken.write_text("{not json")
    with pytest.raises(UserError, match=r"templates.json: not JSON"):
        cli_run([*base, "--prompts", str(good), "--templates", str(broken)], table)

    other = shutil.copytree(rm, tmp_path / "rm_other")
    (other / "tokenizer.model").write_bytes(b"another tokenizer")
    with pytest.raises(UserError, match=r"rm_other/tokenizer.model: differs from the policy's tokenizer"):
        distill.main(args(tmp_path, checkpoints, out=tmp_path / "x", rm_safety=other))

    with pytest.raises(UserError, match=r"distill.jsonl: not found \(--answers-from"):
        distill.main(args(tmp_path, checkpoints, out=tmp_path / "y", answers_from=tmp_path))
