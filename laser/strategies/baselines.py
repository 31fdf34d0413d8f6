"""The baselines behind the same interface: one RM, a random RM, RMs in turn, the domain oracle, and
score ensembles over every aggregator of `laser.rewards`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from laser.rewards.aggregators import AGGREGATORS, aggregate

from .base import Assignment, Batch, RewardStrategy, StrategyError, _score_table


class SingleStrategy(RewardStrategy):
    """One fixed RM for every instance."""

    name = "single"

    def __init__(self, rm_names: Sequence[str], rm: str):
        super().__init__(rm_names)
        if rm not in self.rm_names:
            raise StrategyError(f"single:{rm}: no reward model named {rm!r}; known: {list(self.rm_names)}")
        self.rm = rm

    def assign(self, contexts: np.ndarray, batch: Batch) -> Assignment:
        return self._one_per_instance(np.full(len(contexts), self.rm_names.index(self.rm)))


class RandomStrategy(RewardStrategy):
    """A uniformly random RM per instance (seeded)."""

    name = "random"

    def __init__(self, rm_names: Sequence[str], seed: int = 0):
        super().__init__(rm_names)
        self.rng = np.random.default_rng(seed)

    def assign(self, contexts: np.ndarray, batch: Batch) -> Assignment:
        n = len(contexts)
        return self._one_per_instance(self.rng.integers(self.k, size=n), np.full((n, self.k), 1.0 / self.k))

    def state_dict(self) -> dict:
        return {**super().state_dict(), "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.rng.bit_generator.state = state["rng"]


class SequentialStrategy(RewardStrategy):
    """One RM per round, in a fixed cycle over the RMs (round r uses RM r mod K)."""

    name = "sequential"

    def assign(self, contexts: np.ndarray, batch: Batch) -> Assignment:
        return self._one_per_instance(np.full(len(contexts), batch.round % self.k))


class OracleStrategy(RewardStrategy):
    """The RM with the best held-out accuracy on each instance's domain (an upper bound; reads domains)."""

    name = "oracle"

    def __init__(self, rm_names: Sequence[str], best_by_domain: Mapping[str, str]):
        super().__init__(rm_names)
        bad = {d: rm for d, rm in best_by_domain.items() if rm not in self.rm_names}
        if bad:
            raise StrategyError(f"oracle table names unknown reward models {bad}; known: {list(self.rm_names)}")
        self.best_by_domain = dict(best_by_domain)

    @classmethod
    def from_accuracy(cls, rm_names: Sequence[str], accuracy: Mapping[str, Mapping[str, float]]) -> OracleStrategy:
        """From a table accuracy[rm][domain] (as `laser build-assets` reports it)."""
        domains = sorted({d for row in accuracy.values() for d in row})
        return cls(rm_names, {d: max(rm_names, key=lambda rm: accuracy.get(rm, {}).get(d, -1.0)) for d in domains})

    def assign(self, contexts: np.ndarray, batch: Batch) -> Assignment:
        if batch.domains is None or len(batch.domains) != len(contexts):
            raise StrategyError("the oracle needs each instance's domain (batch.domains)")
        missing = sorted(set(batch.domains) - set(self.best_by_domain))
        if missing:
            raise StrategyError(f"the oracle has no reward model for domain(s) {missing}")
        return self._one_per_instance(np.array([self.rm_names.index(self.best_by_domain[d]) for d in batch.domains]))


class EnsembleStrategy(RewardStrategy):
    """Every RM scores every instance; an aggregator of `laser.rewards` combines the normalized scores."""

    name = "ensemble"

    def __init__(self, rm_names: Sequence[str], aggregator: str = "mean", **params):
        super().__init__(rm_names)
        if aggregator not in AGGREGATORS:
            raise StrategyError(f"ensemble:{aggregator}: unknown aggregator; choose one of {sorted(AGGREGATORS)}")
        self.aggregator, self.params = aggregator, params

    def assign(self, contexts: np.ndarray, batch: Batch) -> Assignment:
        n = len(contexts)
        return Assignment(self.rm_names, np.ones((n, self.k), dtype=bool), np.full(n, -1, dtype=np.int64))

    def combine(self, scores: Mapping[str, np.ndarray], assignment: Assignment, instance: np.ndarray) -> np.ndarray:
        """The aggregate of the RMs that scored each candidate (NaN only when none could)."""
        table = _score_table(scores, assignment.rm_names, len(instance))
        out = np.full(len(table), np.nan)
        ok = np.isfinite(table)
        for pattern in {tuple(row) for row in ok}:  # unscorable cells: aggregate over the rest
            rows = np.all(ok == np.array(pattern), axis=1)
            cols = np.array(pattern)
            if cols.any():
                out[rows] = self._aggregate(table[np.ix_(rows, cols)], cols)
        return out

    def _aggregate(self, block: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """The aggregate of `block`, the scores of the RMs where `cols` is True."""
        params = dict(self.params)
        if "weights" in params:  # the weights of the RMs that scored
            params["weights"] = np.asarray(params["weights"], dtype=np.float64)[cols]
        return aggregate(self.aggregator, block, **params)
