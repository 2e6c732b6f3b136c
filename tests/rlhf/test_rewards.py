import math

import pytest
import torch

from llamaforge.rlhf.rewards import logit, penalized_reward, piecewise_reward, shaped_reward, whiten


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_piecewise_reward_follows_eq_3():
    # Four answers; raw scores -> sigmoid: 2 -> 0.8808, -1 -> 0.2689, -3 -> 0.0474, 1 -> 0.7311, 3 -> 0.9526.
    safety = torch.tensor([2.0, -1.0, -3.0, -3.0])
    helpfulness = torch.tensor([-1.0, 1.0, 3.0, 3.0])
    is_safety = torch.tensor([True, False, False, True])
    rc = piecewise_reward(safety, helpfulness, is_safety)
    expected = [
        sigmoid(2),  # safety prompt: Rs = 0.8808, whatever Rh
        sigmoid(1),  # helpful prompt, Rs = 0.2689 >= 0.15: Rh = 0.7311
        sigmoid(-3),  # helpful prompt, Rs = 0.0474 < 0.15: Rs, although Rh = 0.9526
        sigmoid(-3),  # safety prompt with a low safety score: Rs
    ]
    torch.testing.assert_close(rc, torch.tensor(expected), atol=1e-6, rtol=0)
    assert ((rc > 0) & (rc < 1)).all()


def test_piecewise_reward_threshold_is_strict():
    # sigmoid(0) = 0.5 exactly; with threshold 0.5, Rs = 0.5 is not below it: Rh = sigmoid(2) = 0.8808.
    # sigmoid(-0.001) = 0.49975 < 0.5: Rs.
    rc = piecewise_reward(torch.tensor([0.0, -0.001]), torch.tensor([2.0, 2.0]), torch.tensor([False, False]), 0.5)
    torch.testing.assert_close(rc, torch.tensor([sigmoid(2), sigmoid(-0.001)]), atol=1e-6, rtol=0)


def test_logit_is_clamped_to_finite_values():
    # float32 sigmoid(20) rounds to 1.0; clamped to 1 - 1e-6, logit = ln((1 - 1e-6) / 1e-6) = 13.8155.
    out = logit(torch.sigmoid(torch.tensor([20.0, -200.0, 1.0])))
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, torch.tensor([13.8155, -13.8155, 1.0]), atol=1e-3, rtol=0)


def test_whiten_uses_the_biased_variance():
    # [1, 2, 3, 4]: mean 2.5, squared deviations 2.25 + 0.25 + 0.25 + 2.25 = 5, biased variance 5 / 4
    # = 1.25, std 1.11803: whitened -1.5 / 1.11803 = -1.34164, -0.5 / 1.11803 = -0.44721, ...
    out = whiten(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    torch.testing.assert_close(out, torch.tensor([-1.34164, -0.44721, 0.44721, 1.34164]), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.pow(2).mean(), torch.tensor(1.0), atol=1e-6, rtol=0)


def test_whiten_over_a_mask_zeroes_the_rest():
    # (2, 3) values, the mask keeps 1, 2, 3, 4 (the statistics above); 100 and -7 are outside it.
    values = torch.tensor([[1.0, 2.0, 100.0], [3.0, 4.0, -7.0]])
    mask = torch.tensor([[True, True, False], [True, True, False]])
    out = whiten(values, mask)
    torch.testing.assert_close(out, torch.tensor([[-1.34164, -0.44721, 0.0], [0.44721, 1.34164, 0.0]]), atol=1e-5, rtol=0)


def test_whiten_without_shifting_the_mean_only_scales():
    # The whitened values above plus the mean 2.5: 1.15836, 2.05279, 2.94721, 3.84164.
    out = whiten(torch.tensor([1.0, 2.0, 3.0, 4.0, 50.0]), torch.tensor([True] * 4 + [False]), shift_mean=False)
    torch.testing.assert_close(out, torch.tensor([1.15836, 2.05279, 2.94721, 3.84164, 0.0]), atol=1e-5, rtol=0)


def test_whiten_of_constant_values_is_zero_not_nan():
    assert whiten(torch.full((3,), 0.7)).tolist() == [0.0, 0.0, 0.0]  # variance 0, guarded by eps
    assert whiten(torch.tensor([5.0]), torch.tensor([True])).tolist() == [0.0]  # one entry: biased var 0


def test_shaped_reward_whitens_the_logits():
    # logit(sigmoid(x)) = x, so Rc = sigmoid([1, 2, 3, 4]) shapes to the whitened [1, 2, 3, 4].
    rc = torch.sigmoid(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    torch.testing.assert_close(shaped_reward(rc), torch.tensor([-1.34164, -0.44721, 0.44721, 1.34164]), atol=1e-4, rtol=0)


def test_shaped_reward_of_groups_centers_each_prompt_then_whitens():
    # logits [0, 2 | 1, 1], two responses per prompt: centered [-1, 1 | 0, 0], whose mean square is
    # 0.5, so the whitened rewards are [-1, 1, 0, 0] / sqrt(0.5). A prompt the reward model scores
    # higher throughout ([5, 5]) changes nothing: its tied answers still get 0 (whitened over the
    # batch without groups they would get +0.94 each).
    rc = torch.sigmoid(torch.tensor([0.0, 2.0, 1.0, 1.0]))
    torch.testing.assert_close(shaped_reward(rc, group_size=2), torch.tensor([-1.41421, 1.41421, 0.0, 0.0]), atol=1e-4, rtol=0)
    shifted = torch.sigmoid(torch.tensor([0.0, 2.0, 5.0, 5.0]))  # a prompt scored higher throughout: same rewards
    torch.testing.assert_close(shaped_reward(shifted, group_size=2), torch.tensor([-1.41421, 1.41421, 0.0, 0.0]), atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="multiple"):
        shaped_reward(rc[:3], group_size=2)


def test_penalized_reward_subtracts_beta_times_the_summed_log_ratio():
    # Sequence 0: log-ratios 0.5 - 0.25 (the third token is padding): KL 0.25, R = 1 - 0.1 * 0.25 = 0.975.
    # Sequence 1: log-ratios -0.5 + 1 + 2 = 2.5, R = -1 - 0.1 * 2.5 = -1.25.
    logprobs = torch.tensor([[-1.0, -2.0, -9.0], [-1.5, -1.0, -0.5]])
    reference = torch.tensor([[-1.5, -1.75, 0.0], [-1.0, -2.0, -2.5]])
    mask = torch.tensor([[True, True, False], [True, True, True]])
    out = penalized_reward(torch.tensor([1.0, -1.0]), logprobs, reference, mask, beta=0.1)
    torch.testing.assert_close(out, torch.tensor([0.975, -1.25]), atol=1e-6, rtol=0)


@pytest.mark.parametrize("shape", [(7,), (3, 5)])
def test_whiten_has_zero_mean_and_unit_variance(shape):
    out = whiten(torch.randn(shape, generator=torch.Generator().manual_seed(0)) * 3 + 2)
    assert abs(out.mean().item()) < 1e-6 and abs(out.var(unbiased=False).item() - 1) < 1e-5
