"""P(arm k has the highest score) when the arms' scores are independent Gaussians (Thompson sampling)."""

from __future__ import annotations

import numpy as np
from scipy.special import log_ndtr, ndtri

# Nodes per arm on the common integration grid: each arm contributes its own quantiles, so a narrow
# arm (small std) is resolved as well as a wide one. Error < 2e-3 against 10^6-draw Monte Carlo,
# including std ratios of 100x (tests/test_bandits_linear.py).
_NODES_PER_ARM = 48
_Q = ndtri((np.arange(_NODES_PER_ARM) + 0.5) / _NODES_PER_ARM)


def argmax_probs(mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Return (n, K) probabilities that each arm's score N(mean, std^2) is the largest, rows summing to 1.

    P(k) = integral of prod_{j != k} F_j dF_k, evaluated as a Stieltjes sum on the union of every arm's
    quantile nodes (plus -inf / +inf). Arms with std == 0 are point masses; exact ties split evenly.
    """
    n, k = mean.shape
    if k == 1:
        return np.ones((n, 1))
    std = np.maximum(std, 1e-12 * np.maximum(1.0, np.abs(mean)))
    grid = (mean[:, :, None] + std[:, :, None] * _Q).reshape(n, -1)
    grid.sort(axis=1)
    # log F_j(t) for every arm j at every grid point t: (n, K, M)
    logf = log_ndtr((grid[:, None, :] - mean[:, :, None]) / std[:, :, None])
    f = np.exp(logf)
    others = np.exp(logf.sum(axis=1, keepdims=True) - logf)  # prod_{j != k} F_j
    # Pad with t = -inf (all F = 0) and t = +inf (all F = 1), then trapezoid in dF_k.
    zeros, ones = np.zeros((n, k, 1)), np.ones((n, k, 1))
    f = np.concatenate([zeros, f, ones], axis=2)
    others = np.concatenate([zeros, others, ones], axis=2)
    probs = (np.diff(f, axis=2) * 0.5 * (others[:, :, 1:] + others[:, :, :-1])).sum(axis=2)
    probs = np.clip(probs, 0.0, None)
    return probs / probs.sum(axis=1, keepdims=True)
