"""Compiled transformer blocks (the training fast path) compute what the eager model computes."""

import copy

import torch

from llamaforge.config import ModelConfig
from llamaforge.model import Llama


def test_compiled_blocks_match_eager_logits_and_gradients():
    torch.manual_seed(0)
    eager = Llama(ModelConfig(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=128, multiple_of=16, max_seq_len=64))
    compiled = copy.deepcopy(eager)
    for block in compiled.layers:
        block.compile()
    tokens = torch.randint(0, 128, (2, 24))
    targets = torch.randint(0, 128, (2, 24))
    torch.testing.assert_close(compiled(tokens), eager(tokens), atol=1e-4, rtol=1e-4)
    for model in (eager, compiled):
        model(tokens, targets=targets)[0].backward()
    torch.testing.assert_close(
        compiled.layers[0].attention.wq.weight.grad, eager.layers[0].attention.wq.weight.grad, atol=1e-4, rtol=1e-3
    )
