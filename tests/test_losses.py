"""llamaforge/losses.py against numbers computed by hand.

The reward models' ranking loss (paper eq. 1-2, §3.2.2) is -log sigmoid(r_c - r_r - m) =
log(1 + exp(-z)) with z = r_c - r_r - m. The four pairs below have score differences
r_c - r_r = 1, 0, -1, 3 and ratings significantly_better, better, slightly_better,
negligibly_better, so each margin preset of Table 27 gives:

  preset  margins           z                      log(1 + e^-z) per pair
  none    0, 0, 0, 0        1, 0, -1, 3            0.313262, 0.693147, 1.313262, 0.048587
  small   1, 2/3, 1/3, 0    0, -2/3, -4/3, 3       0.693147, 1.081037, 1.567296, 0.048587
  large   3, 2, 1, 0        -2, -2, -2, 3          2.126928, 2.126928, 2.126928, 0.048587

(log 2 = 0.693147; log(1 + e) = 1.313262; log(1 + e^-1) = 0.313262; log(1 + e^-3) = 0.048587;
log(1 + e^(2/3)) = 1.081037; log(1 + e^(4/3)) = 1.567296; log(1 + e^2) = 2.126928.)
"""

from __future__ import annotations

import math

import pytest
import torch

from llamaforge.losses import IGNORE_INDEX, MARGINS, RATINGS, next_token_loss, preference_loss

CHOSEN = [2.0, 0.5, 1.0, 3.0]
REJECTED = [1.0, 0.5, 2.0, 0.0]

PER_PAIR = {
    "none": [0.313262, 0.693147, 1.313262, 0.048587],
    "small": [0.693147, 1.081037, 1.567296, 0.048587],
    "large": [2.126928, 2.126928, 2.126928, 0.048587],
}
# Sums and means of the rows above, added by hand.
SUM = {"none": 2.368258, "small": 3.390067, "large": 6.429371}
MEAN = {"none": 0.592064, "small": 0.847517, "large": 1.607343}
# d mean / d r_c = -sigmoid(-z) / 4: sigmoid(-1) = 0.268941, sigmoid(0) = 0.5, sigmoid(1) = 0.731059,
# sigmoid(-3) = 0.047426, sigmoid(2/3) = 0.660756, sigmoid(4/3) = 0.791391, sigmoid(2) = 0.880797.
GRAD_CHOSEN = {
    "none": [-0.067235, -0.125000, -0.182765, -0.011856],
    "small": [-0.125000, -0.165189, -0.197848, -0.011856],
    "large": [-0.220199, -0.220199, -0.220199, -0.011856],
}


def margins_of(preset: str) -> torch.Tensor:
    return torch.tensor([MARGINS[preset][r] for r in RATINGS])


def test_margin_table_is_the_papers_table_27():
    assert RATINGS == ("significantly_better", "better", "slightly_better", "negligibly_better")
    assert [MARGINS["none"][r] for r in RATINGS] == [0.0, 0.0, 0.0, 0.0]
    assert [MARGINS["small"][r] for r in RATINGS] == pytest.approx([1.0, 2 / 3, 1 / 3, 0.0], abs=1e-12)
    assert [MARGINS["large"][r] for r in RATINGS] == [3.0, 2.0, 1.0, 0.0]


@pytest.mark.parametrize("preset", ["none", "small", "large"])
def test_preference_loss_per_pair_sum_and_mean(preset):
    chosen, rejected, margin = torch.tensor(CHOSEN), torch.tensor(REJECTED), margins_of(preset)
    for i in range(4):  # one pair at a time: the per-pair values of the table
        one = preference_loss(chosen[i : i + 1], rejected[i : i + 1], margin[i : i + 1])
        assert one.item() == pytest.approx(PER_PAIR[preset][i], abs=1e-6)
    assert preference_loss(chosen, rejected, margin).item() == pytest.approx(MEAN[preset], abs=1e-6)
    assert preference_loss(chosen, rejected, margin, reduction="sum").item() == pytest.approx(SUM[preset], abs=1e-6)


