"""Selection by a reward model measured by a judge (paper Fig. 7 asked of gold), by hand."""

import pytest
import torch

from llamaforge.eval.selection import selection_metrics


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


def test_a_constant_judge_leaves_nothing_to_close():
    m = selection_metrics(torch.full((2, 3), 0.1), torch.randn(2, 3), correct_at=0.8)
    assert m["gap_closed"] is None and m["correlation"] is None and m["share_with_a_correct_sample"] == 0.0
