"""The one interface every reward strategy implements (`RewardStrategy`), and the data it passes around:
a round's `Batch`, an `Assignment` of RMs to instances, and `StrategyError`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np


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
    # Each instance's data source, where it is coarser than its domain (`tasks.data_sources`); None: its domain.
    sources: Sequence[str] | None = None

    @property
    def groups(self) -> Sequence[str] | None:
        """What a per-source rule sees of each instance: its data source, else its domain."""
        return self.sources if self.sources is not None else self.domains


@dataclass
class Assignment:
    """Which RMs score each instance: `mask[i, k]` is True when `rm_names[k]` scores instance i.

    `arms[i]` is the one RM chosen for instance i (-1 when several score it); `probs` (n, K) is the
    probability with which each RM was chosen (for off-policy evaluation), when the strategy has one;
    `separation[i]`, when a learning router explored, is the chosen RM's lower confidence bound minus the
    best other RM's upper bound (bounds: the policy's estimate minus / plus what exploration adds to it, a
    UCB policy's confidence width): > 0 when the router is sure that the chosen RM is the best there;
    `lower[i]` is that lower bound itself; `upper[i, k]` every RM's upper bound there.
    """

    rm_names: tuple[str, ...]
    mask: np.ndarray
    arms: np.ndarray
    probs: np.ndarray | None = None
    separation: np.ndarray | None = None
    lower: np.ndarray | None = None
    upper: np.ndarray | None = None

    def instances_of(self, rm: str) -> np.ndarray:
        """Indices of the instances that `rm` must score."""
        return np.flatnonzero(self.mask[:, self.rm_names.index(rm)])

    def subset(self, keep: np.ndarray) -> Assignment:
        """The assignment of the instances where the boolean `keep` is True."""
        return Assignment(self.rm_names, self.mask[keep], self.arms[keep],
                          None if self.probs is None else self.probs[keep],
                          None if self.separation is None else self.separation[keep],
                          None if self.lower is None else self.lower[keep],
                          None if self.upper is None else self.upper[keep])

    def runners_up(self, count: int) -> list[tuple[Assignment, np.ndarray]]:
        """Up to `count` more RMs per instance besides the chosen one: those a router has not ruled out there (upper
        bound at or above the chosen RM's lower bound), highest upper bound first. Each as (assignment, the
        instances it covers); where it covers none, it repeats the chosen RM. None without bounds."""
        if count < 1 or self.upper is None or self.lower is None:
            return []
        rows = np.arange(len(self.arms))
        upper = self.upper.copy()
        upper[rows, self.arms] = -np.inf
        order = np.argsort(-upper, axis=1, kind="stable")
        out = []
        for rank in range(min(count, len(self.rm_names) - 1)):
            arms = order[:, rank]
            covers = upper[rows, arms] >= self.lower
            if not covers.any():
                break
            arms = np.where(covers, arms, self.arms)
            out.append((Assignment(self.rm_names, np.eye(len(self.rm_names), dtype=bool)[arms], arms), covers))
        return out

    def picks_by_domain(self, domains: Sequence[str]) -> dict[str, dict[str, int]]:
        """{domain: {rm: instances of that domain it scores}} (RMs that score none left out): the one count of
        an assignment's picks, from which totals and running counts are summed."""
        if len(domains) != len(self.mask):
            raise ValueError(f"{len(domains)} domains for {len(self.mask)} instances")
        out: dict[str, dict[str, int]] = {}
        for d in sorted(set(domains)):
            rows = self.mask[np.asarray([x == d for x in domains])]
            out[d] = {rm: int(rows[:, k].sum()) for k, rm in enumerate(self.rm_names) if rows[:, k].any()}
        return out

    @property
    def forward_per_instance(self) -> np.ndarray:
        """How many RMs score each instance (what a candidate costs in RM forward passes)."""
        return self.mask.sum(axis=1)


class RewardStrategy:
    """Base class: one RM per instance given by `_arms`; `combine` reads that RM's score."""

    name = "strategy"
    # True for a strategy that learns from every RM's reward on every validation probe, every round (the
    # baselines of `laser.strategies.validated`), rather than from the RM it picks for each probe.
    reads_every_rm = False
    # The round (`Batch.round`) of the last change the strategy detected in an RM's rewards (None: none detected),
    # and where: the mean context of the rewards that showed it.
    last_change: int | None = None
    change_context: np.ndarray | None = None

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

    def ranking(self, contexts: np.ndarray) -> np.ndarray:
        """(n, K): each instance's RMs, the one it would be sent to first (where another must stand in for an RM
        that cannot score). By default the RMs in their order; a learning router ranks by what it expects."""
        return np.tile(np.arange(self.k), (len(contexts), 1))

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

    def observe_all(self, observations: Sequence[tuple[np.ndarray, Assignment, np.ndarray]],
                    batch: Batch | None = None) -> None:
        """Several (contexts, assignment, feedback) that arrive together, e.g. every RM's rewards on the same
        probes (`batch`: what is known of those probes): learned as by `observe`, one after the other, unless
        the strategy says otherwise."""
        for contexts, assignment, feedback in observations:
            self.observe(contexts, assignment, feedback)

    def take_forgotten(self) -> list[str]:
        """The RMs the strategy forgot since the last call, on a detected change (none for fixed strategies)."""
        return []

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
