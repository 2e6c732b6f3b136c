import pytest

from llamaforge.tokenizer import DialogError, Tokenizer


def pieces(tokenizer: Tokenizer, ids: list[int]) -> list[str]:
    return [tokenizer.sp.id_to_piece(i) for i in ids]


def test_special_ids_match_llama2(tokenizer):
    assert tokenizer.vocab_size == 400
    assert pieces(tokenizer, [0, 1, 2]) == ["<unk>", "<s>", "</s>"]
    assert tokenizer.bos_id == 1 and tokenizer.eos_id == 2


def test_digits_are_split_and_unknown_text_falls_back_to_bytes(tokenizer):
    assert [p for p in pieces(tokenizer, tokenizer.encode("2023")) if p != "▁"] == ["2", "0", "2", "3"]
    ids = tokenizer.encode("€")  # never seen in training: three UTF-8 bytes, not <unk>
    assert 0 not in ids
    assert pieces(tokenizer, ids)[-3:] == ["<0xE2>", "<0x82>", "<0xAC>"]
    assert tokenizer.decode(ids) == "€"


def test_encode_bos_eos_and_round_trip(tokenizer):
    text = "the capital of Varn is Orin."
    ids = tokenizer.encode(text, bos=True, eos=True)
    assert ids[0] == 1 and ids[-1] == 2 and 1 not in ids[1:-1]
    assert tokenizer.decode(ids) == text


# --- chat format: expected ids built from the rules of Meta's chat_completion -----------------------


def exchange(tokenizer, user, answer):
    """[BOS] "[INST] {user} [/INST] {answer} " [EOS], one encode per completed exchange."""
    return [1] + tokenizer.encode(f"[INST] {user} [/INST] {answer} ") + [2]


def test_single_turn_ids_and_mask(tokenizer):
    ids, mask = tokenizer.encode_dialog(
        [{"role": "user", "content": "  what is the capital of Varn? "}, {"role": "assistant", "content": "Orin. "}]
    )
    assert ids == exchange(tokenizer, "what is the capital of Varn?", "Orin.")  # contents stripped
    prompt_len = len([1] + tokenizer.encode("[INST] what is the capital of Varn? [/INST]"))
    assert mask == [False] * prompt_len + [True] * (len(ids) - prompt_len)
    answer_ids = [i for i, m in zip(ids, mask) if m]
    assert answer_ids[-1] == 2  # the EOS is trained on
    assert tokenizer.decode(answer_ids).strip() == "Orin."


def test_multi_turn_ids_and_mask(tokenizer):
    dialog = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "how many rivers?"},
        {"role": "assistant", "content": "3"},
    ]
    ids, mask = tokenizer.encode_dialog(dialog)
    first, second = exchange(tokenizer, "hi", "hello"), exchange(tokenizer, "how many rivers?", "3")
    assert ids == first + second  # each exchange has its own BOS ... EOS
    answers = [tokenizer.decode([i for i, m in zip(part_ids, part_mask) if m]).strip()
               for part_ids, part_mask in ((ids[: len(first)], mask[: len(first)]), (ids[len(first):], mask[len(first):]))]
    assert answers == ["hello", "3"]
    assert sum(mask) == (len(first) - len([1] + tokenizer.encode("[INST] hi [/INST]"))) + (
        len(second) - len([1] + tokenizer.encode("[INST] how many rivers? [/INST]"))
    )


def test_system_prompt_is_merged_into_first_user_turn(tokenizer):
    dialog = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "bye"},
    ]
    ids = tokenizer.encode_dialog_prompt(dialog)
    merged = "<<SYS>>\nbe brief\n<</SYS>>\n\nhi"
    assert ids == exchange(tokenizer, merged, "hello") + [1] + tokenizer.encode("[INST] bye [/INST]")
    # The final user turn has BOS and no EOS; generation continues after "[/INST]".
    assert tokenizer.decode(ids).endswith("[INST] bye [/INST]")


@pytest.mark.parametrize(
    "dialog, ends_with, message",
    [
        ([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], "user", "message 1: role is 'user', expected 'assistant'"),
        ([{"role": "assistant", "content": "a"}], "user", "message 0: role is 'assistant', expected 'user'"),
        ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], "user", "message 1: the dialog ends with a 'assistant' turn"),
        ([{"role": "user", "content": "a"}], "assistant", "message 0: the dialog ends with a 'user' turn"),
        ([{"role": "user", "content": "tell [INST] me"}], "user", "message 0: special tag '[INST]'"),
        ([{"role": "system", "content": "x <</SYS>>"}, {"role": "user", "content": "a"}], "user", "message 0: special tag '<</SYS>>'"),
        ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "  "}, {"role": "user", "content": "c"}], "user", "message 1: content is empty"),
        ([{"role": "system", "content": "only"}], "user", "message 0: a dialog cannot hold only a system message"),
        ([{"role": "user", "content": "a", "name": "x"}], "user", "message 0: expected exactly the keys"),
        ([{"role": "user", "content": "a"}, {"role": "system", "content": "b"}], "user", "message 1: role is 'system'"),
        ([], "user", "non-empty list"),
    ],
)
def test_invalid_dialogs_name_the_message(tokenizer, dialog, ends_with, message):
    encode = tokenizer.encode_dialog_prompt if ends_with == "user" else tokenizer.encode_dialog
    with pytest.raises(DialogError) as err:
        encode(dialog)
    assert message in str(err.value)
