"""Independent random streams of one run seed, by name.

Every consumer of randomness in a run draws from its own child of `numpy.random.SeedSequence(seed)`, keyed
by a stable id of the consumer's name and by what the draw is for (the round, the call, the prompt).
Children of one SeedSequence with different keys are independent streams (numpy's spawn guarantee), so no
two consumers share draws: seed s's probe stream is not seed s+1's data order, round r's sampling seed is
not round r+1's, and changing how many validation examples a run has does not move its training order.
"""

from __future__ import annotations

import zlib

import numpy as np

# The run's consumers of randomness; a name not listed here is a typo, not a new stream.
STREAMS = (
    "data_order",       # the training examples' order, one permutation per epoch (its state is checkpointed)
    "feedback_batch",   # the fixed validation mini-batch of gradient_gain / validation_gain
    "probes",           # each round's rerank probes, drawn from the validation split, and the samples scored of each
    "retest",           # each round's settled probes that are sampled and scored anyway (round.retest)
    "sampling",         # the generation engine's seed per round and call (each prompt then gets its own)
    "pairs",            # max_random pair draws, per round
    "score_noise",      # round.score_noise, per round
    "router",           # the bandit policy's own draws (tie breaks, Thompson samples)
    "evaluation",       # sampled evaluations (eval.temperature > 0), per round
    "embedder",         # the context embedder's random projection
    "dpo",              # the DPO step's seed per update (TRL's data order and dropout)
)
_MAX_SEED = 2 ** 63 - 1  # what torch.manual_seed and vLLM's per-request generators take


def _stream_id(name: str) -> int:
    if name not in STREAMS:
        raise ValueError(f"unknown random stream {name!r}; the run's streams are {list(STREAMS)}")
    return zlib.crc32(name.encode())


def _keys(keys: tuple[int, ...]) -> tuple[int, ...]:
    out = tuple(int(k) for k in keys)
    if any(k < 0 for k in out):
        raise ValueError(f"stream keys must be non-negative integers, got {keys}")
    return out


class Streams:
    """The named streams of run seed `seed`."""

    def __init__(self, seed: int):
        self.seed = int(seed)
        if self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed}")

    def sequence(self, name: str, *keys: int) -> np.random.SeedSequence:
        """The SeedSequence of stream `name` for `keys` (e.g. the round)."""
        return np.random.SeedSequence(self.seed, spawn_key=(_stream_id(name), *_keys(keys)))

    def rng(self, name: str, *keys: int) -> np.random.Generator:
        """A numpy Generator on stream `name` for `keys`."""
        return np.random.default_rng(self.sequence(name, *keys))

    def seed_for(self, name: str, *keys: int, bits: int = 63) -> int:
        """An integer seed on stream `name` for `keys`, for libraries seeded with an int: 63 bits (torch, vLLM),
        or 32 (`bits=32`: numpy's legacy global seed, which transformers' `set_seed` also sets, takes no more)."""
        return seed_of(self.sequence(name, *keys), bits)


def seed_of(sequence: np.random.SeedSequence, bits: int = 63) -> int:
    """An integer seed of `bits` bits (at most 63) drawn from `sequence`."""
    hi, lo = (int(x) for x in sequence.generate_state(2, np.uint32))
    return ((hi << 32) | lo) & ((1 << min(bits, 63)) - 1)


def item_seeds(seed: int, start: int, count: int) -> list[int]:
    """Seeds of items `start .. start + count - 1` of one call seeded by `seed`: item i's seed depends on
    (seed, i) only, so that two prompts in one call never share draws and a prompt's seed does not depend on
    how the call is split into batches."""
    root = int(seed) & _MAX_SEED
    return [seed_of(np.random.SeedSequence(root, spawn_key=(i,))) for i in range(start, start + count)]
