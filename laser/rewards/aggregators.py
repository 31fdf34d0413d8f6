"""Aggregators: K reward scores per candidate -> one score. Pure numpy; `scores` has shape (n, K).

Scores should be normalized per RM first (`laser.rewards.normalize`): the aggregators assume the K
columns live on one scale. The multi-objective scalarizations follow MORLAIF (Williams 2024) and the
ensembles Coste et al. (ICLR 2024).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .base import RewardError


def _matrix(scores) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2 or s.shape[1] < 1:
        raise RewardError(f"scores must have shape (n, K) with K >= 1, got {s.shape}")
    return s


def mean(scores) -> np.ndarray:
    """r = (1/K) sum_k s_k."""
    return _matrix(scores).mean(axis=1)


def weighted(scores, weights) -> np.ndarray:
    """r = sum_k w_k s_k / sum_k w_k, with w_k >= 0 (the weighted linear scalarization)."""
    s = _matrix(scores)
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    if w.shape[0] != s.shape[1] or (w < 0).any() or not w.sum() > 0:
        raise RewardError(f"weights must be {s.shape[1]} non-negative numbers with a positive sum, got {w.tolist()}")
    return s @ (w / w.sum())


def worst_case(scores) -> np.ndarray:
    """r = min_k s_k (max-min)."""
    return _matrix(scores).min(axis=1)


def uncertainty_weighted(scores, lam: float = 0.5) -> np.ndarray:
    """r = mean_k s_k - lam * var_k s_k (population variance; Coste et al.)."""
    s = _matrix(scores)
    return s.mean(axis=1) - lam * s.var(axis=1)


def soft_max_min(scores, temperature: float = 1.0) -> np.ndarray:
    """r = sum_k softmax(-s / tau)_k s_k: a smooth minimum (tau -> 0: min; tau -> inf: mean)."""
    if not temperature > 0:
        raise RewardError(f"temperature must be > 0, got {temperature}")
    s = _matrix(scores)
    z = -s / temperature
    w = np.exp(z - z.max(axis=1, keepdims=True))
    return (w * s).sum(axis=1) / w.sum(axis=1)


def lower_quantile(scores) -> np.ndarray:
    """r = mean of the ceil(K/3) lowest scores (the lowest third; K=1 or 2: the minimum)."""
    s = np.sort(_matrix(scores), axis=1)
    m = int(np.ceil(s.shape[1] / 3))
    return s[:, :m].mean(axis=1)


def max_median(scores) -> np.ndarray:
    """r = median_k s_k."""
    return np.median(_matrix(scores), axis=1)


def bernoulli_nash(scores) -> np.ndarray:
    """r = (prod_k sigmoid(s_k))^(1/K): the Nash product of per-RM "this answer is good" probabilities.

    A product of raw signed logits is unstable (its sign flips with the number of negative factors), so
    each normalized score is first mapped to a probability by the logistic function, which is positive,
    monotone and the same for every candidate; the geometric mean is computed in log space.
    """
    s = _matrix(scores)
    log_sig = -np.logaddexp(0.0, -s)
    return np.exp(log_sig.mean(axis=1))


AGGREGATORS: dict[str, Callable[..., np.ndarray]] = {
    "mean": mean, "weighted": weighted, "worst_case": worst_case, "uncertainty_weighted": uncertainty_weighted,
    "soft_max_min": soft_max_min, "lower_quantile": lower_quantile, "max_median": max_median,
    "bernoulli_nash": bernoulli_nash,
}


def aggregate(name: str, scores, **params) -> np.ndarray:
    """Apply the aggregator called `name` (see AGGREGATORS) with its parameters."""
    try:
        fn = AGGREGATORS[name]
    except KeyError:
        raise RewardError(f"unknown aggregator {name!r}; choose one of {sorted(AGGREGATORS)}") from None
    return fn(scores, **params)
