"""Shared pieces of every policy: the Decision record, input checks, tie-split greedy choice, state."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

_DTYPES = {"float64": np.float64, "float32": np.float32}


class Decision:
    """What `select` returns: the chosen arm per context, each arm's score, and each arm's probability
    of being chosen for that context.

    arms: (n,) int64; scores: (n, K) float64; probs: (n, K) float64, rows summing to 1. `probs` may be
    given as a zero-argument function, evaluated on first access (Thompson sampling's exact
    probabilities cost a numerical integral that a caller who never reads them should not pay).
    expected: (n, K) float64, each arm's estimated mean reward (what `expected(contexts)` returns), when
    the policy computed it to select (UCB policies: score = expected + bonus); None otherwise.
    width: (n, K) float64, the half-width of each arm's confidence interval around `expected` (UCB: the
    exploration bonus; Thompson sampling: the scale of its posterior draws), for policies that keep one;
    None otherwise. A caller tells from expected - width and expected + width where the policy is sure.
    """

    __slots__ = ("arms", "scores", "_probs", "expected", "width")

    def __init__(self, arms: np.ndarray, scores: np.ndarray, probs: np.ndarray | Callable[[], np.ndarray],
                 expected: np.ndarray | None = None, width: np.ndarray | None = None):
        self.arms = arms
        self.scores = scores
        self._probs = probs
        self.expected = expected
        self.width = width

    @property
    def probs(self) -> np.ndarray:
        """(n, K) selection probabilities."""
        if callable(self._probs):
            self._probs = self._probs()
        return self._probs

    def __len__(self) -> int:
        return int(self.arms.shape[0])

    def __repr__(self) -> str:
        return f"Decision(arms={self.arms!r}, scores={self.scores!r}, probs={self.probs!r})"


def resolve_dtype(dtype: str) -> type:
    """Map a dtype name to the numpy type used for a policy's state."""
    try:
        return _DTYPES[dtype]
    except KeyError:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}") from None


def check_positive_int(name: str, value: Any) -> int:
    """Return value as int, or raise ValueError naming the argument."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_finite_float(name: str, value: Any, *, low: float | None = None, high: float | None = None,
                       low_open: bool = False) -> float:
    """Return value as float within [low, high] (or (low, high] when low_open), else raise ValueError."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    bad = not np.isfinite(v)
    if low is not None:
        bad |= v <= low if low_open else v < low
    if high is not None:
        bad |= v > high
    if bad:
        lo = "-inf" if low is None else f"{low}"
        hi = "inf" if high is None else f"{high}"
        bracket = "(" if low_open else "["
        raise ValueError(f"{name} must be a finite number in {bracket}{lo}, {hi}], got {value!r}")
    return v


