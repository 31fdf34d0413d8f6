"""Route and score one batch: a strategy assigns RMs to instances, each RM scores the candidates of the
instances it was given, and the strategy combines the normalized scores into one score per candidate.

The training loop (to build preference pairs) and the best-of-n reranker (to pick a response) both do
exactly this; it lives here once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
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
                    skip_single: bool = False, ranks: Ranks | None = None) -> Routed:
    """Assign RMs to the table's prompts (unless `assignment` is given), score, normalize and combine.

    `normalizer(rm_name, raw_scores) -> normalized` (a `laser.rewards.ScoreNormalizer`). With
    `skip_single`, a prompt with one candidate is not scored (there is nothing to choose between). With
    `ranks` (several processes, each calling this with the same table), each process runs its share of the
    RMs' forward passes and every process gets every score (`_score_all`).
    """
    if assignment is None:
        assignment = strategy.assign(contexts, batch)
    scores, forward, calls = score_assigned(reward_models, normalizer, table, assignment, skip_single, ranks)
    combined = strategy.combine(scores, assignment, table.instance) if scores else np.full(len(table), np.nan)
    return Routed(table, assignment, scores, combined, forward, calls)


def score_assigned(reward_models: Mapping, normalizer, table: CandidateTable, assignment: Assignment,
                   skip_single: bool = False, ranks: Ranks | None = None) -> tuple[dict[str, np.ndarray], int, int]:
    """Each RM scores the candidates of the prompts `assignment` gives it, in one call for all RMs (the remote ones
    asked at the same time): ({rm: normalized score of each candidate, NaN where it did not score}, forward
    passes, (candidate, RM) scorings asked). Normalized in the RMs' order, whatever order the servers answer in."""
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
                                     for name, rows in jobs.items()}, ranks)
    scores: dict[str, np.ndarray] = {}
    forward = calls = 0
    for rm_name, rows in jobs.items():
        forward += got[rm_name].forward
        calls += len(rows)
        scores[rm_name] = np.full(len(texts), np.nan)
        scores[rm_name][rows] = normalizer(rm_name, got[rm_name].values)
    return scores, forward, calls


@dataclass(frozen=True)
class Ranks:
    """The processes that share a batch's scoring: this one's `rank` of `size`, and `gather(obj)`, the list of
    every rank's `obj` in rank order (a collective: every rank calls it at the same point).
    `laser.training.distributed.ranks()` makes one for a torchrun / accelerate launch."""

    rank: int
    size: int
    gather: Callable[[object], list]

    def share(self, n: int) -> slice:
        """This rank's contiguous share of n items (the shares of ranks 0..size-1 cover them in order)."""
        return slice(n * self.rank // self.size, n * (self.rank + 1) // self.size)

    def run(self, fn: Callable[[], object]) -> list:
        """Every rank's `fn()`, in rank order, on every rank; an error on any rank is raised on every rank (none
        is left waiting for a rank that failed)."""
        error, result = None, None
        try:
            result = fn()
        except Exception as e:  # handed to the other ranks, then raised everywhere
            error = e
        parts = self.gather((error, result))
        for failed, _ in parts:
            if failed is not None:
                raise failed
        return [r for _, r in parts]


def _score_all(reward_models: Mapping, requests: dict[str, tuple[list[str], list[str]]],
               ranks: Ranks | None = None) -> dict:
    """{rm: Scores} of every request.

    One process: each RM scores its request. Several (`ranks`): every rank holds the same RM caches, so each
    finds the same pairs still to run through each RM; it runs its share of them (all of them for an RM it alone
    holds, see `_mine`), the ranks exchange the raw scores once for all RMs, and each rank's `score` call then
    uses them: every rank ends with the same scores, caches and counts as one process would have."""
    if ranks is None or ranks.size == 1:
        return _each(reward_models, requests, lambda rm, request: rm.score(*request))
    todo = {name: reward_models[name].uncached(*request) for name, request in requests.items()}
    mine = {name: _mine(reward_models[name], keys, ranks) for name, keys in todo.items()}
    mine = {name: keys for name, keys in mine.items() if keys}
    parts = ranks.run(lambda: _each(reward_models, mine, lambda rm, keys: rm.compute(keys)))
    out = {}
    for name, request in requests.items():
        got = [part[name] for part in parts if name in part]
        values = np.concatenate([v for v, _ in got]) if got else np.zeros(0)
        out[name] = reward_models[name].score(*request, computed=(todo[name], values, sum(c for _, c in got)))
    return out


def _mine(rm, keys: list, ranks: Ranks) -> list:
    """This rank's share of an RM's pairs to run: all of them on the process that holds an RM placed in one
    (`owner`), none elsewhere; a contiguous share of them where every process holds it."""
    if rm.owner is None:
        return keys[ranks.share(len(keys))]
    return keys if rm.owner == ranks.rank else []


def _each(reward_models: Mapping, requests: dict, fn: Callable) -> dict:
    """{rm: fn(rm, request)} of every request; the remote RMs (`rm.remote`) are asked at the same time, each from
    its own thread (they wait on their servers), the in-process ones one after the other in this thread."""
    remote = [name for name in requests if getattr(reward_models[name], "remote", False)]
    out = {}
    pool = ThreadPoolExecutor(max_workers=len(remote)) if len(remote) > 1 else None
    try:
        futures = {name: pool.submit(fn, reward_models[name], requests[name]) for name in remote} if pool else {}
        for name, request in requests.items():
            if name not in futures:
                out[name] = fn(reward_models[name], request)
        for name, future in futures.items():
            out[name] = future.result()
    finally:
        if pool:
            pool.shutdown(wait=True)
    return out
