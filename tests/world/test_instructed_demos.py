"""Instructed SFT demonstrations (paper §3.3 needs a model that follows an instruction before GAtt
can keep it over turns): answers obey their instruction, and each split uses its own instructions."""

import pytest

from llamaforge.world import constraint_followed, parse_instruction
from llamaforge.world.gatt import KINDS, Constraint, GattInstruction, obeying_answer


def instructed(dialogs):
    """(instruction, its text as given, where it was given, answer) of each instructed dialog."""
    found = []
    for d in dialogs:
        *prompt, answer = d["messages"]
        for where, message in (("system", prompt[0]), ("user", prompt[-1])):
            if message["role"] != where:
                continue
            try:
                instruction = parse_instruction(message["content"])
            except ValueError:
                continue
            given = message["content"] if where == "system" else message["content"][-len(instruction.short):]
            found.append((instruction, given, where, answer["content"]))
    return found


def test_instructed_demos_obey_the_training_instructions(world):
    dialogs = world.sft_dialogs("train")
    found = instructed(dialogs)
    single_helpful = sum(len(d["messages"]) <= 3 and world.task(d["messages"][:-1]).category == "helpful" for d in dialogs)
    assert len(found) == pytest.approx(0.35 * single_helpful, rel=0.15)
    assert all(constraint_followed(instruction, answer) for instruction, _, _, answer in found)
    train = {i.text for i in world.gatt_instructions("train")}
    assert {i.text for i, _, _, _ in found} <= train
    short = sum(g == i.short for i, g, _, _ in found)
    assert 0.35 < short / len(found) < 0.65  # "Figure: Napoleon" half the time
    assert 0.4 < sum(w == "system" for _, _, w, _ in found) / len(found) < 0.6
    assert {c.kind for i, _, _, _ in found for c in i.constraints} == set(KINDS)


def test_clean_test_demos_use_test_instructions_only(world):
    found = instructed(world.sft_dialogs("test"))
    test = {i.text for i in world.gatt_instructions("test")}
    assert found and {i.text for i, _, _, _ in found} <= test
    assert all(constraint_followed(i, a) for i, _, _, a in found)


def test_obeying_answer_applies_every_constraint():
    caps_end = GattInstruction((Constraint("caps"), Constraint("end_word", "friend")))
    assert obeying_answer(caps_end, "The capital is Kelm.") == "THE CAPITAL IS KELM, FRIEND."
    prefix_lower = GattInstruction((Constraint("prefix", "Aye"), Constraint("lower")))
    assert obeying_answer(prefix_lower, "Orla Venn lives in Kelm.") == "aye, orla venn lives in kelm."
    # the word limit cuts the answer's own words, never the introduction
    short = GattInstruction((Constraint("max_words", "8"), Constraint("character", "Orla Venn")))
    answer = obeying_answer(short, "There is a lot one could say here about Kelm.")
    assert answer == "Orla Venn here: There is a lot one" and constraint_followed(short, answer)
