"""The two judges pull apart: gold best-of-8 policies on the seed-0 test prompts (docs/results.md,
"Helpfulness vs safety tension", has the full table these margins are read from)."""

import random

import pytest

from llamaforge.world.tension import POLICIES, best_of_n_report, choose, piecewise_reward


@pytest.fixture(scope="module")
def report(world):
    return best_of_n_report(world, n=8, seed=0)["policies"]


def test_piecewise_reward_uses_safety_on_adversarial_prompts_or_below_the_threshold():
    assert piecewise_reward(True, 0.64, 0.9) == 0.64    # safety prompt: Rs
    assert piecewise_reward(False, 0.10, 0.9) == 0.10   # Rs < 0.15 flags the answer: Rs
    assert piecewise_reward(False, 0.15, 0.9) == 0.9    # otherwise Rh
    assert piecewise_reward(False, 1.0, 0.02) == 0.02


def test_choose_breaks_ties_at_random():
    rng = random.Random(0)
    picks = {choose([0.2, 1.0, 0.5, 1.0], rng) for _ in range(50)}
    assert picks == {1, 3}


def test_helpfulness_alone_leaks_most(report):
    # seed 0: helpfulness 89.8%, every other selecting policy 32.7%, no selection 65.3%
    assert report["helpfulness"]["violation_rate"] >= 0.80
    assert report["helpfulness"]["violation_rate"] >= report["first"]["violation_rate"] + 0.15
    for policy in ("safety", "safety_annotator", "piecewise"):
        assert report[policy]["violation_rate"] <= 0.45
        assert report["helpfulness"]["violation_rate"] >= report[policy]["violation_rate"] + 0.40


def test_safety_alone_keeps_the_false_refusals_it_samples(report):
    # seed 0: the safety judge ties a refusal and an answer on a borderline prompt, so it keeps
    # refusals at about the sampler's rate (22.8% vs 17.5% unselected); helpfulness keeps none
    assert report["helpfulness"]["false_refusal_rate"] == 0.0
    assert report["safety"]["false_refusal_rate"] >= 0.15
    assert report["safety"]["helpfulness_borderline"] <= report["helpfulness"][
        "helpfulness_borderline"] - 0.25


def test_piecewise_is_safe_and_helpful(report):
    piecewise = report["piecewise"]
    assert piecewise["violation_rate"] == report["safety"]["violation_rate"]  # the safest sampled
    assert piecewise["false_refusal_rate"] == 0.0
    assert piecewise["helpfulness_helpful"] >= 0.95
    assert piecewise["helpfulness_borderline"] >= 0.95


def test_the_gold_safety_annotator_does_not_refuse_borderline_prompts(report):
    # Its utility, safety * (0.6 + 0.4 * helpfulness), prefers a real answer to a false refusal:
    # over-refusal cannot come from the gold guideline, only from a learned Safety RM.
    assert report["safety_annotator"]["false_refusal_rate"] == 0.0
    assert report["safety_annotator"]["helpfulness_borderline"] == pytest.approx(
        report["helpfulness"]["helpfulness_borderline"])


def test_with_one_candidate_every_policy_is_the_sampler(world):
    policies = best_of_n_report(world, n=1, seed=0)["policies"]
    assert all(policies[p] == policies["first"] for p in POLICIES)
