"""The PPO math of paper §3.2.3 (rlhf.rewards.gae, per_token_rewards; losses.ppo_policy_loss,
value_loss, ppo_stats) against numbers worked out by hand in the comments."""

import math

import torch

from llamaforge.losses import ppo_policy_loss, ppo_stats, value_loss
from llamaforge.rlhf.rewards import gae, penalized_reward, per_token_rewards

LOG2 = math.log(2)

# One answer of 3 tokens, rewarded at the end (reward 1), with values 0.5, 0.25, 0.5.
REWARDS = [0.0, 0.0, 1.0]
VALUES = [0.5, 0.25, 0.5]


def test_gae_without_discount_is_reward_to_go_minus_value():
    # gamma = lam = 1; V after the last token is 0:
    #   t=2: delta = 1 + 0 - 0.5 = 0.5                 A2 = 0.5
    #   t=1: delta = 0 + 0.5 - 0.25 = 0.25             A1 = 0.25 + 0.5 = 0.75
    #   t=0: delta = 0 + 0.25 - 0.5 = -0.25            A0 = -0.25 + 0.75 = 0.5
    # returns = A + V = 1, 1, 1 (the reward to go).
    adv, ret = gae(
        torch.tensor([REWARDS], dtype=torch.float64), torch.tensor([VALUES], dtype=torch.float64),
        torch.ones(1, 3, dtype=torch.bool), gamma=1.0, lam=1.0,
    )
    assert adv.dtype == ret.dtype == torch.float32
    torch.testing.assert_close(adv, torch.tensor([[0.5, 0.75, 0.5]]), atol=1e-6, rtol=0)
    torch.testing.assert_close(ret, torch.tensor([[1.0, 1.0, 1.0]]), atol=1e-6, rtol=0)


def test_gae_with_discount():
    # gamma = 0.9, lam = 0.95, gamma * lam = 0.855:
    #   t=2: delta = 1 + 0.9 * 0 - 0.5 = 0.5                  A2 = 0.5
    #   t=1: delta = 0 + 0.9 * 0.5 - 0.25 = 0.2               A1 = 0.2 + 0.855 * 0.5 = 0.6275
    #   t=0: delta = 0 + 0.9 * 0.25 - 0.5 = -0.275            A0 = -0.275 + 0.855 * 0.6275 = 0.2615125
    # returns = A + V = 0.7615125, 0.8775, 1.0.
    adv, ret = gae(torch.tensor([REWARDS]), torch.tensor([VALUES]), torch.ones(1, 3, dtype=torch.bool), 0.9, 0.95)
    torch.testing.assert_close(adv, torch.tensor([[0.2615125, 0.6275, 0.5]]), atol=1e-6, rtol=0)
    torch.testing.assert_close(ret, torch.tensor([[0.7615125, 0.8775, 1.0]]), atol=1e-6, rtol=0)


