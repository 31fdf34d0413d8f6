"""The one reward-model interface: score (prompt, completion) pairs in length-bucketed batches, with a cache.

Backends implement `_score_batch`; `RewardModel.score` does what every backend needs: input checks,
the per-(prompt, completion) cache, batching by length, and fault isolation (a batch that raises is
retried row by row; rows that raise or return NaN/inf are marked unscorable and counted, never fatal).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger(__name__)


class RewardError(ValueError):
    """Bad input to a reward model (mismatched lengths, non-string texts); the message says what to fix."""


class RewardModelFailed(RewardError):
    """A reward model that cannot work as configured (e.g. a server that refuses the request): raised to the
    caller, never isolated row by row."""


class ScoringUnavailable(Exception):
    """A backend could not score a whole batch for a reason that scoring its rows one by one would not fix
    (a server still down after its retries): the batch's rows become unscorable at once."""


@dataclass
class Scores:
    """Scores of one `score` call. `values` is NaN exactly where `unscorable` is True."""

    values: np.ndarray
    unscorable: np.ndarray
    forward: int = 0       # pairs run through the model in this call (cache misses)
    cache_hits: int = 0
    truncated: int = 0     # inputs cut to the model's maximum length

    @property
    def n_unscorable(self) -> int:
        return int(self.unscorable.sum())


@dataclass
class RewardStats:
    """Running totals of a reward model, for metrics files and cost accounting."""

    calls: int = 0
    scored: int = 0
    forward: int = 0
    cache_hits: int = 0
    unscorable: int = 0
    truncated: int = 0
    computed: int = 0      # pairs this process ran through the model (`forward` less the other ranks' shares)
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k != "errors"}
        d["errors"] = len(self.errors)
        return d


class RewardModel(ABC):
    """Scores completions of prompts. Subclasses implement `_score_batch(prompts, completions)`."""

    # Several processes with `models.rm_placement: shard`: the one process that runs this RM's forward passes
    # (None: every process holds the RM and runs its share).
    owner: int | None = None

    def __init__(self, name: str, batch_size: int = 64, cache_size: int | None = 1_000_000):
        if not name:
            raise RewardError("a reward model needs a non-empty name")
        if batch_size < 1:
            raise RewardError(f"batch_size must be >= 1, got {batch_size}")
        self.name = name
        self.batch_size = batch_size
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple[str, str], float] = OrderedDict()
        self.stats = RewardStats()

    @abstractmethod
    def _score_batch(self, prompts: list[str], completions: list[str]) -> tuple[np.ndarray, int]:
        """Raw scores of one batch and how many of its inputs were truncated."""

    def score(self, prompts: Sequence[str], completions: Sequence[str],
              computed: tuple[Sequence[tuple[str, str]], np.ndarray, int] | None = None) -> Scores:
        """The reward of each completion of its prompt (NaN where unscorable).

        `computed` = (pairs, raw scores, truncated): scores of some of this call's uncached pairs already run
        through the model elsewhere (another rank's share, see `laser.strategies.scoring`); they are used, cached
        and counted as this call's forward passes instead of being run again."""
        prompts, completions = _check_texts(prompts, completions)
        n = len(prompts)
        values = np.full(n, np.nan)
        todo: list[int] = []
        hits = 0
        for i, key in enumerate(zip(prompts, completions, strict=True)):
            if self.cache_size and key in self._cache:
                values[i] = self._cache[key]
                self._cache.move_to_end(key)
                hits += 1
            else:
                todo.append(i)
        # Identical pairs inside one call are scored once.
        unique: dict[tuple[str, str], list[int]] = {}
        for i in todo:
            unique.setdefault((prompts[i], completions[i]), []).append(i)
        keys = _in_batch_order(unique)
        known: dict[tuple[str, str], float] = {}
        truncated = 0
        if computed is not None:
            known.update(zip(computed[0], np.asarray(computed[1], dtype=np.float64), strict=True))
            truncated += int(computed[2])
        run = [k for k in keys if k not in known]
        if run:
            got, cut = self.compute(run)
            known.update(zip(run, got, strict=True))
            truncated += cut
        for key in keys:
            v = known[key]
            for i in unique[key]:
                values[i] = v
            if np.isfinite(v) and self.cache_size:
                self._cache[key] = float(v)
        if self.cache_size:
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        values[~np.isfinite(values)] = np.nan
        bad = np.isnan(values)
        out = Scores(values=values, unscorable=bad, forward=len(keys), cache_hits=hits + len(todo) - len(keys),
                     truncated=truncated)
        s = self.stats
        s.calls += 1
        s.scored += n
        s.forward += out.forward
        s.cache_hits += out.cache_hits
        s.unscorable += out.n_unscorable
        s.truncated += truncated
        if out.n_unscorable:
            log.warning("reward model %s: %d of %d completions unscorable (NaN/inf or error)", self.name,
                        out.n_unscorable, n)
        if truncated:
            log.warning("reward model %s: %d inputs longer than its maximum length were truncated", self.name,
                        truncated)
        return out

    def uncached(self, prompts: Sequence[str], completions: Sequence[str]) -> list[tuple[str, str]]:
        """The distinct (prompt, completion) pairs a `score` call of these would run through the model (those not
        cached), in the order it would run them."""
        prompts, completions = _check_texts(prompts, completions)
        unique: dict[tuple[str, str], None] = {}
        for key in zip(prompts, completions, strict=True):
            if not (self.cache_size and key in self._cache):
                unique[key] = None
        return _in_batch_order(unique)

    def compute(self, keys: Sequence[tuple[str, str]]) -> tuple[np.ndarray, int]:
        """(raw scores, inputs truncated) of distinct (prompt, completion) pairs, `batch_size` at a time (a failing
        batch costs only its own rows, NaN); the cache is left as it is, and of the totals only `computed` moves
        (the `score` call that uses these values counts them)."""
        keys = list(keys)
        self.stats.computed += len(keys)
        values, truncated = np.full(len(keys), np.nan), 0
        for start in range(0, len(keys), self.batch_size):
            got, cut = self._run(keys[start:start + self.batch_size])
            values[start:start + len(got)] = got
            truncated += cut
        return values, truncated

    def _run(self, keys: list[tuple[str, str]]) -> tuple[np.ndarray, int]:
        """Score a batch; if it raises, score its rows one by one so that one bad row costs only itself."""
        try:
            return self._checked(keys)
        except RewardModelFailed:
            raise
        except ScoringUnavailable as e:
            self.stats.errors.append(f"{type(e).__name__}: {e}")
            log.warning("reward model %s could not score %d rows: %s", self.name, len(keys), e)
            return np.full(len(keys), np.nan), 0
        except Exception as e:  # noqa: BLE001 - any backend failure is isolated, counted and logged
            if len(keys) == 1:
                self.stats.errors.append(f"{type(e).__name__}: {e}")
                log.warning("reward model %s failed on one row: %s: %s", self.name, type(e).__name__, e)
                return np.array([np.nan]), 0
        values, truncated = np.full(len(keys), np.nan), 0
        for j, key in enumerate(keys):
            v, cut = self._run([key])
            values[j], truncated = v[0], truncated + cut
        return values, truncated

    def _checked(self, keys: list[tuple[str, str]]) -> tuple[np.ndarray, int]:
        raw, cut = self._score_batch([k[0] for k in keys], [k[1] for k in keys])
        raw = np.asarray(raw, dtype=np.float64).reshape(-1)
        if raw.shape[0] != len(keys):
            raise RewardError(f"reward model {self.name} returned {raw.shape[0]} scores for {len(keys)} inputs")
        return raw, int(cut)

    def on_round(self, round: int) -> None:  # noqa: B027 - a hook most reward models do not need
        """Told by the trainer at the start of each round (a no-op but for `Redeployed`)."""

    def clear_cache(self) -> None:
        """Forget cached scores (e.g. after the reward model's weights change)."""
        self._cache.clear()

    def state_dict(self) -> dict:
        """The cache and running totals (a resumed run then pays exactly the forward passes it would have)."""
        return {"cache": [(p, c, v) for (p, c), v in self._cache.items()],
                "stats": {k: v for k, v in self.stats.__dict__.items()}}

    def load_state_dict(self, state: dict) -> None:
        self._cache = OrderedDict(((p, c), v) for p, c, v in state["cache"])
        self.stats = RewardStats(**{k: (list(v) if k == "errors" else v) for k, v in state["stats"].items()})