def greedy_choice(scores: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Argmax per row with ties broken uniformly at random; probs put equal mass on the tied arms.

    Scores must be finite. Scores equal up to a relative 1e-12 count as tied (e.g. the all-zero start).
    """
    if scores.shape[0] == 1:  # one-instance fast path: as few numpy calls as possible
        row = scores[0]
        arm = int(row.argmax())
        best = float(row[arm])
        tied = row >= best - 1e-12 * max(1.0, abs(best))
        n_tied = int(np.count_nonzero(tied))
        if n_tied > 1:
            arm = int(np.flatnonzero(tied)[rng.integers(n_tied)])
        return np.array([arm], dtype=np.int64), (tied / n_tied)[None, :]
    best = scores.max(axis=1, keepdims=True)
    tied = scores >= best - 1e-12 * np.maximum(1.0, np.abs(best))
    n_tied = tied.sum(axis=1)
    probs = tied / n_tied[:, None]
    if n_tied.max() == 1:
        arms = scores.argmax(axis=1)
    else:
        arms = np.where(tied, rng.random(scores.shape), -1.0).argmax(axis=1)
    return arms.astype(np.int64), probs


class Policy:
    """Base class of all policies: holds K, d, the seeded RNG, input validation and state (de)serialization.

    Subclasses list the attributes that make up their learned state in `_state_attrs`; `state_dict`
    and `load_state_dict` handle them generically, together with the RNG state.
    """

    name: ClassVar[str] = "policy"
    _state_attrs: ClassVar[tuple[str, ...]] = ()

    def __init__(self, n_arms: int, dim: int, seed: int | None = 0):
        self.n_arms = check_positive_int("n_arms", n_arms)
        self.dim = check_positive_int("dim", dim)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int | np.integer)):
            raise ValueError(f"seed must be an integer or None, got {seed!r}")
        self.seed = None if seed is None else int(seed)
        self.rng = np.random.default_rng(seed)
        self._dtype = np.float64

    # ----- the contract -------------------------------------------------------------------------
    def select(self, contexts: np.ndarray) -> Decision:
        """Choose one arm per context row; returns arms, per-arm scores and selection probabilities."""
        raise NotImplementedError

    def update(self, contexts: np.ndarray, arms: np.ndarray, rewards: np.ndarray) -> None:
        """Learn from the rewards observed for the arms played on these contexts."""
        raise NotImplementedError

    def expected(self, contexts: np.ndarray) -> np.ndarray:
        """(n, K) float64: the policy's current estimate of each arm's reward for each context, without
        any exploration bonus or sampling (what `exploit` maximizes)."""
        raise NotImplementedError(f"{self.name} keeps no reward estimate")

    def interval(self, contexts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """((n, K) estimate, (n, K) half-width) of each arm's reward for each context: the policy's confidence
        interval (UCB: its exploration bonus; Thompson sampling: its posterior's scale), as `Decision` carries it.
        Policies that keep no interval raise NotImplementedError."""
        raise NotImplementedError(f"{self.name} keeps no confidence interval")

    def exploit(self, contexts: np.ndarray) -> Decision:
        """The arm with the best `expected` reward for each context (ties split at random): the choice of
        a policy that has stopped exploring, e.g. for instances whose reward is never observed."""
        x = self._check_contexts(contexts)
        scores = np.asarray(self.expected(x), dtype=np.float64)
        arms, probs = greedy_choice(scores, self.rng)
        return Decision(arms, scores, probs)

    def params(self) -> dict[str, Any]:
        """Constructor arguments (JSON-safe) that rebuild an untrained copy of this policy."""
        return {"n_arms": self.n_arms, "dim": self.dim, "seed": self.seed}

    def forget(self, arms: Any) -> None:
        """Return what the policy learned of `arms` to its untrained state (the other arms keep theirs): for an arm
        whose rewards changed, so that its old estimate does not outweigh what it earns now. Every per-arm part
        of the learned state (an array in `_state_attrs` whose first axis is the arms) is reset."""
        arms = np.unique(np.asarray(arms, dtype=np.int64).reshape(-1))
        if arms.size and (arms.min() < 0 or arms.max() >= self.n_arms):
            raise ValueError(f"arms must be in [0, {self.n_arms}), got {arms.tolist()}")
        fresh = type(self)(**self.params())
        for attr in self._state_attrs:
            cur = getattr(self, attr)
            if isinstance(cur, np.ndarray) and cur.ndim and cur.shape[0] == self.n_arms:
                cur[arms] = getattr(fresh, attr)[arms]
        self._after_load()

    # ----- input checks (cheap: they run on the one-instance path) ------------------------------
    def _check_contexts(self, contexts: Any) -> np.ndarray:
        try:
            x = np.asarray(contexts, dtype=self._dtype)
        except (TypeError, ValueError) as e:
            raise ValueError(f"contexts must be a numeric array of shape (n, {self.dim}): {e}") from None
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"contexts must have shape (n, {self.dim}), got {x.shape}")
        if x.shape[0] == 0:
            raise ValueError(f"contexts is empty: expected shape (n, {self.dim}) with n >= 1")
        if not np.isfinite(x).all():
            rows = np.unique(np.nonzero(~np.isfinite(x))[0])[:10].tolist()
            raise ValueError(f"contexts contain NaN or inf (rows {rows}); expected finite values")
        return x

    def _check_feedback(self, contexts: Any, arms: Any, rewards: Any,
                        checked: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Validate update inputs; `checked` is an already validated copy of contexts, if the caller has one."""
        x = self._check_contexts(contexts) if checked is None else checked
        n = x.shape[0]
        a = np.asarray(arms)
        if a.shape != (n,):
            raise ValueError(f"arms must have shape ({n},) to match contexts, got {a.shape}")
        if a.dtype.kind not in "iu":
            if a.dtype.kind == "f" and np.all(np.isfinite(a)) and np.all(a == np.round(a)):
                a = a.astype(np.int64)
            else:
                raise ValueError(f"arms must be integer arm ids in [0, {self.n_arms}), got dtype {a.dtype}")
        if (not 0 <= int(a[0]) < self.n_arms) if n == 1 else (a.min() < 0 or a.max() >= self.n_arms):
            bad = a[(a < 0) | (a >= self.n_arms)][:10].tolist()
            raise ValueError(f"arms must be in [0, {self.n_arms}), got out-of-range ids {bad}")
        try:
            r = np.asarray(rewards, dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise ValueError(f"rewards must be a numeric array of shape ({n},): {e}") from None
        if r.shape != (n,):
            raise ValueError(f"rewards must have shape ({n},) to match contexts, got {r.shape}")
        if not (math.isfinite(r[0]) if n == 1 else np.isfinite(r).all()):
            rows = np.nonzero(~np.isfinite(r))[0][:10].tolist()
            raise ValueError(f"rewards contain NaN or inf (rows {rows}); expected finite values")
        return x, a.astype(np.int64, copy=False), r

    # ----- state --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to restore this policy exactly: params, learned arrays, RNG state."""
        state = {}
        for attr in self._state_attrs:
            v = getattr(self, attr)
            state[attr] = v.copy() if isinstance(v, np.ndarray) else v
        return {"policy": self.name, "params": self.params(), "state": state,
                "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned; raises ValueError if it belongs to another policy or shape."""
        if state.get("policy") != self.name:
            raise ValueError(f"state is for policy {state.get('policy')!r}, not {self.name!r}")
        if state.get("params") != self.params():
            raise ValueError(f"state params {state.get('params')} do not match this policy's {self.params()}")
        learned = state["state"]
        missing = set(self._state_attrs) - set(learned)
        if missing:
            raise ValueError(f"state is missing {sorted(missing)}")
        new = {}
        for attr in self._state_attrs:
            cur, v = getattr(self, attr), learned[attr]
            if isinstance(cur, np.ndarray):
                v = np.array(v, dtype=cur.dtype)
                if v.shape != cur.shape:
                    raise ValueError(f"state[{attr!r}] has shape {v.shape}, expected {cur.shape}")
            new[attr] = v
        rng = np.random.default_rng()
        rng.bit_generator.state = state["rng"]
        # Validated everything first: assign only now, so that a bad state never half-loads.
        for attr, v in new.items():
            setattr(self, attr, v)
        self.rng = rng
        self._after_load()

    def _after_load(self) -> None:
        """Hook: drop caches derived from the learned state."""

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"
