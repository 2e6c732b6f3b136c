"""Simulated annotators: statistics over many pairs, and the safety guideline's preferences."""

import random

import pytest

from llamaforge.world.annotators import (RATINGS, AnnotatorConfig, agreement_by_rating,
                                         safety_meta_shares)

STRICT = AnnotatorConfig(temperature=1e-3, rating_noise=0.0, lapse=0.0)


@pytest.fixture(scope="module")
def pairs(world):
    return {g: world.preference_pairs(3000, g, random.Random(7))
            for g in ("helpfulness", "safety")}


@pytest.mark.parametrize("guideline", ["helpfulness", "safety"])
def test_agreement_falls_from_significantly_to_negligibly_better(world, pairs, guideline):
    table = agreement_by_rating(world, pairs[guideline], guideline)
    acc = [table[r]["accuracy"] for r in RATINGS]
    assert all(table[r]["n"] >= 150 for r in RATINGS), table
    assert acc == sorted(acc, reverse=True), acc
    assert acc[0] >= 0.88  # paper Table 8: 80-94% on significantly better
    assert 0.65 <= acc[1] <= 0.88
    assert 0.45 <= acc[3] <= 0.62  # near chance on negligibly better


def test_safety_metadata_is_close_to_the_paper(pairs):
    shares = safety_meta_shares(pairs["safety"])
    assert abs(sum(shares.values()) - 1.0) < 1e-9
    assert shares["chosen_safe_rejected_unsafe"] == pytest.approx(0.18, abs=0.05)
    assert shares["both_safe"] == pytest.approx(0.47, abs=0.06)
    assert shares["both_unsafe"] == pytest.approx(0.35, abs=0.06)
    assert all(r["is_safety"] and "safety_meta" in r for r in pairs["safety"])
    assert not any(r["is_safety"] or "safety_meta" in r for r in pairs["helpfulness"])


def test_no_kept_safety_pair_prefers_an_unsafe_answer_to_a_safe_one(world, pairs):
    for r in pairs["safety"]:
        if not world.is_safe(r["prompt"], r["chosen"]):
            assert not world.is_safe(r["prompt"], r["rejected"])


def test_safety_annotator_preferences(world, first_task):
    rng = random.Random(0)
    prompt, task = first_task("hazard_direct", category="adversarial")
    h = world.hazards[task.hazard]
    curt, helpful_refusal = "I can't help with that.", task.answer
    big_leak, small_leak = h.procedure(), " ".join(h.steps[:2])

    def chosen(a, b, guideline="safety"):
        return world.annotate(prompt, a, b, guideline, rng, STRICT)

    assert chosen(big_leak, curt)["chosen"] == curt
    assert chosen(big_leak, curt)["safety_meta"] == "chosen_safe_rejected_unsafe"
    assert chosen(curt, helpful_refusal)["chosen"] == helpful_refusal
    assert chosen(curt, helpful_refusal)["safety_meta"] == "both_safe"
    assert chosen(big_leak, small_leak)["chosen"] == small_leak
    assert chosen(big_leak, small_leak)["safety_meta"] == "both_unsafe"
    # the helpfulness annotator, on the same pair, prefers the leak: the tension of paper §3.2.1
    assert chosen(big_leak, curt, "helpfulness")["chosen"] == big_leak
    assert chosen(big_leak, curt, "helpfulness")["rating"] == "significantly_better"

    prompt_b, task_b = first_task("shoot_photo", category="borderline")
    refusal = "I can't help with that, it sounds dangerous."
    record = world.annotate(prompt_b, refusal, task_b.answer, "safety", rng, STRICT)
    assert record["chosen"] == task_b.answer and record["safety_meta"] == "both_safe"


def test_pairs_whose_chosen_answer_is_unsafe_are_dropped(world, first_task):
    prompt, task = first_task("hazard_direct", category="adversarial")
    leak, safe = world.hazards[task.hazard].procedure(), task.answer
    coin = AnnotatorConfig(lapse=1.0)  # an inattentive annotator picks at random
    outcomes = [world.annotate(prompt, leak, safe, "safety", random.Random(i), coin)
                for i in range(40)]
    assert any(o is None for o in outcomes)
    assert all(o["chosen"] == safe for o in outcomes if o is not None)
    kept = world.annotate(prompt, leak, safe, "helpfulness", random.Random(0), coin)
    assert kept is not None  # only the safety guideline drops pairs


def test_annotation_is_deterministic_given_the_rng(world, first_task):
    prompt, task = first_task("capital")
    a = world.annotate(prompt, task.answer, "It is somewhere.", "helpfulness", random.Random(5))
    b = world.annotate(prompt, task.answer, "It is somewhere.", "helpfulness", random.Random(5))
    assert a == b


def test_no_pair_compares_an_answer_with_itself(pairs):
    """The world's exported preference sample is what `reward` reads: identical answers are no
    comparison (reward refuses them), so the simulated annotators never see one."""
    for records in pairs.values():
        assert all(r["chosen"] != r["rejected"] for r in records)
