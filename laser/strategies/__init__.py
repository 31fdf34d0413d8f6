"""Reward strategies: which reward model(s) judge each instance, and how their scores become one.

Every strategy implements the one interface the training loop and the best-of-n reranker know:

    assign(contexts, batch) -> Assignment     which RMs score each instance
    combine(scores, assignment, instance)     per-candidate normalized scores of those RMs -> one score
    observe(contexts, assignment, feedback)   the reward of each instance's choice (bandits learn from it)
    state_dict() / load_state_dict(state)     everything needed to resume exactly

LASeR is `BanditStrategy` (any `bandits` policy); the baselines are `single:<rm>`, `random`,
`ensemble:<aggregator>` (every aggregator of `laser.rewards`, MORLAIF's scalarizations included),
`sequential` (one RM per round in a fixed cycle) and `oracle` (the RM with the best held-out accuracy on
each instance's domain; benchmark only, it reads the domain labels).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

import bandits
from bandits.normalizers import QuantileNormalizer
from laser.rewards.aggregators import AGGREGATORS, aggregate


class StrategyError(ValueError):
    """A strategy spec or its inputs are wrong; the message says what to fix."""


@dataclass
class Batch:
    """What a strategy may know about the instances of a round besides their contexts."""

    round: int = 0
    domains: Sequence[str] | None = None
    # False for instances whose reward the strategy will never observe (a round's training prompts when the
    # router learns from validation probes): a bandit then exploits what it knows instead of exploring.
    explore: bool = True


@dataclass
class Assignment:
    """Which RMs score each instance: `mask[i, k]` is True when `rm_names[k]` scores instance i.

    `arms[i]` is the one RM chosen for instance i (-1 when several score it); `probs` (n, K) is the
    probability with which each RM was chosen (for off-policy evaluation), when the strategy has one;
    `separation[i]`, when a learning router explored, is the chosen RM's lower confidence bound minus the
    best other RM's upper bound (bounds: the policy's estimate minus / plus what exploration adds to it, a
    UCB policy's confidence width): > 0 when the router is sure that the chosen RM is the best there.
    """

    rm_names: tuple[str, ...]
    mask: np.ndarray
    arms: np.ndarray
    probs: np.ndarray | None = None
    separation: np.ndarray | None = None

    def instances_of(self, rm: str) -> np.ndarray:
        """Indices of the instances that `rm` must score."""
        return np.flatnonzero(self.mask[:, self.rm_names.index(rm)])

    def subset(self, keep: np.ndarray) -> Assignment:
        """The assignment of the instances where the boolean `keep` is True."""
        return Assignment(self.rm_names, self.mask[keep], self.arms[keep],
                          None if self.probs is None else self.probs[keep],
                          None if self.separation is None else self.separation[keep])

    @property
    def forward_per_instance(self) -> np.ndarray:
        """How many RMs score each instance (what a candidate costs in RM forward passes)."""
        return self.mask.sum(axis=1)


class RewardStrategy:
    """Base class: one RM per instance given by `_arms`; `combine` reads that RM's score."""

    name = "strategy"

    def __init__(self, rm_names: Sequence[str]):
        if not rm_names:
            raise StrategyError("a strategy needs at least one reward model")
        if len(set(rm_names)) != len(rm_names):
            raise StrategyError(f"reward model names must be unique, got {list(rm_names)}")
        self.rm_names = tuple(rm_names)

    @property
    def k(self) -> int:
        return len(self.rm_names)

    @property
    def learns(self) -> bool:
        """Whether `observe` changes later choices (then the round measures a reward for it)."""
        return False

    def _one_per_instance(self, arms: np.ndarray, probs: np.ndarray | None = None) -> Assignment:
        arms = np.asarray(arms, dtype=np.int64)
        mask = np.zeros((len(arms), self.k), dtype=bool)
        mask[np.arange(len(arms)), arms] = True
        return Assignment(self.rm_names, mask, arms, probs)

    def assign(self, contexts: np.ndarray, batch: Batch) -> Assignment:
        raise NotImplementedError

    def combine(self, scores: Mapping[str, np.ndarray], assignment: Assignment, instance: np.ndarray) -> np.ndarray:
        """One score per candidate: the normalized score of the RM assigned to its instance."""
        instance = np.asarray(instance, dtype=np.int64)
        table = _score_table(scores, assignment.rm_names, len(instance))
        arms = assignment.arms[instance]
        if np.any(arms < 0):
            raise StrategyError(f"{self.name}: an instance has no single assigned reward model")
        return table[np.arange(len(instance)), arms]

    def observe(self, contexts: np.ndarray, assignment: Assignment, feedback: np.ndarray) -> None:
        """Learn from the reward of each instance's choice (nothing to learn for fixed strategies)."""

    def state_dict(self) -> dict:
        return {"name": self.name, "rm_names": list(self.rm_names)}

    def load_state_dict(self, state: dict) -> None:
        if list(state.get("rm_names", [])) != list(self.rm_names):
            raise StrategyError(f"checkpoint is for reward models {state.get('rm_names')}, this run has "
                                f"{list(self.rm_names)}")


