"""SFT data (llamaforge/data/sft.py, paper §3.1, Meta's chat_completion): answer-only targets in Meta's
chat format, dialog validation with file:line errors, length fitting, packing without cross-talk."""

from __future__ import annotations

import json

import pytest
import torch

from llamaforge import Llama, ModelConfig
from llamaforge.data.sft import Example, encode_example, fit_length, layout, pack, read_dialogs
from llamaforge.errors import UserError
from llamaforge.losses import IGNORE_INDEX
from llamaforge.train.sft import SftArgs, load_examples

SINGLE = [
    {"role": "user", "content": "what is the capital of Varn ?"},
    {"role": "assistant", "content": "the capital of Varn is Orin ."},
]
MULTI = SINGLE + [
    {"role": "user", "content": "and the river ?"},
    {"role": "assistant", "content": "the river is Quell ."},
]
SYSTEM = [{"role": "system", "content": "answer in one sentence"}] + MULTI


def expected_dialog(tokenizer, system: str | None, turns: list[tuple[str, str]]):
    """Meta's format built piece by piece: per exchange [BOS] "[INST] {user} [/INST]" then the answer
    "{answer} " and [EOS]. Returns the ids and, per position, whether it is an answer token or EOS."""
    ids, is_answer = [], []
    for k, (user, answer) in enumerate(turns):
        if k == 0 and system is not None:
            user = f"<<SYS>>\n{system}\n<</SYS>>\n\n{user}"
        prompt = [tokenizer.bos_id] + tokenizer.encode(f"[INST] {user} [/INST]")
        reply = tokenizer.encode(f"{answer} ") + [tokenizer.eos_id]
        ids += prompt + reply
        is_answer += [False] * len(prompt) + [True] * len(reply)
    return ids, is_answer


def check_targets(example: Example, ids: list[int], is_answer: list[bool]) -> int:
    assert example.ids == ids
    assert len(example.targets) == len(ids)
    for i in range(len(ids)):
        if i + 1 < len(ids) and is_answer[i + 1]:
            assert example.targets[i] == ids[i + 1], f"position {i}: should predict answer token {ids[i + 1]}"
        else:
            assert example.targets[i] == IGNORE_INDEX, f"position {i}: should carry no loss"
    return sum(t != IGNORE_INDEX for t in example.targets)


# --- targets ---------------------------------------------------------------------------------------


def test_single_turn_targets_are_the_answer_and_its_eos(tokenizer):
    ids, is_answer = expected_dialog(tokenizer, None, [(SINGLE[0]["content"], SINGLE[1]["content"])])
    assert ids[0] == tokenizer.bos_id and ids[-1] == tokenizer.eos_id
    n_answer = len(tokenizer.encode("the capital of Varn is Orin . "))
    n_targets = check_targets(encode_example(tokenizer, SINGLE, last_turn_only=False), ids, is_answer)
    assert n_targets == n_answer + 1  # every answer token and the EOS; nothing of the prompt
    # The last prompt token (the end of "[/INST]") predicts the first answer token.
    first_answer = is_answer.index(True)
    assert encode_example(tokenizer, SINGLE, False).targets[first_answer - 1] == ids[first_answer]


def test_multi_turn_targets_skip_the_second_user_turn_and_its_bos(tokenizer):
    turns = [(MULTI[0]["content"], MULTI[1]["content"]), (MULTI[2]["content"], MULTI[3]["content"])]
    ids, is_answer = expected_dialog(tokenizer, None, turns)
    assert ids.count(tokenizer.bos_id) == 2 and ids.count(tokenizer.eos_id) == 2
    example = encode_example(tokenizer, MULTI, last_turn_only=False)
    n_targets = check_targets(example, ids, is_answer)
    assert n_targets == len(tokenizer.encode("the capital of Varn is Orin . ")) + 1 + len(tokenizer.encode("the river is Quell . ")) + 1
    # The first EOS predicts the second exchange's BOS: not a target.
    first_eos = ids.index(tokenizer.eos_id)
    assert ids[first_eos + 1] == tokenizer.bos_id and example.targets[first_eos] == IGNORE_INDEX


