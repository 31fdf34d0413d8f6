"""Kernel UCB: each arm's reward estimated from what it earned on similar contexts.

A linear policy models each arm's reward as x.theta_k. When contexts form clusters (one per task
domain, say) and an arm is good on one cluster and poor on the others, no linear function fits all of
them at once: a ridge fit that must also be right on three other clusters is wrong on some instances of
the fourth, however much data it sees. A kernel policy compares a context with the contexts each arm was
played on, so its estimate is local: what the arm earned on similar instances.

A Gaussian process with the same kernel is the textbook alternative (GP-UCB, Srinivas et al. 2010). It
was not kept: where contexts of one kind are only moderately similar, a GP's posterior mean stays near its
prior 0, so its choices rest on tiny differences (measured in docs/router.md).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from .base import Decision, Policy, check_finite_float, check_positive_int, greedy_choice, resolve_dtype


class KernelUCB(Policy):
    """UCB on a kernel-weighted Bayesian mean per arm (Nadaraya-Watson regression with a Gaussian prior).

    For a context x, each observation i of arm k (context x_i, reward r_i) weighs
    w_i = exp(-|x - x_i|^2 / (2 length_scale^2)); with n_k(x) = sum w_i, the arm's estimate is the
    posterior of a mean reward with prior N(0, 1) from observations of noise variance `noise` / w_i:

        mean_k(x) = sum w_i r_i / (n_k(x) + noise),    sd_k(x) = sqrt(noise / (n_k(x) + noise)).

    `select` picks the largest mean + alpha * sd, `expected` returns the means. Only the weights' ratios
    and their total against `noise` matter: the estimate is what the arm earned on the most similar
    contexts, however far apart contexts are on average, and an arm with nothing similar keeps the prior,
    mean 0 and sd 1 (rewards should be centred so that 0 means "no better than nothing": the rerank gains
    of LASeR's router are). `noise` is the reward variance of one fully similar observation; rerank gains
    in [-1, 1] that disagree with their neighbours by about 0.5 suggest the default 0.25.

    For unit-norm contexts |x - y|^2 = 2 - 2 cos(x, y): with the default length_scale 0.35 a context at
    cosine 0.9 weighs exp(-0.82) = 0.44 of an identical one, at cosine 0.5 exp(-4.1) = 0.017.

    Each arm keeps its last `capacity` observations (a ring buffer: the oldest is dropped first, which also
    follows contexts that drift as the policy producing them trains). A select costs O(n K m d) for n
    contexts and m kept observations per arm.
    """

    name: ClassVar[str] = "kernel_ucb"
    _state_attrs: ClassVar[tuple[str, ...]] = ("xs", "ys", "kept", "head", "counts")

    def __init__(self, n_arms: int, dim: int, alpha: float = 1.0, length_scale: float = 0.35, noise: float = 0.25,
                 capacity: int = 512, dtype: str = "float64", seed: int | None = 0):
        super().__init__(n_arms, dim, seed)
        self.alpha = check_finite_float("alpha", alpha, low=0.0)
        self.length_scale = check_finite_float("length_scale", length_scale, low=0.0, low_open=True)
        self.noise = check_finite_float("noise", noise, low=0.0, low_open=True)
        self.capacity = check_positive_int("capacity", capacity)
        self.dtype = dtype
        self._store = resolve_dtype(dtype)
        k, m = self.n_arms, self.capacity
        self.xs = np.zeros((k, m, self.dim), dtype=self._store)  # kept contexts per arm (first `kept` rows)
        self.ys = np.zeros((k, m), dtype=np.float64)
        self.kept = np.zeros(k, dtype=np.int64)  # rows in use per arm
        self.head = np.zeros(k, dtype=np.int64)  # next row to overwrite once an arm's buffer is full
        self.counts = np.zeros(k, dtype=np.float64)  # observations ever made per arm

    def params(self) -> dict[str, Any]:
        """Constructor arguments (JSON-safe) that rebuild an untrained copy of this policy."""
        return {**super().params(), "alpha": self.alpha, "length_scale": self.length_scale, "noise": self.noise,
                "capacity": self.capacity, "dtype": self.dtype}

    def _mean_sd(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = x.shape[0]
        weight, total = np.zeros((n, self.n_arms)), np.zeros((n, self.n_arms))
        sq_x = (x * x).sum(1)[:, None]
        for k in range(self.n_arms):
            m = int(self.kept[k])
            if m == 0:
                continue
            xs = self.xs[k, :m].astype(np.float64, copy=False)
            sq = np.maximum(sq_x + (xs * xs).sum(1)[None, :] - 2.0 * (x @ xs.T), 0.0)
            w = np.exp(-sq / (2.0 * self.length_scale ** 2))
            weight[:, k], total[:, k] = w.sum(1), w @ self.ys[k, :m]
        denom = weight + self.noise
        return total / denom, np.sqrt(self.noise / denom)

    def expected(self, contexts: np.ndarray) -> np.ndarray:
        """Each arm's posterior mean reward for each context, (n, K) float64 (0 for an arm never played)."""
        return self._mean_sd(self._check_contexts(contexts))[0]

    def interval(self, contexts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(posterior mean, alpha * posterior sd) of each arm's reward for each context."""
        mean, sd = self._mean_sd(self._check_contexts(contexts))
        return mean, self.alpha * sd

    def select(self, contexts: np.ndarray) -> Decision:
        """Pick the arm with the highest upper confidence bound, mean + alpha * sd, for each context."""
        mean, width = self.interval(contexts)
        arms, probs = greedy_choice(mean + width, self.rng)
        return Decision(arms, mean + width, probs, expected=mean, width=width)

    def update(self, contexts: np.ndarray, arms: np.ndarray, rewards: np.ndarray) -> None:
        """Add the (context, reward) observations to the played arms' buffers."""
        x, a, r = self._check_feedback(contexts, arms, rewards)
        for i in range(x.shape[0]):
            k = int(a[i])
            if self.kept[k] < self.capacity:
                row = self.kept[k]
                self.kept[k] += 1
            else:
                row = self.head[k]
                self.head[k] = (row + 1) % self.capacity
            self.xs[k, row] = x[i]
            self.ys[k, row] = r[i]
            self.counts[k] += 1