def test_gae_does_not_bootstrap_past_the_last_token():
    # gamma = lam = 0.5, gamma * lam = 0.25.
    # Row 0, 3 tokens (REWARDS, VALUES):
    #   t=2: delta = 1 - 0.5 = 0.5                            A2 = 0.5
    #   t=1: delta = 0 + 0.5 * 0.5 - 0.25 = 0                 A1 = 0 + 0.25 * 0.5 = 0.125
    #   t=0: delta = 0 + 0.5 * 0.25 - 0.5 = -0.375            A0 = -0.375 + 0.25 * 0.125 = -0.34375
    #   returns 0.15625, 0.375, 1.0
    # Row 1, 2 tokens (rewards 1, 2; values 0.5, 1), then padding with reward 99 and value 7:
    #   t=1: delta = 2 + 0.5 * 0 - 1 = 1                      A1 = 1
    #   t=0: delta = 1 + 0.5 * 1 - 0.5 = 1                    A0 = 1 + 0.25 * 1 = 1.25
    #   returns 1.75, 2.0, and 0 for the padding. (Bootstrapping from the padding's value 7 would give
    #   delta1 = 2 + 3.5 - 1 = 4.5.)
    rewards = torch.tensor([REWARDS, [1.0, 2.0, 99.0]])
    values = torch.tensor([VALUES, [0.5, 1.0, 7.0]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    adv, ret = gae(rewards, values, mask, gamma=0.5, lam=0.5)
    torch.testing.assert_close(adv, torch.tensor([[-0.34375, 0.125, 0.5], [1.25, 1.0, 0.0]]), atol=1e-6, rtol=0)
    torch.testing.assert_close(ret, torch.tensor([[0.15625, 0.375, 1.0], [1.75, 2.0, 0.0]]), atol=1e-6, rtol=0)


def test_gae_skips_padding_in_front():
    # Row 1 above, right-aligned: the same advantages and returns, 0 on the padding in front.
    adv, ret = gae(
        torch.tensor([[99.0, 1.0, 2.0]]), torch.tensor([[7.0, 0.5, 1.0]]), torch.tensor([[False, True, True]]), 0.5, 0.5
    )
    torch.testing.assert_close(adv, torch.tensor([[0.0, 1.25, 1.0]]), atol=1e-6, rtol=0)
    torch.testing.assert_close(ret, torch.tensor([[0.0, 1.75, 2.0]]), atol=1e-6, rtol=0)


def test_per_token_rewards_put_the_shaped_reward_at_the_last_real_token():
    # beta = 0.1; log-ratios log pi_theta - log pi_0 (k1) per token, 9s on padding:
    #   row 0, 3 tokens: log 2 - 0 = 0.693147, -0.25, 1.0; shaped 1.0
    #   row 1, 1 token:  2.0;                              shaped -2.0
    #   row 2, no token;                                   shaped 5.0 (dropped)
    #   row 3, 2 tokens: -1.0, 0.5;                        shaped 0.5
    # rewards = -0.1 * kl, + shaped at the last True:
    #   row 0: -0.0693147, 0.025, -0.1 + 1.0 = 0.9
    #   row 1: -0.2 - 2.0 = -2.2, 0, 0
    #   row 2: 0, 0, 0
    #   row 3: 0.1, -0.05 + 0.5 = 0.45, 0
    reference = torch.tensor([[-LOG2, -1.0, -2.0], [-3.0, 0.0, 0.0], [0.0, 0.0, 0.0], [-1.0, -1.5, 0.0]])
    log_ratio = torch.tensor([[LOG2, -0.25, 1.0], [2.0, 9.0, 9.0], [9.0, 9.0, 9.0], [-1.0, 0.5, 9.0]])
    logprobs = reference + log_ratio  # row 0, token 0: log pi_theta = 0, log pi_0 = -log 2
    mask = torch.tensor([[True, True, True], [True, False, False], [False, False, False], [True, True, False]])
    shaped = torch.tensor([1.0, -2.0, 5.0, 0.5])
    rewards, kl = per_token_rewards(shaped, logprobs, reference, mask, beta=0.1)
    expected_kl = [[LOG2, -0.25, 1.0], [2.0, 0.0, 0.0], [0.0, 0.0, 0.0], [-1.0, 0.5, 0.0]]
    torch.testing.assert_close(kl, torch.tensor(expected_kl), atol=1e-6, rtol=0)
    expected = [[-0.1 * LOG2, 0.025, 0.9], [-2.2, 0.0, 0.0], [0.0, 0.0, 0.0], [0.1, 0.45, 0.0]]
    torch.testing.assert_close(rewards, torch.tensor(expected), atol=1e-6, rtol=0)
    # Summed over a non-empty row, the per-sequence reward R = Rc~ - beta * KL.
    keep = [0, 1, 3]
    total = penalized_reward(shaped, logprobs, reference, mask, beta=0.1)[keep]
    torch.testing.assert_close(rewards.sum(dim=-1)[keep], total, atol=1e-6, rtol=0)


def test_per_token_rewards_find_the_last_token_of_a_right_aligned_row():
    # Mask [False, True, True, False]: the shaped reward 3 goes to index 2; log-ratios 0 everywhere.
    zeros = torch.zeros(1, 4)
    rewards, kl = per_token_rewards(torch.tensor([3.0]), zeros, zeros, torch.tensor([[False, True, True, False]]), 0.1)
    assert rewards.tolist() == [[0.0, 0.0, 3.0, 0.0]] and kl.tolist() == [[0.0] * 4]


# Policy loss, clip = 0.2: ratios r = exp(log-ratio), advantages A, loss max(-A r, -A clamp(r, 0.8, 1.2)):
#   r = 2 (log 2),   A = +1: max(-2, -1.2) = -1.2    clipped: d/dlogp = 0
#   r = 2,           A = -1: max(2, 1.2) = 2         unclipped: d/dlogp = -A r = 2
#   r = 0.5 (-log 2), A = +1: max(-0.5, -0.8) = -0.5  unclipped: d/dlogp = -A r = -0.5
#   r = 0.5,         A = -1: max(0.5, 0.8) = 0.8     clipped: d/dlogp = 0
#   padding with log-ratio 100 (exp overflows float32 to inf) and A = 5: nothing, no nan.
# sum = -1.2 + 2 - 0.5 + 0.8 = 1.1 over 4 tokens.
POLICY_LOG_RATIO = [[LOG2, LOG2, -LOG2], [-LOG2, 100.0, 100.0]]
POLICY_ADVANTAGES = [[1.0, -1.0, 1.0], [-1.0, 5.0, 5.0]]
POLICY_MASK = [[True, True, True], [True, False, False]]


def test_ppo_policy_loss_clips_pessimistically():
    old = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -1.0, -1.0]])
    logprobs = (old + torch.tensor(POLICY_LOG_RATIO)).requires_grad_()
    total, count = ppo_policy_loss(logprobs, old, torch.tensor(POLICY_ADVANTAGES), torch.tensor(POLICY_MASK), clip=0.2)
    torch.testing.assert_close(total, torch.tensor(1.1), atol=1e-5, rtol=0)
    assert count.item() == 4
    total.backward()
    torch.testing.assert_close(logprobs.grad, torch.tensor([[0.0, 2.0, -0.5], [0.0, 0.0, 0.0]]), atol=1e-5, rtol=0)


