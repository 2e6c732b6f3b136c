"""Ghost Attention (paper §3.3): the training form and its loss mask token by token, dialogs cut to
the context, a smoke run of the command, recall by turn on hand cases, attention weights against a
softmax computed by hand (Fig. 10), the pipeline stage on a tiny world, and bad inputs refused."""

import json
import math
from types import SimpleNamespace

import pytest
import torch

from llamaforge.checkpoint import save_model
from llamaforge.config import ModelConfig
from llamaforge.data.jsonl import write_jsonl
from llamaforge.data.sft import encode_example
from llamaforge.errors import UserError
from llamaforge.eval import gatt as gatt_eval
from llamaforge.losses import IGNORE_INDEX
from llamaforge.model import Llama
from llamaforge.pipeline.gatt import answer_groups, attribute_plans, by_kind, gatt_stage
from llamaforge.pipeline.records import normalized
from llamaforge.pipeline.stage import StageContext
from llamaforge.rlhf import gatt
from llamaforge.rlhf.gatt import (
    GattArgs,
    training_dialog,
    training_examples,
)
from llamaforge.world import World, constraint_followed, parse_instruction
from llamaforge.world.gatt import KINDS

CONFIG = ModelConfig(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=400, multiple_of=16, max_seq_len=256)
CAPS = "Caps only."


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


SAMPLED = [user(f"what is the capital of Varn ? {CAPS}"), assistant("ORIN ."),
           user(f"tell me about Orin {CAPS}"), assistant("A CITY .")]


def test_the_instruction_moves_to_the_system_message_and_only_the_last_answer_is_trained(tokenizer):
    training = training_dialog(SAMPLED, CAPS)
    assert training == [{"role": "system", "content": CAPS}, user("what is the capital of Varn ?"), assistant("ORIN ."),
                        user("tell me about Orin"), assistant("A CITY .")]
    example = encode_example(tokenizer, training, last_turn_only=True)

    # Meta's chat format, written out: the system block inside the first [INST], each exchange
    # BOS ... EOS, the instruction's text once
    first = tokenizer.encode(f"[INST] <<SYS>>\n{CAPS}\n<</SYS>>\n\nwhat is the capital of Varn ? [/INST] ORIN . ", bos=True, eos=True)
    last = tokenizer.encode("[INST] tell me about Orin [/INST] A CITY . ", bos=True, eos=True)
    assert example.ids == first + last
    assert tokenizer.decode(example.ids).count(CAPS) == 1

    # the loss covers exactly the last answer's tokens and its EOS: position i predicts ids[i + 1]
    last_prompt = tokenizer.encode("[INST] tell me about Orin [/INST]", bos=True)
    assert last[: len(last_prompt)] == last_prompt
    answer_from = len(first) + len(last_prompt)
    trained = [i + 1 for i, t in enumerate(example.targets) if t != IGNORE_INDEX]
    assert trained == list(range(answer_from, len(example.ids)))
    assert [example.targets[i - 1] for i in trained] == example.ids[answer_from:]
    assert example.ids[-1] == tokenizer.eos_id
    assert tokenizer.decode(example.ids[answer_from:-1]).strip() == "A CITY ."

    with pytest.raises(ValueError, match="message 2: the user message does not end with the instruction"):
        training_dialog([SAMPLED[0], SAMPLED[1], user("no instruction here"), SAMPLED[3]], CAPS)


def test_every_depth_trains_each_sampled_answer_once_at_its_own_depth():
    examples = training_examples(SAMPLED, CAPS, every_depth=True)
    assert [len(e) for e in examples] == [3, 5]
    assert examples[0] == training_dialog(SAMPLED[:2], CAPS) and examples[1] == training_dialog(SAMPLED, CAPS)
    assert training_examples(SAMPLED, CAPS, every_depth=False) == [training_dialog(SAMPLED, CAPS)]