def _in_batch_order(keys) -> list[tuple[str, str]]:
    """Pairs sorted by length (a stable sort): batches of similar lengths, little padding in each."""
    return sorted(keys, key=lambda k: len(k[0]) + len(k[1]))


def _check_texts(prompts: Sequence[str], completions: Sequence[str]) -> tuple[list[str], list[str]]:
    if isinstance(prompts, str) or isinstance(completions, str):
        raise RewardError("prompts and completions must be sequences of strings, not a single string")
    prompts, completions = list(prompts), list(completions)
    if len(prompts) != len(completions):
        raise RewardError(f"got {len(prompts)} prompts and {len(completions)} completions; pass one prompt per "
                          "completion (repeat a prompt for each of its candidates)")
    for what, seq in (("prompt", prompts), ("completion", completions)):
        for i, t in enumerate(seq):
            if not isinstance(t, str):
                raise RewardError(f"{what} {i} is {type(t).__name__}, expected str")
    return prompts, completions


class HeldElsewhere(RewardModel):
    """A reward model loaded in another process of the launch (`models.rm_placement: shard`): this process keeps
    its cache and counts, filled with the scores that process `owner` computes and shares."""

    def __init__(self, name: str, owner: int, batch_size: int = 64, cache_size: int | None = 1_000_000):
        super().__init__(name, batch_size, cache_size)
        self.owner = owner

    def _score_batch(self, prompts: list[str], completions: list[str]) -> tuple[np.ndarray, int]:
        raise RewardModelFailed(f"reward model {self.name} is loaded in process {self.owner}, which scores it; "
                                "this process only receives its scores")


class Redeployed(RewardModel):
    """Reward model `original` under its own name until round `at`, then `replacement`'s scores under that name, as a
    server redeployed with other weights behind the same address (the `models.rm_swap` drift scenario). Its cache is
    cleared at the swap, as a redeployment would invalidate it; it keeps its own cache and counts throughout."""

    def __init__(self, original: RewardModel, replacement: RewardModel, at: int):
        super().__init__(original.name, original.batch_size, original.cache_size)
        self.original, self.replacement, self.at = original, replacement, int(at)
        self.owner = original.owner
        self.swapped = False

    def on_round(self, round: int) -> None:
        if round >= self.at and not self.swapped:
            self.swapped = True
            self.clear_cache()

    def _score_batch(self, prompts: list[str], completions: list[str]) -> tuple[np.ndarray, int]:
        backend = self.replacement if self.swapped else self.original
        return backend._score_batch(prompts, completions)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "swapped": self.swapped}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.swapped = bool(state.get("swapped", False))