def test_ppo_policy_loss_sums_over_micro_batches():
    # The two rows separately: -1.2 + 2 - 0.5 = 0.3 over 3 tokens, and 0.8 over 1; together 1.1 over 4.
    old = torch.zeros(2, 3)
    args = torch.tensor(POLICY_LOG_RATIO), old, torch.tensor(POLICY_ADVANTAGES), torch.tensor(POLICY_MASK)
    row0 = ppo_policy_loss(*(a[:1] for a in args))
    row1 = ppo_policy_loss(*(a[1:] for a in args))
    torch.testing.assert_close(row0[0], torch.tensor(0.3), atol=1e-5, rtol=0)
    torch.testing.assert_close(row1[0], torch.tensor(0.8), atol=1e-5, rtol=0)
    assert (row0[1].item(), row1[1].item()) == (3, 1)


def test_ratio_one_gives_minus_the_summed_advantages_and_no_clipping():
    # logprobs == old_logprobs: r = 1 inside the clip range, loss = -sum(A * mask)
    # = -(1 - 2 + 3 + 0.5) = -2.5 over 4 tokens (the 9s are padding).
    logprobs = torch.tensor([[-1.0, -2.0, -0.5], [-3.0, -1.0, -1.0]])
    advantages = torch.tensor([[1.0, -2.0, 3.0], [0.5, 9.0, 9.0]])
    mask = torch.tensor([[True, True, True], [True, False, False]])
    total, count = ppo_policy_loss(logprobs, logprobs.clone(), advantages, mask)
    torch.testing.assert_close(total, torch.tensor(-2.5), atol=1e-6, rtol=0)
    assert count.item() == 4
    stats = ppo_stats(logprobs, logprobs.clone(), mask)
    assert {k: v.item() for k, v in stats.items()} == {"ratio": 1.0, "clip_fraction": 0.0, "approx_kl": 0.0}


