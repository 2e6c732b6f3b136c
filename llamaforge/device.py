"""Choosing the device a command runs on."""

from __future__ import annotations

from typing import Literal

import torch

from llamaforge.errors import UserError

DeviceName = Literal["auto", "cpu", "cuda"]


def resolve_device(name: DeviceName) -> torch.device:
    """`auto` picks CUDA when a GPU is visible, else the CPU; `cuda` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available")
    return torch.device(name)


def bf16_is_fast(device: torch.device) -> bool:
    """Whether bf16 compute beats fp32 here: on a GPU, and on a CPU whose oneDNN has bf16 matmul
    kernels (AVX-512 or AMX; on a 2-core Zen 4 the demo's pretraining ran 1.42x faster, docs/results.md).
    Other CPUs would emulate bf16, slower than fp32."""
    if device.type == "cuda":
        return True
    try:
        return device.type == "cpu" and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        return False