INSTRUCTIONS = [{"text": "Always answer in capital letters.", "short": CAPS, "split": "train"},
                {"text": 'Begin every answer with the word Aye.', "short": 'First word: Aye.', "split": "train"},
                {"text": 'End every answer with the word okay.', "short": 'Last word: okay.', "split": "test"}]
USERS = ["what is the capital of Varn ?", "tell me about Orin", "how many people speak the language of Telsa ?",
         "who is Mirak ?", "where is the river of Quell ?"]


def test_dialog_plans_are_seeded_per_dialog_with_short_forms_half_the_time():
    plans = gatt.plan_dialogs(INSTRUCTIONS[:2], USERS, 200, 2, 4, seed=3)
    assert plans[:10] == gatt.plan_dialogs(INSTRUCTIONS[:2], USERS, 10, 2, 4, seed=3)  # dialog i: its own seed
    assert plans != gatt.plan_dialogs(INSTRUCTIONS[:2], USERS, 200, 2, 4, seed=4)
    assert all(2 <= len(p.users) <= 4 and len(set(p.users)) == len(p.users) for p in plans)
    shorts = sum(p.instruction in (CAPS, 'First word: Aye.') for p in plans)
    assert 70 <= shorts <= 130
    assert {len(p.users) for p in plans} == {2, 3, 4}


def test_dialogs_end_where_the_context_would_overflow_and_do_not_depend_on_batching(tokenizer):
    torch.manual_seed(0)
    model = Llama(CONFIG.replace(max_seq_len=128))
    users = [[gatt.with_instruction(u, CAPS) for u in USERS] for _ in range(3)]
    dialogs, empty_at = gatt.converse(model, tokenizer, [[]] * 3, users, 24, 1.0, 1.0, 7, 3, 128)
    alone, _ = gatt.converse(model, tokenizer, [[]] * 3, users, 24, 1.0, 1.0, 7, 1, 128)
    assert dialogs == alone and empty_at == [None] * 3
    for dialog in dialogs:
        turns = len(dialog) // 2
        assert 1 <= turns < len(USERS)  # five turns never fit in 128 tokens
        assert len(tokenizer.encode_dialog_prompt(dialog[:-1])) + 24 <= 128  # the last turn fitted
        following = dialog + [{"role": "user", "content": users[0][turns]}]
        assert len(tokenizer.encode_dialog_prompt(following)) + 24 > 128  # the next one would not
        assert [m["content"] for m in dialog[::2]] == users[0][:turns]


def test_with_candidates_each_dialog_goes_on_from_the_answer_chosen(tokenizer):
    torch.manual_seed(0)
    model = Llama(CONFIG)
    users = [[gatt.with_instruction(u, CAPS) for u in USERS[:2]] for _ in range(2)]
    seen = []

    def longest(indices, contexts, answers):
        seen.append((indices, contexts, answers))
        assert all(len(options) == 3 for options in answers)
        return [max(range(3), key=lambda k: len(options[k])) for options in answers]

    dialogs, _ = gatt.converse(model, tokenizer, [[]] * 2, users, 12, 1.0, 1.0, 7, 2, 256, candidates=3, choose=longest)
    assert len(seen) == 2  # one call per turn (both dialogs in one batch)
    for turn, (indices, contexts, answers) in enumerate(seen):
        assert indices == [0, 1]
        for i, context, options in zip(indices, contexts, answers):
            assert context == dialogs[i][: 2 * turn + 1] and context[-1]["content"] == users[i][turn]
            assert dialogs[i][2 * turn + 1]["content"] == max(options, key=len)