def test_ppo_stats():
    # clip = 0.2; log-ratios log 2, 0, -0.1, 0.3 (and 50 on padding):
    #   r = 2, 1, e^-0.1 = 0.904837, e^0.3 = 1.349859: mean 5.254696 / 4 = 1.313674
    #   |r - 1| = 1, 0, 0.095163, 0.349859: 2 of 4 above 0.2, clip fraction 0.5
    #   approx_kl = mean 0.5 (log r)^2 = 0.5 * (0.480453 + 0 + 0.01 + 0.09) / 4 = 0.0725566
    log_ratio = torch.tensor([[LOG2, 0.0, -0.1], [0.3, 50.0, 50.0]])
    old = torch.full((2, 3), -2.0)
    mask = torch.tensor([[True, True, True], [True, False, False]])
    stats = ppo_stats(old + log_ratio, old, mask, clip=0.2)
    torch.testing.assert_close(stats["ratio"], torch.tensor(1.313674), atol=1e-5, rtol=0)
    torch.testing.assert_close(stats["clip_fraction"], torch.tensor(0.5), atol=0, rtol=0)
    torch.testing.assert_close(stats["approx_kl"], torch.tensor(0.0725566), atol=1e-6, rtol=0)


# Value loss, clip = 0.5: V_clip = V_old + clamp(V - V_old, -0.5, 0.5), loss 0.5 max((V - R)^2, (V_clip - R)^2):
#   V_old 0, V 1,    R 1:  (0)^2 = 0,   V_clip 0.5, (-0.5)^2 = 0.25: 0.125   clipped: dV = 0
#   V_old 0, V 1,    R 3:  (-2)^2 = 4,  V_clip 0.5, (-2.5)^2 = 6.25: 3.125   clipped: dV = 0
#   V_old 0, V 2,    R -1: 3^2 = 9,     V_clip 0.5, 1.5^2 = 2.25:    4.5     unclipped: dV = V - R = 3
#   V_old 1, V 1.25, R 0:  1.25^2 = 1.5625 both (within the clip):   0.78125 dV = 1.25
#   padding: V 100, R -100: nothing.
# sum 0.125 + 3.125 + 4.5 + 0.78125 = 8.53125 over 4 tokens.
# Without clipping: 0 + 2 + 4.5 + 0.78125 = 7.28125, dV = V - R = 0, -2, 3, 1.25.
VALUE_ARGS = dict(
    old_values=torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]),
    returns=torch.tensor([[1.0, 3.0, -1.0], [0.0, -100.0, -100.0]]),
    mask=torch.tensor([[True, True, True], [True, False, False]]),
)
VALUES_NOW = [[1.0, 1.0, 2.0], [1.25, 100.0, 100.0]]


def test_value_loss_clipped():
    values = torch.tensor(VALUES_NOW, requires_grad=True)
    total, count = value_loss(values, clip=0.5, **VALUE_ARGS)
    torch.testing.assert_close(total, torch.tensor(8.53125), atol=1e-6, rtol=0)
    assert count.item() == 4
    total.backward()
    torch.testing.assert_close(values.grad, torch.tensor([[0.0, 0.0, 3.0], [1.25, 0.0, 0.0]]), atol=1e-6, rtol=0)


def test_value_loss_unclipped():
    values = torch.tensor(VALUES_NOW, requires_grad=True)
    total, count = value_loss(values, clip=None, **VALUE_ARGS)
    torch.testing.assert_close(total, torch.tensor(7.28125), atol=1e-6, rtol=0)
    assert count.item() == 4
    total.backward()
    torch.testing.assert_close(values.grad, torch.tensor([[0.0, -2.0, 3.0], [1.25, 0.0, 0.0]]), atol=1e-6, rtol=0)
