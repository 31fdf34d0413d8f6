"""Baselines that read the validation labels LASeR reads: what a practitioner with the same labelled probes would
do instead of routing.

Each round the training loop samples the same validation probes a LASeR run draws (`round.rerank_prompts`)
and has every RM score every probe (`reads_every_rm`); each RM earns the reward LASeR's router earns there,
`rerank_gain` (2 x its pairwise accuracy on the policy's own right and wrong samples - 1). From all the
probes so far:

- `single:auto`: the one RM with the best mean gain scores every instance (re-chosen each round);
- `static:by_domain`: per domain (or data source, `tasks.data_sources`, as a verl user writes a rule per
  `data_source`), the RM with the best mean gain on that domain's probes; a domain without probes yet takes
  `single:auto`'s RM. Reads the domain labels, which LASeR does not;
- `ensemble:val_weighted`: every RM scores every instance; their normalized scores are averaged with weights
  from each RM's mean gain over every probe (accuracy above chance, 2 x acc - 1, clipped at 0: an RM at or
  below chance gets none; uniform while no RM is above chance).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from laser.rewards.aggregators import aggregate

from .base import Assignment, Batch, RewardStrategy, StrategyError
from .baselines import EnsembleStrategy

ALL = "*"  # the group of every probe, whatever its domain


class ValidationTally:
    """Per group (every probe, and each domain): the sum and count of each RM's rerank gains on the probes."""

    def __init__(self, k: int):
        self.k = k
        self.sums: dict[str, np.ndarray] = {}
        self.counts: dict[str, np.ndarray] = {}

    def add(self, arm: int, gains: np.ndarray, domains: Sequence[str] | None) -> None:
        """Gains of RM `arm` on probes of `domains` (None: unknown domains, counted in `ALL` only)."""
        gains = np.asarray(gains, dtype=np.float64)
        if domains is not None and len(domains) != len(gains):
            raise StrategyError(f"{len(domains)} domains for {len(gains)} probe rewards")
        for g, x in [(ALL, gains)] + [(d, gains[i:i + 1]) for i, d in enumerate(domains or ())]:
            self.sums.setdefault(g, np.zeros(self.k))[arm] += x.sum()
            self.counts.setdefault(g, np.zeros(self.k, dtype=np.int64))[arm] += len(x)

    def mean(self, group: str = ALL) -> np.ndarray | None:
        """Each RM's mean gain in `group` (NaN for an RM without probes there); None when no RM has any."""
        if group not in self.counts or not self.counts[group].any():
            return None
        return np.where(self.counts[group] > 0, self.sums[group] / np.maximum(self.counts[group], 1), np.nan)

    def best(self, group: str = ALL) -> int | None:
        """The RM with the best mean gain in `group` (ties: the one listed first); None without probes there."""
        m = self.mean(group)
        return None if m is None or np.isnan(m).all() else int(np.nanargmax(m))

    def state_dict(self) -> dict:
        return {"sums": {g: v.tolist() for g, v in self.sums.items()},
                "counts": {g: v.tolist() for g, v in self.counts.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.sums = {g: np.asarray(v, dtype=np.float64) for g, v in state["sums"].items()}
        self.counts = {g: np.asarray(v, dtype=np.int64) for g, v in state["counts"].items()}


class _ReadsValidation:
    """Mixin: learns each RM's mean rerank gain from probes that every RM scores."""

    reads_every_rm = True  # the training loop has every RM score every probe, every round

    def __init__(self, rm_names: Sequence[str], *args):
        super().__init__(rm_names, *args)
        self.tally = ValidationTally(self.k)

    @property
    def learns(self) -> bool:
        return True

    def observe(self, contexts: np.ndarray, assignment: Assignment, feedback: np.ndarray,
                batch: Batch | None = None) -> None:
        """Each instance's reward, added to the tally of the RM assigned to it (`batch.domains`: its domain)."""
        feedback = np.asarray(feedback, dtype=np.float64)
        if feedback.shape != (len(assignment.arms),):
            raise StrategyError(f"feedback has shape {feedback.shape}, expected ({len(assignment.arms)},)")
        if (assignment.arms < 0).any():
            raise StrategyError(f"{self.name} learns from one RM's reward per instance, not from a combination")
        domains = None if batch is None or batch.groups is None else np.asarray(batch.groups)
        for arm in np.unique(assignment.arms):
            rows = assignment.arms == arm
            self.tally.add(int(arm), feedback[rows], None if domains is None else [str(d) for d in domains[rows]])

    def observe_all(self, observations, batch: Batch | None = None) -> None:
        for contexts, assignment, feedback in observations:
            if len(feedback):
                self.observe(contexts, assignment, feedback, batch)

    def validation_means(self) -> dict[str, dict[str, float]]:
        """{group: {rm: mean rerank gain on the probes so far}} (every probe is group `*`)."""
        out = {}
        for g in self.tally.counts:
            m = self.tally.mean(g)
            out[g] = {rm: round(float(x), 4) for rm, x in zip(self.rm_names, m, strict=True) if np.isfinite(x)}
        return out

    def state_dict(self) -> dict:
        return {**super().state_dict(), "tally": self.tally.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.tally.load_state_dict(state["tally"])


class AutoSingleStrategy(_ReadsValidation, RewardStrategy):
    """`single:auto`: every instance to the RM with the best mean rerank gain on the validation probes so far."""

    name = "single:auto"

    def assign(self, contexts: np.ndarray, batch: Batch) -> Assignment:
        best = self.tally.best()
        return self._one_per_instance(np.full(len(contexts), 0 if best is None else best))


class ByDomainStrategy(_ReadsValidation, RewardStrategy):
    """`static:by_domain`: per domain, the RM with the best mean rerank gain on that domain's probes so far."""

    name = "static:by_domain"

    def assign(self, contexts: np.ndarray, batch: Batch) -> Assignment:
        groups = batch.groups
        if groups is None or len(groups) != len(contexts):
            raise StrategyError("static:by_domain needs each instance's domain (its data source): give every "
                                "example a `domain`")
        fallback = self.tally.best()
        fallback = 0 if fallback is None else fallback
        pick = {d: self.tally.best(d) for d in set(groups)}
        return self._one_per_instance(np.array([fallback if pick[d] is None else pick[d] for d in groups]))


class ValWeightedEnsemble(_ReadsValidation, EnsembleStrategy):
    """`ensemble:val_weighted`: every RM scores; weights = each RM's mean rerank gain on the probes, clipped at 0."""

    name = "ensemble:val_weighted"

    def __init__(self, rm_names: Sequence[str]):
        super().__init__(rm_names, "weighted")

    def weights(self) -> np.ndarray:
        """The current weight of each RM (sum 1)."""
        m = self.tally.mean()
        w = np.zeros(self.k) if m is None else np.clip(np.nan_to_num(m, nan=0.0), 0.0, None)
        return w / w.sum() if w.sum() > 0 else np.full(self.k, 1.0 / self.k)

    def _aggregate(self, block: np.ndarray, cols: np.ndarray) -> np.ndarray:
        w = self.weights()[cols]
        return aggregate("weighted", block, weights=w) if w.sum() > 0 else aggregate("mean", block)