def _score_table(scores: Mapping[str, np.ndarray], rm_names: Sequence[str], m: int) -> np.ndarray:
    """(m, K) table of the scores, NaN for RMs that did not score a candidate."""
    table = np.full((m, len(rm_names)), np.nan)
    for k, rm in enumerate(rm_names):
        if rm in scores:
            v = np.asarray(scores[rm], dtype=np.float64)
            if v.shape != (m,):
                raise StrategyError(f"scores[{rm!r}] has shape {v.shape}, expected ({m},) (one per candidate)")
            table[:, k] = v
    unknown = set(scores) - set(rm_names)
    if unknown:
        raise StrategyError(f"scores for unknown reward models {sorted(unknown)}; known: {list(rm_names)}")
    return table


def _separation(scores: np.ndarray, expected: np.ndarray, arms: np.ndarray) -> np.ndarray:
    """Per row: the chosen arm's lower bound (estimate minus its exploration bonus) minus the largest other
    arm's score (its upper bound); -inf with one arm."""
    rows = np.arange(len(arms))
    chosen = 2.0 * expected[rows, arms] - scores[rows, arms]
    others = np.asarray(scores, dtype=np.float64).copy()
    others[rows, arms] = -np.inf
    return chosen - others.max(axis=1) if others.shape[1] > 1 else np.full(len(arms), -np.inf)


