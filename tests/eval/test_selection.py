"""Selection by a reward model measured by a judge (paper Fig. 7 asked of gold), by hand."""

import pytest
import torch

from llamaforge.eval.selection import selection_metrics, within_prompt_agreement


def test_selection_metrics_by_hand():
    judge = torch.tensor([[0.1, 1.0, 0.1, 0.2], [0.0, 0.0, 0.5, 0.1]])
    rm = torch.tensor([[0.0, 2.0, 1.0, 0.0], [3.0, 0.0, 1.0, 2.0]])
    m = selection_metrics(judge, rm, correct_at=0.8)
    # random: means 1.4/4 = 0.35 and 0.6/4 = 0.15 -> 0.25; the RM picks 1.0 and 0.0 -> 0.5;
    # the judge's best 1.0 and 0.5 -> 0.75; gap closed (0.5 - 0.25) / (0.75 - 0.25) = 0.5
    assert m["random"] == pytest.approx(0.25)
    assert m["rm_pick"] == pytest.approx(0.5)
    assert m["best"] == pytest.approx(0.75)
    assert m["gap_closed"] == pytest.approx(0.5)
    assert m["share_with_a_correct_sample"] == 0.5  # only the first prompt has a sample >= 0.8
    assert m["correlation"] == pytest.approx(float(torch.corrcoef(torch.stack([judge.flatten(), rm.flatten()]))[0, 1]))
    assert m["fig7_judge"]["4"]["max"] == pytest.approx(0.75)
    # within a prompt, the pairs the judge tells apart: prompt 1 (0,1) yes, (0,3) RM tie 1/2, (1,2) yes,
    # (1,3) yes, (2,3) no -> 3.5 of 5; prompt 2 (0,2) no, (0,3) no, (1,2) yes, (1,3) yes, (2,3) no -> 2 of 5
    assert m["within_prompt_agreement"] == pytest.approx(5.5 / 10)


def test_within_prompt_agreement_ignores_empty_answers_and_judge_ties():
    judge = torch.tensor([[0.1, 0.9, 0.9]])
    rm = torch.tensor([[float("-inf"), 1.0, 2.0]])  # the empty answer and the judge tie count for nothing
    assert within_prompt_agreement(judge, rm) is None
    assert within_prompt_agreement(judge, torch.tensor([[0.0, 1.0, -1.0]])) == pytest.approx(0.5)  # 1 of 2


def test_a_constant_judge_leaves_nothing_to_close():
    m = selection_metrics(torch.full((2, 3), 0.1), torch.randn(2, 3), correct_at=0.8)
    assert m["gap_closed"] is None and m["correlation"] is None and m["share_with_a_correct_sample"] == 0.0
    assert m["within_prompt_agreement"] is None
