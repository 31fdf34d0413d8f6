"""Several processes (`accelerate launch`, torchrun): the round's work is shared, its decisions made once.

Every rank runs the same round, so that TRL/accelerate can spread the DPO step over the GPUs (DDP;
`laser.training.dpo` says why FSDP and DeepSpeed are refused). The round's work is split: each rank
samples and embeds its share of the prompts (`ShardedEngine`, `ShardedEmbedder`) and runs its share of
the RMs' forward passes (`ranks()`, see `laser.strategies.scoring`), and every rank then holds the whole
batch. Decisions with randomness or accumulated state (the RM assignment, the pairs, the bandit feedback)
are taken on rank 0 and broadcast, so that every rank trains on the same pairs and updates the same
router. The run directory (its lock, config, metrics, checkpoints, report) belongs to rank 0. In a
single process these calls return their input.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np
import torch.distributed as dist

from laser.generation import Candidates
from laser.strategies.scoring import Ranks

T = TypeVar("T")


def init_distributed() -> None:
    """Join the process group of a multi-process launch (torchrun, `accelerate launch`: WORLD_SIZE > 1)
    before the first collective call; a no-op in a single process or once joined. accelerate picks the
    backend (NCCL on GPUs, gloo on CPU) and TRL's trainers reuse the same state."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from accelerate import PartialState

        PartialState()


def world() -> tuple[int, int]:
    """(rank, world size) of this process: the process group's, else the launcher's (RANK, WORLD_SIZE: an
    in-process vLLM engine tears the group down when it closes, and rank 1 must not then take itself for
    rank 0), else (0, 1)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    size = int(os.environ.get("WORLD_SIZE", "1"))
    return (int(os.environ.get("RANK", "0")), size) if size > 1 else (0, 1)


def is_main_process() -> bool:
    """Whether this process is rank 0 (the one that writes metrics and checkpoints)."""
    return world()[0] == 0


def broadcast_from_main(obj: T) -> T:
    """Rank 0's `obj` on every rank (any picklable object)."""
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


def barrier() -> None:
    """Wait until every rank gets here (nothing to wait for in one process)."""
    if world()[1] > 1:
        dist.barrier()


def gather_from_ranks(obj: T) -> list[T]:
    """Every rank's `obj`, in rank order, on every rank (any picklable object)."""
    size = world()[1]
    if size == 1:
        return [obj]
    out: list = [None] * size
    dist.all_gather_object(out, obj)
    return out


def ranks():
    """The `laser.strategies.scoring.Ranks` of this launch (scoring shared across the ranks), or None in a single
    process."""
    rank, size = world()
    return Ranks(rank, size, gather_from_ranks) if size > 1 else None


def map_shards(fn: Callable[[list], list], items: Sequence) -> list:
    """`fn(items)` computed in shares: each rank applies `fn` to its contiguous share of `items` (a list of one
    result per item), and every rank gets the results of all, in order. An error on any rank is raised on every
    rank (none is left waiting)."""
    items = list(items)
    group = ranks()
    if group is None:
        return fn(items)
    share = items[group.share(len(items))]
    parts = group.run(lambda: list(fn(share)) if share else [])
    return [r for part in parts for r in part]


class ShardedEngine:
    """A generation engine whose `sample` and `greedy` each rank runs on its share of the prompts; every rank
    gets every prompt's samples. With vLLM each prompt samples with its own seed, from the call's seed and its
    place in the whole call, so the shares draw what one process would; the HF engine seeds a whole batch, so its
    samples depend on the share.
    Everything else is the wrapped engine's (weight sync, renderer, stats of this rank's share)."""

    def __init__(self, engine):
        self.engine = engine

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def sample(self, prompts: Sequence[str], **kwargs):
        prompts, group = list(prompts), ranks()
        if group is None:
            return self.engine.sample(prompts, **kwargs)
        share = group.share(len(prompts))
        parts = group.run(lambda: self.engine.sample(prompts[share], first_index=share.start or 0, **kwargs))
        return Candidates(prompts, [g for part in parts for g in part.samples],
                          prompts_truncated=sum(part.prompts_truncated for part in parts))

    def greedy(self, prompts: Sequence[str], max_new_tokens: int = 64, stop: Sequence[str] | None = None,
               logprobs: bool = False):
        return self.sample(prompts, n=1, temperature=0.0, max_new_tokens=max_new_tokens, stop=stop, logprobs=logprobs)


class ShardedEmbedder:
    """A context embedder whose `embed` each rank runs on its share of the prompts; every rank gets every row."""

    def __init__(self, embedder):
        self.embedder = embedder

    def __getattr__(self, name):
        return getattr(self.embedder, name)

    def embed(self, prompts: Sequence[str]) -> np.ndarray:
        rows = map_shards(lambda share: list(self.embedder.embed(share)), prompts)
        return np.stack(rows).astype(np.float32) if rows else np.zeros((0, self.embedder.dim), dtype=np.float32)


def shard_work(engine, embedder):
    """(engine, embedder) sharing their work across the ranks of a multi-process launch; as given in one process."""
    if world()[1] == 1:
        return engine, embedder
    return ShardedEngine(engine), ShardedEmbedder(embedder)