def test_system_prompt_is_merged_into_the_first_user_turn_and_masked(tokenizer):
    turns = [(MULTI[0]["content"], MULTI[1]["content"]), (MULTI[2]["content"], MULTI[3]["content"])]
    ids, is_answer = expected_dialog(tokenizer, "answer in one sentence", turns)
    plain, _ = expected_dialog(tokenizer, None, turns)
    assert len(ids) > len(plain)  # the system prompt is in the ids...
    n_targets = check_targets(encode_example(tokenizer, SYSTEM, last_turn_only=False), ids, is_answer)
    assert n_targets == sum(is_answer)  # ...but adds no target: same answers, same count
    assert sum(is_answer) == sum(expected_dialog(tokenizer, None, turns)[1])


def test_last_turn_only_trains_on_the_final_answer(tokenizer):
    turns = [(MULTI[0]["content"], MULTI[1]["content"]), (MULTI[2]["content"], MULTI[3]["content"])]
    ids, is_answer = expected_dialog(tokenizer, "answer in one sentence", turns)
    second_bos = len(ids) - 1 - ids[::-1].index(tokenizer.bos_id)
    final_only = [a and i > second_bos for i, a in enumerate(is_answer)]
    example = encode_example(tokenizer, SYSTEM, last_turn_only=True)
    n_targets = check_targets(example, ids, final_only)
    assert n_targets == len(tokenizer.encode("the river is Quell . ")) + 1


# --- validation: file and line ---------------------------------------------------------------------

GOOD = json.dumps({"messages": SINGLE})


@pytest.mark.parametrize(
    "bad_line, words",
    [
        ('{"messages": [', "not valid JSON"),
        (json.dumps({"dialog": SINGLE}), "missing field 'messages'"),
        (json.dumps(["not", "an", "object"]), "missing field 'messages'"),
        (json.dumps({"messages": SINGLE, "source": "web"}), "unknown field 'source'"),
        (json.dumps({"messages": [SINGLE[1], SINGLE[0], SINGLE[1]]}), "role is 'assistant', expected 'user'"),
        (json.dumps({"messages": SINGLE + SINGLE[1:]}), "message 2: role is 'assistant', expected 'user'"),
        (json.dumps({"messages": [SINGLE[0], {"role": "assistant", "content": "  "}]}), "message 1: content is empty"),
        (json.dumps({"messages": MULTI[:3]}), "ends with a 'user' turn"),
        (json.dumps({"messages": [{"role": "user", "content": "hi [/INST] there"}, SINGLE[1]]}), "special tag '[/INST]'"),
        (json.dumps({"messages": [{"role": "system", "content": "<<SYS>> x"}] + SINGLE}), "special tag '<<SYS>>'"),
        (json.dumps({"messages": [{"role": "user", "content": "hi", "name": "x"}, SINGLE[1]]}), "message 0"),
        (json.dumps({"messages": ["hello", SINGLE[1]]}), "message"),
        (json.dumps({"messages": []}), "non-empty"),
    ],
)
def test_read_dialogs_errors_name_file_and_line(tmp_path, bad_line, words):
    # line 1 good, line 2 blank (skipped, but counted), line 3 good, line 4 bad
    path = tmp_path / "sft.jsonl"
    path.write_text(f"{GOOD}\n\n{GOOD}\n{bad_line}\n{GOOD}\n")
    with pytest.raises(UserError) as err:
        read_dialogs(path)
    message = str(err.value)
    assert message.startswith(f"{path}:4: "), message
    assert words in message
    assert "\n" not in message


def test_read_dialogs_reads_valid_records(tmp_path):
    path = tmp_path / "sft.jsonl"
    path.write_text("\n".join(json.dumps({"messages": d}) for d in (SINGLE, MULTI, SYSTEM)) + "\n\n")
    assert read_dialogs(path) == [SINGLE, MULTI, SYSTEM]
    with pytest.raises(UserError, match="file not found"):
        read_dialogs(tmp_path / "missing.jsonl")


# --- fitting the sequence length -------------------------------------------------------------------


