"""The chunked output-layer loss equals the plain cross-entropy on full logits, value and gradients."""

import pytest
import torch

from llamaforge.config import ModelConfig
from llamaforge.losses import IGNORE_INDEX, chunked_next_token_loss, next_token_loss
from llamaforge.model import Llama


@pytest.mark.parametrize("chunk_size", [1, 7, 64, 1000])
def test_chunked_loss_equals_plain_loss_and_gradients(chunk_size):
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(3, 11, 16, generator=generator, requires_grad=True)
    weight = torch.randn(50, 16, generator=generator, requires_grad=True)
    targets = torch.randint(0, 50, (3, 11), generator=generator)
    targets[0, :4] = IGNORE_INDEX  # e.g. prompt tokens
    targets[2, -1] = IGNORE_INDEX

    plain, plain_count = next_token_loss(hidden @ weight.T, targets)
    plain.backward()
    plain_grads = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None

    chunked, count = chunked_next_token_loss(hidden, weight, targets, chunk_size)
    chunked.backward()
    assert int(count) == int(plain_count) == 33 - 5
    torch.testing.assert_close(chunked, plain, atol=1e-4, rtol=1e-6)
    torch.testing.assert_close(hidden.grad, plain_grads[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(weight.grad, plain_grads[1], atol=1e-5, rtol=1e-5)


def test_model_forward_with_targets_matches_logits_loss():
    torch.manual_seed(0)
    model = Llama(ModelConfig(dim=32, n_layers=1, n_heads=4, n_kv_heads=2, vocab_size=64, multiple_of=16, max_seq_len=32))
    tokens = torch.randint(0, 64, (2, 9))
    targets = torch.randint(0, 64, (2, 9))
    total, count = model(tokens, targets=targets)
    expected, expected_count = next_token_loss(model(tokens), targets)
    torch.testing.assert_close(total, expected, atol=1e-4, rtol=1e-6)
    assert int(count) == int(expected_count) == 18
    total.backward()
    lean_grad = model.output.weight.grad.clone()
    model.zero_grad()
    expected.backward()
    torch.testing.assert_close(lean_grad, model.output.weight.grad, atol=1e-5, rtol=1e-5)


def test_bf16_autocast_runs_the_products_in_bf16_and_stays_close():
    generator = torch.Generator().manual_seed(1)
    hidden = torch.randn(40, 16, generator=generator)
    weight = torch.randn(30, 16, generator=generator)
    targets = torch.randint(0, 30, (40,), generator=generator)
    exact, _ = chunked_next_token_loss(hidden, weight, targets, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        approx, _ = chunked_next_token_loss(hidden, weight, targets, 8)
    assert approx.dtype == torch.float32
    assert 0 < abs(approx.item() - exact.item()) / exact.item() < 2e-2  # bf16 products: close, not equal


def test_frozen_output_layer_and_no_grad():
    # A frozen output weight (LoRA) gets no gradient; under no_grad (validation) nothing is stored.
    generator = torch.Generator().manual_seed(2)
    hidden = torch.randn(2, 5, 8, generator=generator, requires_grad=True)
    weight = torch.randn(30, 8, generator=generator)
    targets = torch.randint(0, 30, (2, 5), generator=generator)
    total, _ = chunked_next_token_loss(hidden, weight, targets, chunk_size=3)
    total.backward()
    plain_hidden = hidden.detach().clone().requires_grad_()
    next_token_loss(plain_hidden @ weight.T, targets)[0].backward()
    torch.testing.assert_close(hidden.grad, plain_hidden.grad, atol=1e-5, rtol=1e-5)
    assert weight.grad is None
    with torch.no_grad():
        value, count = chunked_next_token_loss(hidden, weight, targets)
    torch.testing.assert_close(value, total.detach())
    assert not value.requires_grad and int(count) == 10