def test_default_margin_is_zero_and_scalar_margins_broadcast():
    chosen, rejected = torch.tensor(CHOSEN), torch.tensor(REJECTED)
    assert preference_loss(chosen, rejected).item() == pytest.approx(MEAN["none"], abs=1e-6)
    # margin 1 for every pair: z = 0, -1, -2, 2 -> log 2 + log(1+e) + log(1+e^2) + log(1+e^-2)
    expected = (0.693147 + 1.313262 + 2.126928 + 0.126928) / 4
    assert preference_loss(chosen, rejected, 1.0).item() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("preset", ["none", "small", "large"])
def test_preference_loss_gradients(preset):
    chosen = torch.tensor(CHOSEN, requires_grad=True)
    rejected = torch.tensor(REJECTED, requires_grad=True)
    preference_loss(chosen, rejected, margins_of(preset)).backward()
    assert chosen.grad.tolist() == pytest.approx(GRAD_CHOSEN[preset], abs=1e-6)
    # the loss depends on r_c - r_r only: the rejected gradient is the opposite
    assert rejected.grad.tolist() == pytest.approx([-g for g in GRAD_CHOSEN[preset]], abs=1e-6)

    chosen.grad = None  # the sum's gradient is N = 4 times the mean's
    preference_loss(chosen, rejected, margins_of(preset), reduction="sum").backward()
    assert chosen.grad.tolist() == pytest.approx([4 * g for g in GRAD_CHOSEN[preset]], abs=1e-5)


def test_preference_loss_is_stable_for_large_differences():
    # -log sigmoid(-200) = 200 + log(1 + e^-200) = 200 (a naive log(sigmoid(.)) gives inf)
    loss = preference_loss(torch.tensor([-100.0]), torch.tensor([100.0]))
    assert loss.item() == pytest.approx(200.0, abs=1e-4)
    # and a well-separated pair costs ~e^-200, not a NaN
    assert preference_loss(torch.tensor([100.0]), torch.tensor([-100.0])).item() == pytest.approx(0.0, abs=1e-30)


def test_preference_loss_margin_shifts_the_difference():
    # r_c - r_r = 0.5 with margin 0.5 is the same loss as r_c - r_r = 0 with no margin: log 2
    loss = preference_loss(torch.tensor([1.5]), torch.tensor([1.0]), torch.tensor([0.5]))
    assert loss.item() == pytest.approx(math.log(2), abs=1e-6)


def test_next_token_loss_sum_and_count():
    # V = 2; position 0: logits (0, 0), target 1 -> -log(1/2) = 0.693147
    #        position 1: logits (ln 3, 0), target 0 -> -log(3/4) = 0.287682
    #        position 2: ignored (its logits are extreme and would cost 200 if counted)
    logits = torch.tensor([[[0.0, 0.0], [math.log(3), 0.0], [100.0, -100.0]]])
    targets = torch.tensor([[1, 0, IGNORE_INDEX]])
    total, count = next_token_loss(logits, targets)
    assert total.item() == pytest.approx(0.693147 + 0.287682, abs=1e-5)  # 0.980829
    assert count.item() == 2

    # a second row adds its own terms: logits (0, ln 3), target 1 -> 0.287682; one ignored position
    logits2 = torch.cat([logits, torch.tensor([[[0.0, math.log(3)], [5.0, 5.0], [0.0, 0.0]]])])
    targets2 = torch.cat([targets, torch.tensor([[1, IGNORE_INDEX, IGNORE_INDEX]])])
    total2, count2 = next_token_loss(logits2, targets2)
    assert total2.item() == pytest.approx(0.693147 + 0.287682 + 0.287682, abs=1e-5)
    assert count2.item() == 3


def test_next_token_loss_upcasts_bf16_logits_and_all_ignored_is_zero():
    logits = torch.tensor([[[0.0, 0.0], [math.log(3), 0.0]]], dtype=torch.bfloat16)
    total, count = next_token_loss(logits, torch.tensor([[1, 0]]))
    assert total.dtype == torch.float32
    assert total.item() == pytest.approx(0.980829, abs=1e-2)  # bf16 holds ln 3 to ~3 digits
    total, count = next_token_loss(logits, torch.full((1, 2), IGNORE_INDEX))
    assert total.item() == 0.0 and count.item() == 0