class BanditStrategy(RewardStrategy):
    """LASeR: a contextual bandit picks one RM per instance (or one per batch, from the mean context).

    With `normalize_feedback`, rewards are normalized by the LASeR code's quantile scheme (20th-80th
    percentile of the reward history -> [0, 1]) before the bandit sees it, so that validation gains of
    any scale are comparable; rewards on a fixed scale (the rerank gain, in [-1, 1]) go in as they are.

    `center`: the bandit sees each context minus the running mean of every context it learned from,
    L2-normalized, plus a constant feature (so a linear policy can still hold a per-RM baseline). A
    policy's prompt embeddings share one large common direction (mean cosine 0.96 between the embedded
    world's domains), which would otherwise leave LinUCB one bandit for every prompt.
    """

    name = "laser"

    def __init__(self, rm_names: Sequence[str], dim: int, policy: str = "kernel_ucb", selection: str = "instance",
                 normalize_feedback: bool = True, center: bool = False, seed: int = 0, **params):
        super().__init__(rm_names)
        if selection not in ("instance", "batch"):
            raise StrategyError(f"selection must be 'instance' or 'batch', got {selection!r}")
        self.center = bool(center)
        try:
            self.policy = bandits.make_policy(policy, n_arms=self.k, dim=dim + self.center, seed=seed, **params)
        except (ValueError, TypeError) as e:
            raise StrategyError(str(e)) from e
        self.selection = selection
        self.normalizer = QuantileNormalizer() if normalize_feedback else None
        self.context_sum, self.context_count = np.zeros(dim), 0

    def _contexts(self, contexts: np.ndarray, remember: bool = False) -> np.ndarray:
        x = np.asarray(contexts, dtype=np.float64)
        if self.center:
            if remember:
                self.context_sum = self.context_sum + x.sum(axis=0)
                self.context_count += len(x)
            x = x - self.context_sum / max(self.context_count, 1)
            x = np.hstack([x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12), np.ones((len(x), 1))])
        return x.mean(axis=0, keepdims=True) if self.selection == "batch" else x

    @property
    def learns(self) -> bool:
        return True

    def assign(self, contexts: np.ndarray, batch: Batch) -> Assignment:
        x = self._contexts(contexts)
        decision = self.policy.select(x) if batch.explore else self.policy.exploit(x)
        separation = None
        if batch.explore:
            try:  # UCB policies hand their estimate over with the decision; others are asked for it
                expected = decision.expected if decision.expected is not None else self.policy.expected(x)
                separation = _separation(decision.scores, expected, decision.arms)
            except NotImplementedError:  # a policy that keeps no estimate
                pass
        n = len(contexts)
        if self.selection == "batch":
            out = self._one_per_instance(np.repeat(decision.arms, n), np.repeat(decision.probs, n, axis=0))
            out.separation = None if separation is None else np.repeat(separation, n)
            return out
        out = self._one_per_instance(decision.arms, decision.probs)
        out.separation = separation
        return out

    def observe(self, contexts: np.ndarray, assignment: Assignment, feedback: np.ndarray) -> None:
        r = np.asarray(feedback, dtype=np.float64)
        if r.shape != (len(contexts),):
            raise StrategyError(f"feedback has shape {r.shape}, expected ({len(contexts)},) (one per instance)")
        if self.selection == "batch":
            r = np.array([r.mean()])
        if self.normalizer is not None:
            r = self.normalizer.normalize(r)
        arms = assignment.arms[:1] if self.selection == "batch" else assignment.arms
        self.policy.update(self._contexts(contexts, remember=True), arms, r)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "policy": self.policy.state_dict(),
                "feedback_history": None if self.normalizer is None else list(self.normalizer.history),
                "context_sum": self.context_sum.tolist(), "context_count": self.context_count}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.policy.load_state_dict(state["policy"])
        if "context_sum" in state:
            self.context_sum = np.asarray(state["context_sum"], dtype=np.float64)
            self.context_count = int(state["context_count"])
        # The state says whether rewards were normalized (a router keeps the scale it was trained on).
        history = state.get("feedback_history")
        self.normalizer = None if history is None else (self.normalizer or QuantileNormalizer())
        if self.normalizer is not None:
            self.normalizer.history = list(history)


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
                out[rows] = aggregate(self.aggregator, table[np.ix_(rows, cols)], **self.params)
        return out


@dataclass
class StrategySpec:
    """A parsed strategy string: 'laser', 'laser:lints', 'single:math', 'random', 'ensemble:mean', ..."""

    kind: str
    arg: str | None = None
    params: dict = field(default_factory=dict)


def parse_strategy(spec: str) -> StrategySpec:
    """Split 'kind[:arg]' and check the kind."""
    kind, _, arg = str(spec).partition(":")
    kinds = ("laser", "single", "random", "ensemble", "sequential", "oracle")
    if kind not in kinds:
        raise StrategyError(f"unknown strategy {spec!r}; choose one of laser[:<bandit>], single:<rm>, random, "
                            "ensemble:<aggregator>, sequential, oracle")
    if kind == "single" and not arg:
        raise StrategyError("single needs a reward model name: single:<rm>")
    return StrategySpec(kind, arg or None)


def make_strategy(spec: str, rm_names: Sequence[str], dim: int = 0, seed: int = 0,
                  oracle_table: Mapping[str, Mapping[str, float]] | None = None, **params) -> RewardStrategy:
    """The strategy named by `spec` over the RMs `rm_names` (`dim`: context width, for the bandit)."""
    s = parse_strategy(spec)
    if s.kind == "laser":
        return BanditStrategy(rm_names, dim, policy=s.arg or "kernel_ucb", seed=seed, **params)
    if s.kind == "single":
        return SingleStrategy(rm_names, s.arg)
    if s.kind == "random":
        return RandomStrategy(rm_names, seed=seed)
    if s.kind == "ensemble":
        return EnsembleStrategy(rm_names, s.arg or "mean", **params)
    if s.kind == "sequential":
        return SequentialStrategy(rm_names)
    if oracle_table is None:
        raise StrategyError("the oracle needs the held-out accuracy table of the reward models (oracle_table)")
    return OracleStrategy.from_accuracy(rm_names, oracle_table)
