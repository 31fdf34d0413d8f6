"""Small shared helpers of the commands: status lines and torch dtype names (defined once here)."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

from tqdm.auto import tqdm

log = logging.getLogger("laser")

DTYPE_NAMES = ("float32", "bfloat16", "float16")


def say(command: str, msg: str, progress: bool = True, file: TextIO | None = None) -> None:
    """One status line, `[laser <command>] msg`, written around any progress bar (tqdm.write) when `progress`,
    to `file` (default stdout); always logged."""
    if progress:
        tqdm.write(f"[laser {command}] {msg}", file=file or sys.stdout)
    log.info("%s: %s", command, msg)


def torch_dtype(name: str, device: str = "cpu"):
    """The torch dtype of a config's dtype name; 'auto' is bfloat16 on a GPU and float32 on CPU."""
    import torch

    if name == "auto":
        return torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    if name not in DTYPE_NAMES:
        raise ValueError(f"dtype must be one of auto, {', '.join(DTYPE_NAMES)}; got {name!r}")
    return getattr(torch, name)