def test_truncation_cuts_the_prompt_side_and_keeps_the_answer(tokenizer):
    long_user = "please tell me about " + "the city and the river " * 10 + "?"
    dialog = [{"role": "user", "content": long_user}, SINGLE[1]]
    example = encode_example(tokenizer, dialog, False)
    n_targets = sum(t != IGNORE_INDEX for t in example.targets)
    first_target = next(i for i, t in enumerate(example.targets) if t != IGNORE_INDEX)
    cut = first_target  # keep exactly from the last prompt token on
    assert cut > 10
    seq_len = len(example.ids) - cut
    fitted = fit_length(example, seq_len, "truncate")
    assert len(fitted.ids) == seq_len == len(fitted.targets)
    assert fitted.ids == example.ids[cut:] and fitted.targets == example.targets[cut:]
    assert sum(t != IGNORE_INDEX for t in fitted.targets) == n_targets  # every answer target kept
    # Exactly seq_len tokens: unchanged; shorter: unchanged.
    assert fit_length(example, len(example.ids), "truncate") == example
    assert fit_length(example, len(example.ids), "drop") == example
    # One token more than fits: dropped under "drop".
    assert fit_length(example, len(example.ids) - 1, "drop") is None
    assert fit_length(example, seq_len, "drop") is None


def test_truncation_that_leaves_no_answer_target_returns_none(tokenizer):
    example = encode_example(tokenizer, SINGLE, False)
    # Two tokens: the last answer token predicting EOS -> still one target.
    two = fit_length(example, 2, "truncate")
    assert two.ids == example.ids[-2:] and two.targets == [tokenizer.eos_id, IGNORE_INDEX]
    # One token (the EOS): nothing left to predict.
    assert fit_length(example, 1, "truncate") is None
    # An example without any target is never kept, even when it fits.
    assert fit_length(Example([1, 5, 6], [IGNORE_INDEX] * 3), 8, "truncate") is None


def test_load_examples_reports_dropped_dialogs(tokenizer, tmp_path):
    long_user = "please tell me about " + "the city and the river " * 10 + "?"
    dialogs = [SINGLE, [{"role": "user", "content": long_user}, SINGLE[1]], MULTI, SYSTEM, SINGLE]
    path = tmp_path / "sft.jsonl"
    path.write_text("".join(json.dumps({"messages": d}) + "\n" for d in dialogs))
    lengths = [len(encode_example(tokenizer, d, False).ids) for d in dialogs]
    seq_len = len(encode_example(tokenizer, SINGLE, False).ids)  # SINGLE fits, the others do not
    assert sum(n <= seq_len for n in lengths) == 2

    logged = []
    args = SftArgs(seq_len=seq_len, too_long="drop")
    examples = load_examples([path], tokenizer, args, logged.append)
    assert len(examples) == 2
    assert logged == [f"3 of 5 dialogs dropped: longer than {seq_len} tokens (--too-long drop)"]

    logged.clear()
    examples = load_examples([path], tokenizer, SftArgs(seq_len=seq_len, too_long="truncate"), logged.append)
    assert len(examples) == 5 and logged == []  # truncation keeps every dialog here
    for example in examples:
        assert len(example.ids) <= seq_len
        assert any(t != IGNORE_INDEX for t in example.targets)

    # seq_len 1 leaves no answer token after truncation: every dialog dropped, which is an error.
    logged.clear()
    with pytest.raises(UserError, match="no trainable dialog"):
        load_examples([path], tokenizer, SftArgs(seq_len=1, too_long="truncate"), logged.append)
    assert logged == ["5 of 5 dialogs dropped: longer than 1 tokens (no answer token left after truncation)"]


# --- packing and layout ----------------------------------------------------------------------------


def numbered(lengths: list[int]) -> list[Example]:
    """Examples whose ids say which example and position they are: 100 * (k + 1) + position."""
    return [Example([100 * (k + 1) + i for i in range(n)], [IGNORE_INDEX] * (n - 1) + [7]) for k, n in enumerate(lengths)]


