"""bf16 parameters with fp32 master weights (LoopConfig.precision = "bf16-params")."""

from __future__ import annotations

import pytest
import torch

from llamaforge.train.loop import LoopConfig
from llamaforge.train.optim import MasterWeightAdamW
from tests.train.test_loop import assert_same_state, fixed_tokens, read_metrics, run_train, state_of, stepped_batches


def constant_gradient_steps(optimizer_class, steps: int = 10) -> tuple[torch.nn.Parameter, torch.optim.Optimizer]:
    weight = torch.nn.Parameter(torch.ones(4, dtype=torch.bfloat16))
    optimizer = optimizer_class([weight], lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0)
    for _ in range(steps):
        weight.grad = torch.full((4,), 0.5, dtype=torch.bfloat16)
        optimizer.step()
    return weight, optimizer


def test_master_weights_keep_updates_that_bf16_rounds_away():
    # With a constant gradient Adam moves each weight by lr = 1e-3 per step. bf16 numbers just below
    # 1.0 are 1/256 apart, so a bf16 weight of 1.0 minus 1e-3 rounds back to 1.0, every step.
    plain, _ = constant_gradient_steps(torch.optim.AdamW)
    assert plain.tolist() == [1.0] * 4
    # The fp32 master reaches 1 - 10 * 1e-3 = 0.990; the bf16 weight is its nearest bf16 value,
    # 0.98828125 (= 253/256; the next one up, 0.9921875, is farther from 0.990).
    weight, optimizer = constant_gradient_steps(MasterWeightAdamW)
    master = optimizer.state[weight]["master"]
    assert master.dtype == torch.float32 and optimizer.state[weight]["exp_avg"].dtype == torch.float32
    torch.testing.assert_close(master, torch.full((4,), 0.990), atol=1e-6, rtol=0)
    assert weight.dtype == torch.bfloat16 and weight.tolist() == [0.98828125] * 4
    assert weight.grad.dtype == torch.bfloat16  # the parameter's own gradient is left as it was


def test_state_dict_round_trip_stays_fp32():
    weight, optimizer = constant_gradient_steps(MasterWeightAdamW, steps=3)
    fresh_weight = torch.nn.Parameter(weight.detach().clone())
    fresh = MasterWeightAdamW([fresh_weight], lr=1e-3)
    fresh.load_state_dict(optimizer.state_dict())
    for key in ("master", "exp_avg", "exp_avg_sq"):
        assert fresh.state[fresh_weight][key].dtype == torch.float32, key
        torch.testing.assert_close(fresh.state[fresh_weight][key], optimizer.state[weight][key], atol=0, rtol=0)


def test_training_with_bf16_params_resumes_exactly(tmp_path):
    cfg = LoopConfig(max_steps=6, lr=1e-2, warmup_steps=1, log_every=1, save_every=3, precision="bf16-params")

    def crash_in_step_5(model, batch):
        if batch["step"] == 4:
            raise RuntimeError("crash (simulated)")
        return model(batch["inputs"], targets=batch["targets"])[0]

    def loss(model, batch):
        assert model.output.weight.dtype == torch.bfloat16
        return model(batch["inputs"], targets=batch["targets"])[0]

    with pytest.raises(RuntimeError, match="simulated"):
        run_train(tmp_path / "run", cfg, stepped_batches, loss=crash_in_step_5)
    run_train(tmp_path / "run", cfg, stepped_batches, loss=loss)  # resumes from step 3
    run_train(tmp_path / "clean", cfg, stepped_batches, loss=loss)
    rerun, clean = read_metrics(tmp_path / "run"), read_metrics(tmp_path / "clean")
    assert [r["loss"] for r in rerun] == [r["loss"] for r in clean]
    assert_same_state(state_of(tmp_path / "run" / "model"), state_of(tmp_path / "clean" / "model"), atol=0)


def same_batch(step):
    tokens = fixed_tokens(2)
    return [{"inputs": tokens[:, :-1], "targets": tokens[:, 1:], "count": tokens[:, 1:].numel(), "tokens": tokens[:, :-1].numel()}]


def test_bf16_params_learn_like_fp32(tmp_path):
    # The same batch every step: the loss falls from about ln 128 = 4.85 to about 1.6 in 12 steps,
    # in both precisions alike (measured: final losses 1.606 fp32, 1.605 bf16-params).
    losses = {}
    for precision in ("fp32", "bf16-params"):
        cfg = LoopConfig(max_steps=12, lr=1e-2, warmup_steps=1, log_every=1, save_every=100, precision=precision)
        run_train(tmp_path / precision, cfg, same_batch)
        losses[precision] = [r["loss"] for r in read_metrics(tmp_path / precision)]
    assert losses["fp32"][-1] < losses["fp32"][0] - 1.0
    assert abs(losses["bf16-params"][-1] - losses["fp32"][-1]) < 0.1
