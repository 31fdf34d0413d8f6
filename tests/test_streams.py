"""Named random streams: independent per consumer, round and seed; per-prompt sampling seeds."""

from __future__ import annotations

import numpy as np
import pytest

from laser.streams import STREAMS, Streams, item_seeds


def test_every_stream_round_and_seed_draws_its_own_numbers():
    draws = {}
    for seed in (0, 1):
        for name in STREAMS:
            for key in (0, 1):
                draws[seed, name, key] = tuple(Streams(seed).rng(name, key).integers(0, 2 ** 62, size=4))
    assert len(set(draws.values())) == len(draws)  # no two (seed, stream, round) share a draw
    # The collisions of plain integer seeds: seed s's validation sample was seed s+1's data order, and round r's
    # sampling seed (seed * c + r) met another seed's rounds.
    assert Streams(0).rng("feedback_batch").permutation(100).tolist() != \
        Streams(1).rng("data_order").permutation(100).tolist()
    assert Streams(0).rng("probes", 1).random() != Streams(1).rng("data_order").random()
    # ... and a stream is a function of (seed, name, keys) only: what a resumed run draws again.
    assert Streams(3).seed_for("sampling", 7, 0) == Streams(3).seed_for("sampling", 7, 0)
    assert Streams(3).seed_for("sampling", 7, 0) != Streams(3).seed_for("sampling", 7, 1)


def test_seeds_fit_what_their_libraries_take():
    seeds = [Streams(s).seed_for("sampling", r) for s in range(5) for r in range(50)]
    assert all(0 <= x < 2 ** 63 for x in seeds) and max(seeds) > 2 ** 40
    small = [Streams(s).seed_for("dpo", r, bits=32) for s in range(5) for r in range(50)]
    assert all(0 <= x < 2 ** 32 for x in small)
    np.random.seed(small[0])  # noqa: NPY002 - transformers' set_seed seeds numpy's legacy generator: 32 bits


def test_item_seeds_depend_on_the_call_seed_and_the_index_only():
    whole = item_seeds(11, 0, 10)
    assert len(set(whole)) == 10
    assert item_seeds(11, 4, 3) == whole[4:7]  # a batch of the call gets the same seeds as in one batch
    assert item_seeds(12, 0, 10) != whole


def test_unknown_streams_and_negative_keys_are_errors():
    with pytest.raises(ValueError, match="unknown random stream 'sampels'"):
        Streams(0).rng("sampels")
    with pytest.raises(ValueError, match="non-negative"):
        Streams(0).rng("probes", -1)
    with pytest.raises(ValueError, match="non-negative"):
        Streams(-1)
