"""Route and score one batch: a strategy assigns RMs to instances, each RM scores the candidates of the
instances it was given, and the strategy combines the normalized scores into one score per candidate.

The training loop (to build preference pairs) and the best-of-n reranker (to pick a response) both do
exactly this; it lives here once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .base import Assignment, Batch, RewardStrategy


@dataclass
class Routed:
    """One routed batch. Candidate c belongs to instance `instance[c]`; `combined[c]` is its score."""

    assignment: Assignment
    instance: np.ndarray
    scores: dict[str, np.ndarray]     # per RM: normalized score of each candidate (NaN where it did not score)
    combined: np.ndarray
    forward: int                      # (prompt, completion) pairs run through an RM (cache misses)
    rm_calls: int                     # (candidate, RM) scorings asked for: the cost without any cache

    def per_instance(self, n: int) -> list[np.ndarray]:
        """The combined scores of each instance's candidates, in candidate order."""
        return [self.combined[self.instance == i] for i in range(n)]


def route_and_score(strategy: RewardStrategy, reward_models: Mapping, normalizer, prompts: Sequence[str],
                    candidates: Sequence[Sequence[str]], contexts: np.ndarray, batch: Batch,
                    assignment: Assignment | None = None, skip_single: bool = False) -> Routed:
    """Assign RMs to the instances (unless `assignment` is given), score, normalize and combine.

    `normalizer(rm_name, raw_scores) -> normalized` (a `laser.rewards.ScoreNormalizer`). With
    `skip_single`, an instance with one candidate is not scored (there is nothing to choose between).
    """
    if len(candidates) != len(prompts):
        raise ValueError(f"got {len(prompts)} prompts and {len(candidates)} candidate lists")
    if assignment is None:
        assignment = strategy.assign(contexts, batch)
    instance = np.array([i for i, group in enumerate(candidates) for _ in group], dtype=np.int64)
    texts = [t for group in candidates for t in group]
    needed = np.array([len(g) > 1 or not skip_single for g in candidates], dtype=bool)
    scores: dict[str, np.ndarray] = {}
    forward = calls = 0
    for rm_name, rm in reward_models.items():
        who = assignment.mask[:, assignment.rm_names.index(rm_name)] & needed
        rows = np.flatnonzero(who[instance]) if len(instance) else np.zeros(0, dtype=np.int64)
        if not len(rows):
            continue
        got = rm.score([prompts[instance[c]] for c in rows], [texts[c] for c in rows])
        forward += got.forward
        calls += len(rows)
        scores[rm_name] = np.full(len(texts), np.nan)
        scores[rm_name][rows] = normalizer(rm_name, got.values)
    combined = strategy.combine(scores, assignment, instance) if scores else np.full(len(texts), np.nan)
    return Routed(assignment, instance, scores, combined, forward, calls)
