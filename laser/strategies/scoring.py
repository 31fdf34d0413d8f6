"""Route and score one batch: a strategy assigns RMs to instances, each RM scores the candidates of the
instances it was given, and the strategy combines the normalized scores into one score per candidate.

The training loop (to build preference pairs) and the best-of-n reranker (to pick a response) both do
exactly this; it lives here once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from .base import Assignment, Batch, RewardStrategy


@dataclass
class CandidateTable:
    """A batch's candidates as one flat table: candidate c is `texts[c]`, a completion of `prompts[instance[c]]`
    (each prompt's candidates contiguous, in their order). Built once from the engine's per-prompt lists; the
    round scores, pairs and rewards from it."""

    prompts: list[str]
    instance: np.ndarray
    texts: list[str]

    @classmethod
    def of(cls, prompts: Sequence[str], candidates: Sequence[Sequence[str]]) -> CandidateTable:
        """The table of `candidates[i]`, prompt i's completions."""
        if len(candidates) != len(prompts):
            raise ValueError(f"got {len(prompts)} prompts and {len(candidates)} candidate lists")
        instance = np.array([i for i, group in enumerate(candidates) for _ in group], dtype=np.int64)
        return cls(list(prompts), instance, [t for group in candidates for t in group])

    def __len__(self) -> int:
        return len(self.texts)

    def _bounds(self) -> np.ndarray:
        """Where each prompt's rows start, and the end (rows are contiguous per prompt, in prompt order)."""
        return np.searchsorted(self.instance, np.arange(len(self.prompts) + 1))

    def rows(self, i: int) -> np.ndarray:
        """Indices of prompt i's candidates."""
        lo, hi = np.searchsorted(self.instance, [i, i + 1])
        return np.arange(lo, hi)

    def per_instance(self, values: np.ndarray) -> list[np.ndarray]:
        """A per-candidate array cut into one array per prompt (one pass, not one scan per prompt)."""
        values = np.asarray(values)
        if len(values) != len(self):
            raise ValueError(f"{len(values)} values for {len(self)} candidates")
        return np.split(values, self._bounds()[1:-1])


@dataclass
class Routed:
    """One routed batch: the candidate table, who scored what, and `combined[c]`, candidate c's score."""

    table: CandidateTable
    assignment: Assignment
    scores: dict[str, np.ndarray]     # per RM: normalized score of each candidate (NaN where it did not score)
    combined: np.ndarray
    forward: int                      # (prompt, completion) pairs run through an RM (cache misses)
    rm_calls: int                     # (candidate, RM) scorings asked for: the cost without any cache

    @property
    def instance(self) -> np.ndarray:
        return self.table.instance

    def per_instance(self) -> list[np.ndarray]:
        """The combined scores of each instance's candidates, in candidate order."""
        return self.table.per_instance(self.combined)


def route_and_score(strategy: RewardStrategy, reward_models: Mapping, normalizer, table: CandidateTable,
                    contexts: np.ndarray, batch: Batch, assignment: Assignment | None = None,
                    skip_single: bool = False) -> Routed:
    """Assign RMs to the table's prompts (unless `assignment` is given), score, normalize and combine.

    `normalizer(rm_name, raw_scores) -> normalized` (a `laser.rewards.ScoreNormalizer`). With
    `skip_single`, a prompt with one candidate is not scored (there is nothing to choose between).
    """
    if assignment is None:
        assignment = strategy.assign(contexts, batch)
    instance, texts, prompts = table.instance, table.texts, table.prompts
    sizes = np.bincount(instance, minlength=len(prompts)) if len(instance) else np.zeros(len(prompts), dtype=int)
    needed = (sizes > 1) | (not skip_single)
    jobs = {}
    for rm_name in reward_models:
        who = assignment.mask[:, assignment.rm_names.index(rm_name)] & needed
        rows = np.flatnonzero(who[instance]) if len(instance) else np.zeros(0, dtype=np.int64)
        if len(rows):
            jobs[rm_name] = rows
    got = _score_all(reward_models, {name: ([prompts[instance[c]] for c in rows], [texts[c] for c in rows])
                                     for name, rows in jobs.items()})
    scores: dict[str, np.ndarray] = {}
    forward = calls = 0
    for rm_name, rows in jobs.items():  # normalized in the RMs' order, whatever order the servers answered in
        forward += got[rm_name].forward
        calls += len(rows)
        scores[rm_name] = np.full(len(texts), np.nan)
        scores[rm_name][rows] = normalizer(rm_name, got[rm_name].values)
    combined = strategy.combine(scores, assignment, instance) if scores else np.full(len(texts), np.nan)
    return Routed(table, assignment, scores, combined, forward, calls)


def _score_all(reward_models: Mapping, requests: dict[str, tuple[list[str], list[str]]]) -> dict:
    """{rm: Scores} of every request; the remote RMs (`rm.remote`) are asked at the same time, each from its own
    thread (they wait on their servers), the in-process ones one after the other in this thread."""
    remote = [name for name in requests if getattr(reward_models[name], "remote", False)]
    out = {}
    pool = ThreadPoolExecutor(max_workers=len(remote)) if len(remote) > 1 else None
    try:
        futures = {name: pool.submit(reward_models[name].score, *requests[name]) for name in remote} if pool else {}
        for name, (p, c) in requests.items():
            if name not in futures:
                out[name] = reward_models[name].score(p, c)
        for name, future in futures.items():
            out[name] = future.result()
    finally:
        if pool:
            pool.shutdown(wait=True)
    return out
