"""Several processes (`accelerate launch`, torchrun): the round's decisions are made once, on rank 0.

Every rank runs the same round, so that TRL/accelerate can spread the DPO step over the GPUs (DDP;
`laser.training.dpo` says why FSDP and DeepSpeed are refused). Decisions with randomness or
accumulated state (the RM assignment, the bandit feedback) are taken on rank 0 and broadcast, so that
every rank trains on the same pairs and updates the same router. The run directory (its lock, config,
metrics, checkpoints, report) belongs to rank 0. In a single process these calls return their input.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def init_distributed() -> None:
    """Join the process group of a multi-process launch (torchrun, `accelerate launch`: WORLD_SIZE > 1)
    before the first collective call; a no-op in a single process or once joined. accelerate picks the
    backend (NCCL on GPUs, gloo on CPU) and TRL's trainers reuse the same state."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from accelerate import PartialState

        PartialState()


def world() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) without an initialized process group."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main_process() -> bool:
    """Whether this process is rank 0 (the one that writes metrics and checkpoints)."""
    return world()[0] == 0


def broadcast_from_main(obj: T) -> T:
    """Rank 0's `obj` on every rank (any picklable object)."""
    import torch.distributed as dist

    if world()[1] == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def main_first(fn: Callable[[], T]) -> T:
    """`fn()` run on rank 0 only; every rank returns rank 0's result, or raises its exception."""
    error: Exception | None = None
    result = None
    if is_main_process():
        try:
            result = fn()
        except Exception as e:  # handed to the other ranks, then raised everywhere
            error = e
    error, result = broadcast_from_main((error, result))
    if error is not None:
        raise error
    return result
