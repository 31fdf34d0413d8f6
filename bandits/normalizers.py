"""Reward normalizers: map raw bandit rewards onto a comparable scale before `update`."""

from __future__ import annotations

import bisect
import math
from typing import Any

import numpy as np

from .base import check_finite_float, check_positive_int


def _as_finite_1d(name: str, values: Any) -> np.ndarray:
    v = np.atleast_1d(np.asarray(values, dtype=np.float64))
    if v.ndim != 1:
        raise ValueError(f"{name} must be a scalar or a 1-D array, got shape {v.shape}")
    if not np.isfinite(v).all():
        raise ValueError(f"{name} contain NaN or inf at positions {np.nonzero(~np.isfinite(v))[0][:10].tolist()}")
    return v


class QuantileNormalizer:
    """The LASeR code's scheme: 0 at or below the `low` quantile of the reward history, 1 at or above the
    `high` quantile, linear in between (defaults: the 20th and 80th percentiles).

    `normalize(values)` adds each value to the history first, then maps it against the updated history,
    one value at a time in order. While the two quantiles coincide (e.g. the very first reward) a
    value equal to them maps to 0.5. `window` keeps only the most recent rewards (None: all of them).

    The history is also kept sorted, so that a quantile is an index lookup (O(log n) plus an insertion)
    instead of a pass over the whole history; the result is exactly numpy's `quantile` (method linear).
    """

    def __init__(self, low: float = 0.2, high: float = 0.8, window: int | None = None):
        self.low = check_finite_float("low", low, low=0.0, high=1.0)
        self.high = check_finite_float("high", high, low=0.0, high=1.0)
        if not self.low < self.high:
            raise ValueError(f"low must be < high, got low={low}, high={high}")
        self.window = None if window is None else check_positive_int("window", window)
        self.history = []

    @property
    def history(self) -> list[float]:
        """The rewards seen (oldest first; the last `window` of them when windowed)."""
        return self._history

    @history.setter
    def history(self, values) -> None:
        self._history = [float(x) for x in values]
        self._sorted = sorted(self._history)

    def _quantile(self, q: float) -> float:
        """numpy.quantile(history, q) (method linear), from the sorted history."""
        s, n = self._sorted, len(self._sorted)
        vi = (n - 1) * q
        lo = math.floor(vi)
        if vi >= n - 1:
            return s[-1]
        a, b, t = s[lo], s[lo + 1], vi - lo
        diff = b - a
        return b - diff * (1 - t) if t >= 0.5 else a + diff * t

    def _map(self, v: np.ndarray) -> np.ndarray:
        q_low, q_high = self._quantile(self.low), self._quantile(self.high)
        if q_high <= q_low:
            return np.where(v > q_high, 1.0, np.where(v < q_low, 0.0, 0.5))
        return np.clip((v - q_low) / (q_high - q_low), 0.0, 1.0)

    def _add(self, x: float) -> None:
        self._history.append(x)
        bisect.insort(self._sorted, x)
        if self.window is not None and len(self._history) > self.window:
            old = self._history.pop(0)
            del self._sorted[bisect.bisect_left(self._sorted, old)]

    def normalize(self, values: Any) -> np.ndarray:
        """Add the values to the history (in order) and return each one mapped to [0, 1]."""
        v = _as_finite_1d("values", values)
        out = np.empty_like(v)
        for i, x in enumerate(v):
            self._add(float(x))
            out[i] = self._map(np.array(x))
        return out

    def normalize_together(self, values: Any) -> np.ndarray:
        """Add the values to the history at once, then map each against it: rewards that arrive together
        (e.g. every arm's on the same instances) map alike whatever their order."""
        v = _as_finite_1d("values", values)
        for x in v:
            self._add(float(x))
        return self._map(v)

    def transform(self, values: Any) -> np.ndarray:
        """Map values against the current history without adding them."""
        v = _as_finite_1d("values", values)
        if not self.history:
            return np.full_like(v, 0.5)
        return self._map(v)

    def state_dict(self) -> dict[str, Any]:
        """Parameters and history, JSON-safe."""
        return {"low": self.low, "high": self.high, "window": self.window, "history": list(self.history)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""
        other = QuantileNormalizer(state["low"], state["high"], state["window"])
        other.history = [float(x) for x in _as_finite_1d("history", state["history"])] if state["history"] else []
        self.__dict__.update(other.__dict__)


class ZScoreNormalizer:
    """Running z-score with Welford statistics: (r - mean) / std over every reward seen, the current one
    included (added first, like `QuantileNormalizer`); 0 while the std is 0. `clip` bounds the result."""

    def __init__(self, clip: float | None = None, eps: float = 1e-8):
        self.clip = None if clip is None else check_finite_float("clip", clip, low=0.0, low_open=True)
        self.eps = check_finite_float("eps", eps, low=0.0)
        self.count = 0
        self.mean = 0.0
        self.m2 = 0.0

    @property
    def std(self) -> float:
        """Population standard deviation of the rewards seen so far."""
        return float(np.sqrt(self.m2 / self.count)) if self.count else 0.0

    def _map(self, v: np.ndarray) -> np.ndarray:
        std = self.std
        z = np.zeros_like(v) if std <= self.eps else (v - self.mean) / std
        return z if self.clip is None else np.clip(z, -self.clip, self.clip)

    def _add(self, x: float) -> None:
        self.count += 1
        delta = x - self.mean
        self.mean += delta / self.count
        self.m2 += delta * (x - self.mean)

    def normalize(self, values: Any) -> np.ndarray:
        """Add the values to the statistics (in order) and return each one's z-score."""
        v = _as_finite_1d("values", values)
        out = np.empty_like(v)
        for i, x in enumerate(v):
            self._add(float(x))
            out[i] = self._map(np.array(x))
        return out

    def normalize_together(self, values: Any) -> np.ndarray:
        """Add the values to the statistics at once, then return each one's z-score against them (order-free)."""
        v = _as_finite_1d("values", values)
        for x in v:
            self._add(float(x))
        return self._map(v)

    def transform(self, values: Any) -> np.ndarray:
        """z-scores against the current statistics, without adding the values."""
        return self._map(_as_finite_1d("values", values))

    def state_dict(self) -> dict[str, Any]:
        """Parameters and Welford statistics, JSON-safe."""
        return {"clip": self.clip, "eps": self.eps, "count": self.count, "mean": self.mean, "m2": self.m2}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""
        other = ZScoreNormalizer(state["clip"], state["eps"])
        other.count, other.mean, other.m2 = int(state["count"]), float(state["mean"]), float(state["m2"])
        self.__dict__.update(other.__dict__)
