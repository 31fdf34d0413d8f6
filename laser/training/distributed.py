"""Several processes (`accelerate launch`, torchrun): the round's decisions are made once, on rank 0.

Every rank runs the same round, so that TRL/accelerate can spread the DPO step over the GPUs (DDP,
DeepSpeed ZeRO, FSDP). Decisions with randomness or accumulated state (the RM assignment, the bandit
feedback) are taken on rank 0 and broadcast, so that every rank trains on the same pairs and updates
the same router. In a single process these calls return their input.
"""

from __future__ import annotations

from typing import TypeVar

T = TypeVar("T")


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
