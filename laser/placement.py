"""Where models live: the device and dtype names of a config resolved for this process.

`auto` is this process's GPU when CUDA is available (cuda:LOCAL_RANK under torchrun or accelerate), else
the CPU; `cuda` is this process's GPU; `cuda:N` is that GPU. A dtype of `auto` is bfloat16 on a GPU and
float32 on the CPU. torch is imported only when a name is resolved.
"""

from __future__ import annotations

import os

from laser.console import torch_dtype


def local_gpu() -> str:
    """This process's GPU: cuda:LOCAL_RANK of a multi-process launch, else cuda:0."""
    return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"


def resolve_device(name: str | None, default: str = "auto") -> str:
    """The torch device string of a config's device name (None: `default`)."""
    import torch

    name = name or default
    if name == "auto":
        return local_gpu() if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        return local_gpu()
    return name


def dtype_name(name: str, device: str) -> str:
    """The concrete dtype name (float32, bfloat16, float16) of a config's dtype on `device`."""
    return str(torch_dtype(name, device)).removeprefix("torch.")


def visible_gpus() -> int:
    """How many CUDA devices this process sees."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0