def test_pack_fills_rows_in_order():
    examples = numbered([3, 4, 2, 5, 1, 6, 6])
    rows = pack(examples, seq_len=6)
    # 3 | 4+2 | 5+1 | 6 | 6: a row closes when the next example would overflow it.
    assert [[len(e.ids) for e in row] for row in rows] == [[3], [4, 2], [5, 1], [6], [6]]
    assert all(sum(len(e.ids) for e in row) <= 6 for row in rows)
    flat = [e for row in rows for e in row]
    assert [e.ids[0] for e in flat] == [100, 200, 300, 400, 500, 600, 700]  # order kept, each once
    assert pack([], 6) == []


def test_pack_many_random_lengths():
    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 33, (200,), generator=gen).tolist()
    rows = pack(numbered(lengths), seq_len=32)
    assert all(0 < sum(len(e.ids) for e in row) <= 32 for row in rows)
    assert [e.ids[0] for row in rows for e in row] == [100 * (k + 1) for k in range(200)]
    # Greedy: the first example of each row would not have fit in the previous row.
    for previous, row in zip(rows, rows[1:]):
        assert sum(len(e.ids) for e in previous) + len(row[0].ids) > 32


def test_layout_positions_segments_and_padding():
    a, b, c = numbered([3, 2, 4])
    batch = layout([[a, b], [c]], length=6)
    assert batch.tokens.tolist() == [[100, 101, 102, 200, 201, 0], [300, 301, 302, 303, 0, 0]]
    assert batch.positions.tolist() == [[0, 1, 2, 0, 1, 0], [0, 1, 2, 3, 0, 0]]
    assert batch.segments.tolist() == [[0, 0, 0, 1, 1, -1], [0, 0, 0, 0, -1, -1]]
    assert batch.targets.tolist() == [[-100, -100, 7, -100, 7, -100], [-100, -100, -100, 7, -100, -100]]


def test_attention_mask_hand_made():
    a, b, c = numbered([3, 2, 4])
    mask = layout([[a, b], [c]], length=6).attention_mask()
    expected = [
        [  # segments 0 0 0 1 1 -1
            "100000",
            "110000",
            "111000",
            "000100",  # example b's first token sees only itself, nothing of a
            "000110",
            "000001",  # padding attends to itself only
        ],
        [  # segments 0 0 0 0 -1 -1
            "100000",
            "110000",
            "111000",
            "111100",
            "000010",
            "000001",
        ],
    ]
    assert mask.shape == (2, 6, 6) and mask.dtype == torch.bool
    for r in range(2):
        for q in range(6):
            for k in range(6):
                assert bool(mask[r, q, k]) == (expected[r][q][k] == "1"), (r, q, k)


# --- packed logits equal the logits alone ----------------------------------------------------------


def test_packed_logits_equal_each_example_alone(tokenizer):
    torch.manual_seed(0)
    config = ModelConfig(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=400, multiple_of=16, max_seq_len=128)
    assert config.kv_heads < config.n_heads  # grouped-query attention
    model = Llama(config).eval()
    short = [
        [{"role": "user", "content": "who ?"}, {"role": "assistant", "content": "Orin ."}],
        [{"role": "user", "content": "who ?"}, {"role": "assistant", "content": "Orin ."},
         {"role": "user", "content": "where ?"}, {"role": "assistant", "content": "the river ."}],
        [{"role": "system", "content": "be brief"}, {"role": "user", "content": "sum of 3 and 4 ?"},
         {"role": "assistant", "content": "7"}],
    ]
    examples = [encode_example(tokenizer, d, False) for d in short]
    lengths = [len(e.ids) for e in examples]
    assert sum(lengths) <= 128
    rows = pack(examples, 128)
    assert len(rows) == 1 and len(rows[0]) == 3
    batch = layout(rows, 128)
    with torch.no_grad():
        packed = model(batch.tokens, positions=batch.positions, mask=batch.attention_mask())[0]
        causal_only = model(batch.tokens)[0]  # plain causal attention, positions 0..127
        at = 0
        for example, n in zip(examples, lengths):
            alone = model(torch.tensor([example.ids]))[0]
            assert torch.allclose(packed[at : at + n], alone, atol=1e-5, rtol=0), (at, n)
            if at > 0:  # without the mask and positions, later examples would see earlier ones
                assert (causal_only[at : at + n] - alone).abs().max() > 1e-3
            at += n
