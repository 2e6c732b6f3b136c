"""Data parallelism from outside the model: process-group setup for torchrun, `parallelize()` (FSDP2
or DDP), gradient-sync control for accumulation, and consolidated state dicts for checkpoints.

A run under `torchrun --nproc_per_node N` gets its rank from the environment; without torchrun it
is a single process and every helper here is a no-op. The backend is gloo on CPU, NCCL on CUDA.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Literal

import torch
import torch.distributed as dist
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

ParallelMode = Literal["fsdp", "ddp"]


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_name: DeviceName) -> Distributed:
    """Join the process group torchrun describes in the environment, or run as one process."""
    device = resolve_device(device_name)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Distributed(device=device)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Distributed(rank=dist.get_rank(), world_size=world_size, device=device)


def close_distributed() -> None:
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def all_reduce_sum(value: torch.Tensor) -> torch.Tensor:
    """Sum over processes (identity for one process); every rank gets the same result."""
    if dist.is_initialized():
        value = value.clone()
        dist.all_reduce(value)
    return value


def parallelize(model: nn.Module, mode: ParallelMode, env: Distributed, bf16: bool) -> nn.Module:
    """Wrap `model` for data-parallel training; returns the module to call in the training step.

    FSDP2 shards each transformer block and then the rest of the model; with bf16 it computes in
    bf16 and reduces gradients in fp32, keeping fp32 master weights. DDP replicates the model.
    """
    if env.world_size == 1:
        return model
    if mode == "ddp":
        return DistributedDataParallel(model, device_ids=[env.device.index] if env.device.type == "cuda" else None)
    mesh = init_device_mesh(env.device.type, (env.world_size,))
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 else MixedPrecisionPolicy()
    for block in model.layers:
        fully_shard(block, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    return model


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
