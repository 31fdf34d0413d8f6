"""Off-policy evaluation of a target policy from logged (context, arm, propensity, reward) data.

Estimators of V(pi) = E_x[ sum_a pi(a|x) r(x, a) ] (Dudik et al. 2011; Open Bandit Pipeline):
- IPS:   mean_i w_i r_i,                 w_i = pi(a_i|x_i) / p_i (p_i: logging propensity of a_i)
- SNIPS: sum_i w_i r_i / sum_i w_i
- DR:    mean_i [ sum_a pi(a|x_i) q(x_i, a) + w_i (r_i - q(x_i, a_i)) ]  with a reward model q.
Each returns an `Estimate` with a standard error (delta method for SNIPS). Logging propensities must be
> 0 for the logged arms: a greedy router logs 1/0 and cannot be evaluated for another policy, which is
why the routers here can explore with randomized choices.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .base import Policy


@dataclass(frozen=True)
class Estimate:
    """A policy value estimate with its standard error over n logged rows."""

    value: float
    stderr: float
    n: int

    def ci(self, z: float = 1.96) -> tuple[float, float]:
        """Normal-approximation confidence interval (z = 1.96: 95%)."""
        return self.value - z * self.stderr, self.value + z * self.stderr


def _check(arms: np.ndarray, rewards: np.ndarray, logging_probs: np.ndarray,
           target_probs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    t = np.asarray(target_probs, dtype=np.float64)
    if t.ndim != 2 or t.shape[0] == 0:
        raise ValueError(f"target_probs must have shape (n, K) with n >= 1, got {t.shape}")
    n, k = t.shape
    a = np.asarray(arms)
    if a.shape != (n,) or a.dtype.kind not in "iu" or a.min() < 0 or a.max() >= k:
        raise ValueError(f"arms must be integer ids in [0, {k}) of shape ({n},), got {a.dtype} {a.shape}")
    r = np.asarray(rewards, dtype=np.float64)
    if r.shape != (n,) or not np.isfinite(r).all():
        raise ValueError(f"rewards must be finite with shape ({n},), got {r.shape}")
    p = np.asarray(logging_probs, dtype=np.float64)
    if p.shape == (n, k):
        p = p[np.arange(n), a]
    if p.shape != (n,):
        raise ValueError(f"logging_probs must have shape ({n},) or ({n}, {k}), got {p.shape}")
    bad = np.nonzero(~(p > 0) | ~np.isfinite(p))[0]
    if bad.size:
        raise ValueError(f"logging propensity of the logged arm is 0 or invalid in rows {bad[:10].tolist()}: "
                         "off-policy estimates need a logger that explores (probability > 0)")
    return a, r, p, t


def ips(arms: np.ndarray, rewards: np.ndarray, logging_probs: np.ndarray, target_probs: np.ndarray) -> Estimate:
    """Inverse propensity scoring estimate of the target policy's mean reward."""
    a, r, p, t = _check(arms, rewards, logging_probs, target_probs)
    terms = t[np.arange(len(a)), a] / p * r
    return Estimate(float(terms.mean()), float(terms.std(ddof=1) / np.sqrt(len(a))) if len(a) > 1 else np.inf,
                    len(a))


def snips(arms: np.ndarray, rewards: np.ndarray, logging_probs: np.ndarray, target_probs: np.ndarray) -> Estimate:
    """Self-normalized IPS: lower variance, slightly biased; stderr by the delta method."""
    a, r, p, t = _check(arms, rewards, logging_probs, target_probs)
    w = t[np.arange(len(a)), a] / p
    if w.sum() <= 0:
        raise ValueError("the target policy puts zero probability on every logged arm: SNIPS is undefined")
    value = float((w * r).sum() / w.sum())
    n = len(a)
    se = float(np.sqrt(np.mean((w * (r - value)) ** 2) / n) / w.mean()) if n > 1 else np.inf
    return Estimate(value, se, n)


def fit_reward_model(contexts: np.ndarray, arms: np.ndarray, rewards: np.ndarray, n_arms: int,
                     l2: float = 1.0) -> np.ndarray:
    """Per-arm ridge regression of reward on context (with intercept); returns q(x_i, a) as (n, K)."""
    x = np.asarray(contexts, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] != len(arms):
        raise ValueError(f"contexts must have shape ({len(arms)}, d), got {x.shape}")
    a, r = np.asarray(arms), np.asarray(rewards, dtype=np.float64)
    xb = np.hstack([x, np.ones((x.shape[0], 1))])
    q = np.zeros((x.shape[0], n_arms))
    eye = l2 * np.eye(xb.shape[1])
    for k in range(n_arms):
        rows = a == k
        if rows.any():
            coef = np.linalg.solve(xb[rows].T @ xb[rows] + eye, xb[rows].T @ r[rows])
            q[:, k] = xb @ coef
    return q


def doubly_robust(arms: np.ndarray, rewards: np.ndarray, logging_probs: np.ndarray, target_probs: np.ndarray,
                  reward_estimates: np.ndarray) -> Estimate:
    """Doubly robust estimate: the reward model's value plus an IPS correction of its residuals."""
    a, r, p, t = _check(arms, rewards, logging_probs, target_probs)
    q = np.asarray(reward_estimates, dtype=np.float64)
    if q.shape != t.shape or not np.isfinite(q).all():
        raise ValueError(f"reward_estimates must be finite with shape {t.shape}, got {q.shape}")
    idx = np.arange(len(a))
    terms = (t * q).sum(axis=1) + t[idx, a] / p * (r - q[idx, a])
    return Estimate(float(terms.mean()), float(terms.std(ddof=1) / np.sqrt(len(a))) if len(a) > 1 else np.inf,
                    len(a))


def evaluate(policy: Policy, contexts: np.ndarray, arms: np.ndarray, rewards: np.ndarray,
             logging_probs: np.ndarray) -> dict[str, Estimate]:
    """IPS, SNIPS and DR estimates of `policy`'s value on logged data (its `select` probs are the target).

    Calls `policy.select` once on the logged contexts, which advances the policy's RNG.
    """
    target = policy.select(contexts).probs
    q = fit_reward_model(contexts, arms, rewards, policy.n_arms)
    return {"ips": ips(arms, rewards, logging_probs, target),
            "snips": snips(arms, rewards, logging_probs, target),
            "dr": doubly_robust(arms, rewards, logging_probs, target, q)}
