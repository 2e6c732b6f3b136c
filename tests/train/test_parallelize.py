"""`parallelize` (llamaforge/train/distributed.py): activation checkpointing and torch.compile reach
every transformer block through the module tree, a RewardModel's trunk blocks included."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import pytest
import torch

from llamaforge import Llama, ModelConfig
from llamaforge.model import Block, RewardModel
from llamaforge.train.distributed import Distributed, parallelize, transformer_blocks
from llamaforge.train.loop import LoopConfig

CONFIG = ModelConfig(dim=64, n_layers=3, n_heads=4, n_kv_heads=2, vocab_size=128, multiple_of=16, max_seq_len=64)


@dataclass
class Flags:  # parallelize reads these three fields of any configuration
    compile: bool = False
    activation_checkpointing: bool = False
    parallel: str = "fsdp"


def reward_model() -> RewardModel:
    torch.manual_seed(0)
    return RewardModel(CONFIG)


def test_blocks_are_found_through_the_module_tree():
    model = reward_model()
    assert not hasattr(model, "layers")  # the loop needs no such attribute any more
    blocks = transformer_blocks(model)
    assert len(blocks) == CONFIG.n_layers and blocks == list(model.trunk.layers)
    assert all(isinstance(b, Block) for b in blocks)


def attention_calls(model) -> list[int]:
    """Per block, how many times its attention ran in one forward + backward of the model."""
    calls = [0] * CONFIG.n_layers
    for i, block in enumerate(transformer_blocks(model)):
        block.attention.register_forward_hook(lambda *_, i=i: calls.__setitem__(i, calls[i] + 1))
    tokens = torch.randint(0, CONFIG.vocab_size, (2, 12), generator=torch.Generator().manual_seed(1))
    real = torch.ones(2, 12, dtype=torch.bool)
    real[1, 9:] = False
    model(tokens, real).sum().backward()
    return calls


def test_activation_checkpointing_recomputes_every_block_of_a_reward_model():
    plain, checkpointed = reward_model(), reward_model()
    keys = list(checkpointed.state_dict())
    train_model = parallelize(checkpointed, Flags(activation_checkpointing=True), Distributed())
    assert train_model is checkpointed  # one process: no wrapper
    assert list(checkpointed.state_dict()) == keys  # parameter names unchanged: checkpoints read the same
    assert attention_calls(plain) == [1] * CONFIG.n_layers
    assert attention_calls(checkpointed) == [2] * CONFIG.n_layers  # forward, and again in the backward
    for (name, a), (_, b) in zip(plain.named_parameters(), checkpointed.named_parameters()):
        if a.grad is not None:
            torch.testing.assert_close(a.grad, b.grad, atol=1e-6, rtol=1e-5, msg=name)


@pytest.mark.parametrize("make", [reward_model, lambda: Llama(CONFIG)], ids=["reward_model", "llama"])
def test_compile_wraps_every_block(make):
    model = make()
    assert all(b._compiled_call_impl is None for b in transformer_blocks(model))
    parallelize(model, LoopConfig(compile=True), Distributed())  # a stage's own configuration works too
    blocks = transformer_blocks(model)
    assert len(blocks) == CONFIG.n_layers
    assert all(b._compiled_call_impl is not None for b in blocks)  # compiled on first call (nn.Module.compile)


def test_both_options_together_on_a_reward_model():
    model = reward_model()
    before = copy.deepcopy(model.state_dict())
    parallelize(model, Flags(compile=True, activation_checkpointing=True), Distributed())
    for block in transformer_blocks(model):
        assert block._compiled_call_impl is not None and hasattr(block.forward, "checkpointed")
    assert model.state_dict().keys() == before.keys()
