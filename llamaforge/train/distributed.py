"""Data parallelism from outside the model: process-group setup for torchrun (`distributed_run`),
`parallelize()` (torch.compile and activation checkpointing of each transformer block, then FSDP2 or
DDP), gradient-sync control for accumulation, and consolidated state dicts for checkpoints.

A run under `torchrun --nproc_per_node N` gets its rank from the environment; without torchrun it
is a single process and every helper here is a no-op. The backend is gloo on CPU, NCCL on CUDA.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, Protocol

import torch
import torch.distributed as dist
import torch.utils.checkpoint
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.nn.parallel import DistributedDataParallel

from llamaforge.device import DeviceName, resolve_device
from llamaforge.model import Block

ParallelMode = Literal["fsdp", "ddp"]


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def print(self, *args, **kwargs) -> None:
        """`print` on the main process only (what a stage tells its user once, not once per process)."""
        if self.is_main:
            print(*args, **kwargs)


def launched_world_size() -> int:
    """How many processes torchrun started (WORLD_SIZE in the environment; 1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_distributed(device_name: DeviceName) -> Distributed:
    """Join the process group torchrun describes in the environment, or run as one process."""
    device = resolve_device(device_name)
    world_size = launched_world_size()
    if world_size == 1:
        return Distributed(device=device)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Distributed(rank=dist.get_rank(), world_size=world_size, device=device)


def close_distributed(barrier: bool = True) -> None:
    """Leave the process group (after waiting for the other processes, unless `barrier` is False)."""
    if dist.is_initialized():
        if barrier:
            dist.barrier()
        dist.destroy_process_group()


@contextlib.contextmanager
def distributed_run(device_name: DeviceName) -> Iterator[Distributed]:
    """`with distributed_run(args.device) as env:` the skeleton of every stage's main: join the process
    group (or run as one process), and leave it however the body ends. On an exception the barrier
    is skipped: the other processes may never reach it (torchrun stops them when this one exits)."""
    env = init_distributed(device_name)
    try:
        yield env
    except BaseException:
        close_distributed(barrier=False)
        raise
    close_distributed()


def all_reduce_sum(value: torch.Tensor) -> torch.Tensor:
    """Sum over processes (identity for one process); every rank gets the same result."""
    if dist.is_initialized():
        value = value.clone()
        dist.all_reduce(value)
    return value


class ParallelConfig(Protocol):
    """What `parallelize` reads from a stage's configuration (loop.LoopConfig has these fields)."""

    compile: bool
    activation_checkpointing: bool
    parallel: ParallelMode


def transformer_blocks(model: nn.Module) -> list[Block]:
    """Every transformer block of `model`, found through the module tree (a Llama's `layers`, a
    RewardModel's `trunk.layers`, ...), in order."""
    return [module for module in model.modules() if isinstance(module, Block)]


def parallelize(model: nn.Module, cfg: ParallelConfig, env: Distributed, bf16: bool = False) -> nn.Module:
    """Prepare `model` for training, in place; returns the module to call in the training step.

    In order: activation checkpointing (cfg.activation_checkpointing: each block's activations are
    recomputed in the backward pass), torch.compile of each block (cfg.compile: the compiled call
    includes the checkpointed forward), then, under torchrun, data parallelism (cfg.parallel):
    FSDP2 shards each block and then the rest of the model, and with `bf16` computes in bf16 and
    reduces gradients in fp32 while the shards stay fp32; DDP replicates the model. Parameter names
    never change, so checkpoints read the same whichever options a run used.
    """
    blocks = transformer_blocks(model)
    if cfg.activation_checkpointing:
        for block in blocks:
            block.forward = _checkpointed(block.forward)
    if cfg.compile:
        for block in blocks:
            block.compile()
    if env.world_size == 1:
        return model
    if cfg.parallel == "ddp":
        return DistributedDataParallel(model, device_ids=[env.device.index] if env.device.type == "cuda" else None)
    mesh = init_device_mesh(env.device.type, (env.world_size,))
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 else MixedPrecisionPolicy()
    for block in blocks:
        fully_shard(block, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    return model


def _checkpointed(forward):
    # Replaces a block's forward by a checkpointed call of itself: parameter names are unchanged.
    def run(*args, **kwargs):
        return torch.utils.checkpoint.checkpoint(forward, *args, use_reentrant=False, **kwargs)

    run.checkpointed = forward  # what it wraps (tests look for it)
    return run


@contextlib.contextmanager
def gradient_sync(train_model: nn.Module, enabled: bool):
    """Skip the gradient all-reduce on all but the last micro-batch of an accumulated step."""
    if isinstance(train_model, DistributedDataParallel) and not enabled:
        with train_model.no_sync():
            yield
        return
    if isinstance(train_model, FSDPModule):
        train_model.set_requires_gradient_sync(enabled)
    yield


_FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def full_model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The unsharded model state on CPU (on rank 0; other ranks get an empty dict). Collective."""
    return get_model_state_dict(model, options=_FULL)


def full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """The unsharded optimizer state keyed by parameter name (rank 0 only). Collective."""
    return get_optimizer_state_dict(model, optimizer, options=_FULL)


def load_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Load a full optimizer state saved by any number of processes into this run's sharding."""
    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))