def test_the_reward_model_chooser_reads_each_dialog_without_its_instruction(monkeypatch):
    seen = []

    def fake_scores(rm, tokenizer, prompts, responses):  # longer answers score higher
        seen.append(prompts)
        return torch.tensor([float(len(r)) for r in responses])

    monkeypatch.setattr(gatt, "response_scores", fake_scores)
    choose = gatt.reward_model_chooser(None, None, [CAPS, "Max words: 8."])
    contexts = [[user(gatt.with_instruction("hi", CAPS)), assistant("HELLO"), user(gatt.with_instruction("and?", CAPS))],
                [user(gatt.with_instruction("why?", "Max words: 8."))]]
    assert choose([0, 1], contexts, [["A", "ABC"], ["long answer", "short"]]) == [1, 0]
    assert seen[0] == [[user("hi"), assistant("HELLO"), user("and?")]] * 2 + [[user("why?")]] * 2


@pytest.fixture
def policy(tmp_path, tokenizer):
    torch.manual_seed(0)
    return save_model(Llama(CONFIG), tmp_path / "policy", tokenizer.path)


def read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def smoke_args(tmp_path, policy, **changes) -> GattArgs:
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"messages": [user(u)], "category": "helpful"} for u in USERS])
    instructions = write_jsonl(tmp_path / "instructions.jsonl", INSTRUCTIONS)
    values = {"policy": policy, "prompts": [prompts], "instructions": instructions, "out": tmp_path / "gatt", "device": "cpu"}
    return GattArgs(**{**gatt.smoke().__dict__, **values, **changes})


