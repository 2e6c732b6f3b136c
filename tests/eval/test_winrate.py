"""Order-swapped win/tie/loss (paper §3.4.2), by hand."""

import pytest

from llamaforge.eval.winrate import order_swapped, score_judge, win_tie_loss

PROMPT = [{"role": "user", "content": "q"}]


def test_a_win_needs_both_orders():
    fair = score_judge(lambda prompt, response: len(response))

    def first_biased(prompt, first, second):  # always prefers whatever it reads first
        return "first"

    assert order_swapped(fair, PROMPT, "long answer", "short") == 1
    assert order_swapped(fair, PROMPT, "short", "long answer") == -1
    assert order_swapped(fair, PROMPT, "same", "four") == 0  # equal scores tie
    assert order_swapped(first_biased, PROMPT, "x", "y") == 0  # the verdict flips with the order: a tie


def test_win_tie_loss_fractions_and_win_rate():
    judge = score_judge(lambda prompt, response: float(response))
    # A vs B: 3 > 1 win, 2 = 2 tie, 1 < 5 loss, 4 > 0 win
    result = win_tie_loss(judge, [PROMPT] * 4, ["3", "2", "1", "4"], ["1", "2", "5", "0"])
    assert result == pytest.approx({"win": 0.5, "tie": 0.25, "loss": 0.25, "win_rate": 0.625, "pairs": 4})
    with pytest.raises(ValueError):
        win_tie_loss(judge, [PROMPT], ["1", "2"], ["1"])
