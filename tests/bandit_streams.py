"""Synthetic bandit streams shared by the bandit tests (seeded, fully precomputed)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


class LinearStream:
    """K arms with unit-norm theta_k; contexts x ~ N(0, I/d); reward x.theta_k + N(0, noise^2).

    `switch_at` permutes the arms' parameters from that step on (the best arm per context changes).
    """

    def __init__(self, k: int, d: int, t: int, noise: float = 0.1, seed: int = 0, switch_at: int | None = None):
        rng = np.random.default_rng(seed)
        theta = rng.normal(size=(k, d))
        theta /= np.linalg.norm(theta, axis=1, keepdims=True)
        self.x = rng.normal(size=(t, d)) / np.sqrt(d)
        self.expected = self.x @ theta.T
        if switch_at is not None:
            perm = np.roll(np.arange(k), 1)
            self.expected[switch_at:] = self.x[switch_at:] @ theta[perm].T
        self.rewards = self.expected + noise * rng.normal(size=(t, k))

    def instant_regret(self, arms: np.ndarray) -> np.ndarray:
        """Per-step regret of the played arms (expected reward of the best arm minus the played one)."""
        e = self.expected[: len(arms)]
        return e.max(axis=1) - e[np.arange(len(arms)), arms]


def play(stream: LinearStream, choose: Callable[[np.ndarray], int], learn: Callable[[np.ndarray, int, float], None],
         steps: int | None = None) -> np.ndarray:
    """Run a policy one instance at a time through the stream; returns the per-step regret."""
    steps = len(stream.x) if steps is None else steps
    arms = np.empty(steps, dtype=np.int64)
    for t in range(steps):
        x = stream.x[t:t + 1]
        a = choose(x)
        learn(x, a, float(stream.rewards[t, a]))
        arms[t] = a
    return stream.instant_regret(arms)


def play_policy(policy, stream: LinearStream, steps: int | None = None) -> np.ndarray:
    """`play` for a bandits.Policy."""
    return play(stream, lambda x: int(policy.select(x).arms[0]),
                lambda x, a, r: policy.update(x, np.array([a]), np.array([r])), steps)


def bernoulli_stream(means: list[float], t: int, seed: int = 0) -> np.ndarray:
    """(t, K) Bernoulli rewards of a non-contextual stream."""
    rng = np.random.default_rng(seed)
    return (rng.random((t, len(means))) < np.asarray(means)).astype(np.float64)