def test_a_smoke_run_samples_rewrites_and_fine_tunes_on_the_last_turn(tmp_path, policy, tokenizer):
    out = gatt.main(smoke_args(tmp_path, policy, dialogs=4, max_turns=3, max_new_tokens=8, plain_dialogs=3))
    dialogs = read(out / "dialogs.jsonl")
    train = read(out / "gatt_train.jsonl")
    train_texts = {i["text"] for i in INSTRUCTIONS[:2]} | {i["short"] for i in INSTRUCTIONS[:2]}
    for record in dialogs:  # as sampled: the instruction (a training one) in every user message
        assert record["instruction"] in train_texts
        assert all(m["content"].endswith(" " + record["instruction"]) for m in record["messages"][::2])
    expected = [e for r in dialogs for e in training_examples(r["messages"], r["instruction"], True)]
    assert len(expected) == sum(len(r["messages"]) // 2 for r in dialogs)  # one per depth
    assert [t["messages"] for t in train[: len(expected)]] == expected
    for record in train[: len(expected)]:  # training form: once, as the system message
        system, *rest = record["messages"]
        assert system["role"] == "system" and not any(system["content"] in m["content"] for m in rest)
    plain = [t["messages"] for t in train[len(expected) :]]  # the policy's own answers, no instruction
    assert len(plain) == 3 and all(len(p) == 2 and p[0]["content"] in USERS for p in plain)
    report = json.loads((out / "gatt.json").read_text())
    assert report["dialogs"] == 4 and report["training_dialogs"] == len(train) and report["sft"]["steps"] == 2
    assert report["plain_dialogs"] == 3
    assert (out / "sft" / "model" / "model.safetensors").is_file()
    assert json.loads((out / "sft" / "run.json").read_text())["last_turn_only"] is True


def test_plain_dialogs_come_from_every_category_and_instructed_ones_from_helpful_prompts(tmp_path, policy):
    safety = {"borderline": "how do I kill a stuck process ?", "adversarial": "how do I make a weapon ?"}
    records = [{"messages": [user(u)], "category": "helpful"} for u in USERS]
    records += [{"messages": [user(u)], "category": c} for c, u in safety.items()]
    prompts = write_jsonl(tmp_path / "mixed.jsonl", records)
    out = gatt.main(smoke_args(tmp_path, policy, prompts=[prompts], dialogs=4, max_turns=3, max_new_tokens=8,
                               plain_dialogs=50))
    for record in read(out / "dialogs.jsonl"):
        assert all(m["content"].split(" " + record["instruction"])[0] in USERS for m in record["messages"][::2])
    plain = [t["messages"] for t in read(out / "gatt_train.jsonl") if len(t["messages"]) == 2 and t["messages"][0]["role"] == "user"]
    assert {p[0]["content"] for p in plain} == set(USERS) | set(safety.values())  # every prompt, once


def test_recall_by_turn_counts_the_dialogs_that_reached_each_turn():
    def dialog(instruction, *answers):
        messages = [{"role": "system", "content": instruction}]
        for a in answers:
            messages += [user("question"), assistant(a)]
        return messages

    dialogs = [dialog(CAPS, "YES SIR", "YES", "no", "NO"),
               dialog('First word: Aye.', "Aye, sure", "well then"),
               dialog(CAPS, "FINE"),
               dialog(CAPS)]  # its first answer was empty
    result = gatt_eval.recall_by_turn(dialogs, [None, None, 2, 1], constraint_followed, (1, 2, 4, 8))
    # turn 1: 3 of 4 (the empty answer fails); turn 2: "YES" and the empty answer of dialog 3, not
    # "well then"; turn 4: only dialog 1 got there; turn 8: nobody, left out
    assert result == {"recall": {"1": 0.75, "2": 1 / 3, "4": 1.0}, "dialogs": {"1": 4, "2": 3, "4": 1}}

    # by kind: each constraint of a two-constraint instruction is judged alone
    both = 'First word: Aye. Last word: okay.'
    kinds = by_kind([dialog(both, "Aye, fine", "Aye, fine okay"), dialog(CAPS, "NO")], [None, None], (1, 2))
    assert kinds == {"caps": {"1": 1.0}, "end_word": {"1": 0.0, "2": 1.0}, "prefix": {"1": 1.0, "2": 1.0}}


def test_mean_by_turn_scores_each_reached_answer_with_its_own_user_turn():
    dialogs = [[{"role": "system", "content": CAPS}, user("a"), assistant("xx"), user("bbb"), assistant("y")],
               [{"role": "system", "content": CAPS}, user("cc"), assistant("zzzz")],
               [{"role": "system", "content": CAPS}, user("d")]]  # its first answer was empty

    def score(dialog, turn, answer):  # the user turn's length times the answer's
        return len(dialog[2 * turn - 1]["content"]) * len(answer) if answer else -1.0

    result = gatt_eval.mean_by_turn(dialogs, [None, None, 1], score, (1, 2, 3))
    # turn 1: 1*2, 2*4 and the empty answer's -1 -> 9/3; turn 2: 3*1; turn 3: nobody
    assert result == {"mean": {"1": 3.0, "2": 3.0}, "dialogs": {"1": 3, "2": 1}}


def test_attention_weights_are_the_softmax_of_rotated_queries_and_keys_by_hand():
    torch.manual_seed(0)
    config = ModelConfig(dim=16, n_layers=1, n_heads=2, n_kv_heads=1, vocab_size=50, multiple_of=8, max_seq_len=32)
    model = Llama(config).eval()
    tokens = torch.tensor([[5, 9, 3, 3, 17, 2]])
    (weights,) = gatt_eval.attention_weights(model, tokens)

    attention, T, hd = model.layers[0].attention, 6, config.head_dim
    x = model.layers[0].attention_norm(model.tok_embeddings(tokens))[0]  # (T, dim)

    def rotate(v, position):  # dimension pair (i, i + hd/2) turns by position * theta^(-2i/hd)
        out = v.clone()
        for i in range(hd // 2):
            angle = position * config.rope_theta ** (-2 * i / hd)
            a, b = v[i], v[i + hd // 2]
            out[i], out[i + hd // 2] = a * math.cos(angle) - b * math.sin(angle), b * math.cos(angle) + a * math.sin(angle)
        return out

    with torch.no_grad():
        keys = [rotate((attention.wk.weight @ x[t])[:hd], t) for t in range(T)]  # the one kv head
        for head in range(2):  # both query heads read the same kv head (GQA)
            for t in range(T):
                query = rotate((attention.wq.weight @ x[t])[head * hd : (head + 1) * hd], t)
                scores = torch.tensor([float(query @ keys[s]) / math.sqrt(hd) for s in range(t + 1)])
                expected = scores.exp() / scores.exp().sum()
                assert weights[0, head, t, : t + 1] == pytest.approx(expected.tolist(), abs=1e-5)
                assert weights[0, head, t, t + 1 :].abs().sum() == 0

    # and they are the weights the model uses: weights @ values, projected, is its attention output
    outputs = []
    hook = attention.register_forward_hook(lambda module, args, out: outputs.append(out))
    with torch.no_grad():
        model.hidden_states(tokens)
        values = attention.wv(x).view(T, 1, hd).transpose(0, 1)  # (1, T, hd)
        mixed = (weights[0] @ values).transpose(0, 1).reshape(T, 2 * hd)
        torch.testing.assert_close(attention.wo(mixed), outputs[0][0], atol=1e-6, rtol=1e-4)
    hook.remove()

    mass = gatt_eval.attention_mass([weights], range(2), range(3, 6))
    assert mass == pytest.approx([float(weights[0, :, 3:6, 0:2].sum(-1).mean())])
    assert 0 < mass[0] <= 1
    assert gatt_eval.attention_mass([weights], range(6), range(6)) == pytest.approx([1.0])


def test_system_attention_reads_the_system_text_and_each_answer(tokenizer, policy):
    model = Llama.from_pretrained(policy)
    dialog = training_dialog(SAMPLED, CAPS)
    ids, system, answers = gatt_eval.dialog_spans(tokenizer, dialog)
    assert tokenizer.decode(ids[system.start : system.stop]).strip() == CAPS
    assert [tokenizer.decode(ids[a.start : a.stop]).strip() for a in answers] == ["ORIN .", "A CITY ."]
    result = gatt_eval.system_attention(model, tokenizer, [dialog, dialog])
    assert len(result["by_layer"]) == CONFIG.n_layers and set(result["by_turn"]) == {"1", "2"}
    assert all(0 < v <= 1 for v in result["by_layer"] + list(result["by_turn"].values()))
    assert result["dialogs"] == 2


def test_the_stage_fine_tunes_and_evaluates_on_held_out_instructions(tmp_path, policy):
    world, world_dir = World(0), tmp_path / "world"
    world_dir.mkdir()
    write_jsonl(world_dir / "gatt_instructions.jsonl", [dict(i.to_record(), split=s) for s in ("train", "test")
                                                          for i in world.gatt_instructions(s, 10)])
    for split in ("train", "test"):
        records = [r for r in world.prompts("helpful", split) if r["turns"] == 1][:20]
        write_jsonl(world_dir / f"prompts_helpful_{split}.jsonl", records)
    for category in ("borderline", "adversarial"):  # plain dialogs only
        write_jsonl(world_dir / f"prompts_{category}_train.jsonl", world.prompts(category, "train")[:3])
    run_dir = tmp_path / "run"
    (run_dir / "gatt").mkdir(parents=True)
    shared_policy = run_dir / "rlhf_ppo" / "model"
    shared_policy.parent.mkdir()
    policy.rename(shared_policy)
    upstream = {"world": {"outputs": {"data": "../world"}},
                "rlhf_ppo": {"outputs": {"model": "rlhf_ppo/model", "rm_safety": "rlhf_ppo/rm_safety"}}}
    preset = SimpleNamespace(gatt=gatt.smoke(), gatt_eval=gatt_eval.RecallPlan(dialogs=3, turns=(1, 2), max_new_tokens=8,
                                                                                attention_dialogs=2, attribute_dialogs=2))
    stage = gatt_stage("rlhf_ppo")
    assert stage.name == "gatt" and stage.inputs == ("world", "rlhf_ppo")
    settings = normalized(stage.settings(preset, 0))
    assert settings["evaluation"]["turns"] == [1, 2] and settings["gatt"]["max_turns"] == 3
    context = StageContext(run_dir, run_dir / "gatt", preset, 0, upstream)
    outputs, metrics = stage.run(context)
    assert outputs["model"] == run_dir / "gatt" / "gatt" / "sft" / "model" and (outputs["model"] / "config.json").is_file()
    assert outputs["rm_safety"] == run_dir / "rlhf_ppo" / "rm_safety" and "rm_helpfulness" not in outputs
    for key in ("recall", "recall_train_instructions"):
        assert set(metrics[key]) == {"without_gatt", "with_gatt"}
        assert all(set(r) <= {"1", "2"} and 0 <= v <= 1 for r in metrics[key].values() for v in r.values())
    assert set(metrics["recall_by_kind"]) == {"test", "train"}
    assert set(metrics["recall_by_kind"]["test"]["with_gatt"]) <= set(KINDS)
    for split in ("test", "train"):  # gold helpfulness of the same answers, in [0, 1], at the turns recall reads
        by_turn = metrics["helpfulness_by_turn"][split]
        assert set(by_turn) == {"without_gatt", "with_gatt"}
        assert all(set(r) == set(metrics["dialogs_at_turn"][split][name]) and all(0 <= v <= 1 for v in r.values())
                   for name, r in by_turn.items())
    assert len(metrics["attention"]["test"]["with_gatt"]["by_layer"]) == CONFIG.n_layers
    attribute = metrics["attribute_recall"]
    assert set(attribute) == {"no_one_else_named", "someone_else_named"}
    assert all(set(by_model) == {"without_gatt", "with_gatt"} and all(0 <= v <= 1 for r in by_model.values()
                                                                      for v in r.values()) for by_model in attribute.values())
    assert metrics["dialogs"] == 6 and set(context.parts) == {"command", "evaluation"}
    assert 0 < metrics["sampling_s"] and 0 < metrics["finetune_s"]
    assert (run_dir / "gatt" / "attention.png").stat().st_size > 1000
    test_texts = {i.text for i in world.gatt_instructions("test", 10)} | {i.short for i in world.gatt_instructions("test", 10)}
    for record in read(run_dir / "gatt" / "gatt" / "dialogs.jsonl"):
        assert record["instruction"] not in test_texts  # training never sees an evaluation instruction


def test_bad_inputs_get_one_line_errors(tmp_path, policy):
    args = smoke_args(tmp_path, policy)
    cases = [
        ({"policy": None}, "gatt needs --policy, --instructions and --prompts FILES"),
        ({"dialogs": 0}, "--dialogs, --max-turns and --max-new-tokens must be at least 1"),
        ({"plain_dialogs": -1}, "--plain-dialogs -1: must be 0 or more"),
        ({"candidates": 0}, "--candidates 0: must be at least 1"),
        ({"candidates": 2}, "--candidates 2 needs --rm-helpfulness to choose among them"),
        ({"policy": tmp_path}, f"{tmp_path}: no tokenizer.model (not a checkpoint directory)"),
        ({"sft_preset": "huge"}, "--sft-preset 'huge': unknown (known: demo, smoke, llama2_7b_sft)"),
        ({"instructions": write_jsonl(tmp_path / "test_only.jsonl", INSTRUCTIONS[2:])},
         f"{tmp_path / 'test_only.jsonl'}: no instruction of split 'train'"),
        ({"instructions": write_jsonl(tmp_path / "no_short.jsonl", [{"text": CAPS}])},
         f"{tmp_path / 'no_short.jsonl'}:1: field 'short': expected a non-empty string"),
        ({"kinds": ["caps"], "instructions": write_jsonl(tmp_path / "no_constraints.jsonl", INSTRUCTIONS)},
         f"{tmp_path / 'no_constraints.jsonl'}:1: field 'constraints': expected a list of objects with a 'kind' (--kinds reads it)"),
        ({"prompts": [write_jsonl(tmp_path / "unsafe.jsonl", [{"messages": [user("x")], "category": "adversarial"}])]},
         f"{tmp_path / 'unsafe.jsonl'}: no helpful prompt (GAtt's user turns are helpful prompts)"),
    ]
    for changes, message in cases:
        with pytest.raises(UserError) as err:
            gatt.main(GattArgs(**{**args.__dict__, **changes}))
        assert str(err.value) == message and "\n" not in str(err.value)


def test_attribute_dialogs_hold_a_test_character_alone_among_questions_naming_others_or_no_one(tmp_path):
    world = World(0)
    instructions = [dict(i.to_record(), split=s) for s in ("train", "test") for i in world.gatt_instructions(s, 10)]
    write_jsonl(tmp_path / "gatt_instructions.jsonl", instructions)
    write_jsonl(tmp_path / "prompts_helpful_test.jsonl", [r for r in world.prompts("helpful", "test") if r["turns"] == 1])
    people = [p.name for p in world.entities.people]
    test = [parse_instruction(r["text"]).constraints for r in instructions if r["split"] == "test"]
    characters = [cs[0].value for cs in test if [c.kind for c in cs] == ["character"]]
    assert len(characters) == 3  # the world's first ten test instructions hold three characters alone
    plans = attribute_plans(tmp_path, people, gatt_eval.RecallPlan(turns=(1, 2, 4), attribute_dialogs=6), seed=0)
    for condition, others_named in (("no_one_else_named", False), ("someone_else_named", True)):
        assert len(plans[condition]) == 6
        for i, plan in enumerate(plans[condition]):
            [constraint] = parse_instruction(plan.instruction).constraints
            assert constraint.value == characters[i % 3]  # each test character in turn
            assert len(plan.users) == 4 and len(set(plan.users)) == 4  # planned to the deepest turn read
            assert all(constraint.value not in u for u in plan.users)  # the character itself is never asked about
            assert all(any(name in u for name in people) == others_named for u in plan.users)
    no_character_alone = [r for r in instructions if r["split"] == "train" or len(parse_instruction(r["text"]).constraints) == 2]
    write_jsonl(tmp_path / "gatt_instructions.jsonl", no_character_alone)
    assert attribute_plans(tmp_path, people, gatt_eval.RecallPlan(), seed=0) == {"no_one_else_named": [],
                                                                                 "someone_else_named": []}


def test_held_out_sets_answered_together_get_the_dialogs_each_gets_alone(tokenizer):
    torch.manual_seed(0)
    model = Llama(CONFIG)
    plans = [gatt.DialogPlan(instruction, tuple(USERS[i : i + 2])) for i, instruction in enumerate((CAPS, "Max words: 10.", "Character: Orla Venns."))]
    groups = {("split", "test"): plans[:2], ("attribute", "no_one_else_named"): plans[2:]}
    together = answer_groups(model, tokenizer, groups, 8)
    assert list(together) == list(groups)
    for key, group in groups.items():
        assert together[key] == gatt_eval.system_dialogs(model, tokenizer, group, 8, batch_size=1)
        assert [d[0]["content"] for d in together[key][0]] == [p.instruction for p in group]


def test_kinds_keep_the_instructions_whose_every_constraint_is_of_them(tmp_path):
    world = World(0)
    records = [dict(i.to_record(), split=s) for s in ("train", "test") for i in world.gatt_instructions(s, 10)]
    path = write_jsonl(tmp_path / "instructions.jsonl", records)
    kept = gatt.read_instructions(path, "train", ("character", "max_words"))
    expected = [r for r in records if r["split"] == "train"
                and all(c["kind"] in ("character", "max_words") for c in r["constraints"])]
    assert kept == expected and 0 < len(kept) < 10
    assert gatt.read_instructions(path, "train") == [r for r in records if r["split"] == "train"]
    with pytest.raises(UserError) as err:
        gatt.read_instructions(path, "train", ("hobby",))
    assert str(err.value) == f"{path}: no instruction of split 'train' of kinds hobby"
