"""Non-contextual policies: UCB1, Gaussian Thompson sampling, Exp3, epsilon-greedy, uniform random.

They accept contexts (n, dim) like every policy, so that they are drop-in routers, but ignore their
values: within one `select` call every context sees the same arm statistics.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from .base import Decision, Policy, check_finite_float, greedy_choice
from .gaussian import argmax_probs


class _CountingPolicy(Policy):
    """Per-arm pull counts and reward sums."""

    _state_attrs: ClassVar[tuple[str, ...]] = ("counts", "sums")

    def __init__(self, n_arms: int, dim: int, seed: int | None = 0):
        super().__init__(n_arms, dim, seed)
        self.counts = np.zeros(self.n_arms)
        self.sums = np.zeros(self.n_arms)

    def update(self, contexts: np.ndarray, arms: np.ndarray, rewards: np.ndarray) -> None:
        """Add the observed rewards to the played arms' counts and sums."""
        _, a, r = self._check_feedback(contexts, arms, rewards)
        self.counts += np.bincount(a, minlength=self.n_arms)
        self.sums += np.bincount(a, weights=r, minlength=self.n_arms)

    def _means(self, default: float) -> np.ndarray:
        return np.where(self.counts > 0, self.sums / np.maximum(self.counts, 1), default)

    def expected(self, contexts: np.ndarray) -> np.ndarray:
        """Each arm's mean reward so far (its `initial_value`, else 0, before its first pull), per context."""
        x = self._check_contexts(contexts)
        return np.broadcast_to(self._means(getattr(self, "initial_value", 0.0)), (x.shape[0], self.n_arms)).copy()


class UCB1(_CountingPolicy):
    """UCB1 (Auer et al. 2002): mean_k + c * sqrt(2 ln t / n_k); arms never played come first (score inf)."""

    name: ClassVar[str] = "ucb1"

    def __init__(self, n_arms: int, dim: int, c: float = 1.0, seed: int | None = 0):
        super().__init__(n_arms, dim, seed)
        self.c = check_finite_float("c", c, low=0.0)

    def params(self) -> dict[str, Any]:
        """Constructor arguments (JSON-safe) that rebuild an untrained copy of this policy."""
        return {**super().params(), "c": self.c}

    def _bonus(self) -> np.ndarray:
        t = max(self.counts.sum(), 1.0)
        return self.c * np.sqrt(2.0 * np.log(t) / np.maximum(self.counts, 1.0))

    def interval(self, contexts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mean reward so far, UCB1's bonus; infinite for an arm never pulled), per context."""
        shape = (self._check_contexts(contexts).shape[0], self.n_arms)
        width = np.where(self.counts > 0, self._bonus(), np.inf)
        return np.broadcast_to(self._means(0.0), shape).copy(), np.broadcast_to(width, shape).copy()

    def select(self, contexts: np.ndarray) -> Decision:
        """Pick the arm with the highest upper confidence bound (same for every context of the call)."""
        x = self._check_contexts(contexts)
        played = self.counts > 0
        bonus = self._bonus()
        # Arms never played score +inf; choose among them with a large finite stand-in (ties split).
        finite = np.where(played, self._means(0.0) + bonus, 1e300)
        arms, probs = greedy_choice(np.broadcast_to(finite, (x.shape[0], self.n_arms)), self.rng)
        scores = np.broadcast_to(np.where(played, finite, np.inf), (x.shape[0], self.n_arms)).copy()
        return Decision(arms, scores, probs, *self.interval(x))


class GaussianThompson(_CountingPolicy):
    """Thompson sampling with a Gaussian prior N(prior_mean, prior_std^2) on each arm's mean reward and
    Gaussian reward noise of std `noise_std`; one posterior draw per context."""

    name: ClassVar[str] = "gaussian_thompson"

    def __init__(self, n_arms: int, dim: int, prior_mean: float = 0.0, prior_std: float = 1.0,
                 noise_std: float = 1.0, seed: int | None = 0):
        super().__init__(n_arms, dim, seed)
        self.prior_mean = check_finite_float("prior_mean", prior_mean)
        self.prior_std = check_finite_float("prior_std", prior_std, low=0.0, low_open=True)
        self.noise_std = check_finite_float("noise_std", noise_std, low=0.0, low_open=True)

    def params(self) -> dict[str, Any]:
        """Constructor arguments (JSON-safe) that rebuild an untrained copy of this policy."""
        return {**super().params(), "prior_mean": self.prior_mean, "prior_std": self.prior_std,
                "noise_std": self.noise_std}

    def posterior(self) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and std of each arm's mean reward."""
        precision = 1.0 / self.prior_std**2 + self.counts / self.noise_std**2
        mean = (self.prior_mean / self.prior_std**2 + self.sums / self.noise_std**2) / precision
        return mean, 1.0 / np.sqrt(precision)

    def expected(self, contexts: np.ndarray) -> np.ndarray:
        """Each arm's posterior mean, per context."""
        x = self._check_contexts(contexts)
        return np.broadcast_to(self.posterior()[0], (x.shape[0], self.n_arms)).copy()

    def interval(self, contexts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each arm's posterior mean and std, per context."""
        shape = (self._check_contexts(contexts).shape[0], self.n_arms)
        mean, std = self.posterior()
        return np.broadcast_to(mean, shape).copy(), np.broadcast_to(std, shape).copy()

    def select(self, contexts: np.ndarray) -> Decision:
        """Draw each arm's mean from its posterior per context and pick the largest."""
        x = self._check_contexts(contexts)
        n = x.shape[0]
        mean, std = self.posterior()
        scores = mean + std * self.rng.standard_normal((n, self.n_arms))
        arms, _ = greedy_choice(scores, self.rng)
        probs = np.broadcast_to(argmax_probs(mean[None, :], std[None, :]), (n, self.n_arms)).copy()
        return Decision(arms, scores, probs, expected=np.broadcast_to(mean, (n, self.n_arms)).copy(),
                        width=np.broadcast_to(std, (n, self.n_arms)).copy())


class Exp3(Policy):
    """Exp3 (Auer et al. 2002) for adversarial rewards in [0, 1]: p = (1 - gamma) softmax(w) + gamma / K,
    and the played arm's log-weight grows by gamma * (r / p_k) / K.

    Robust to noisy or non-stationary rewards at the price of slower learning. Rewards outside [0, 1]
    raise: map them first, e.g. with `bandits.QuantileNormalizer`.
    """

    name: ClassVar[str] = "exp3"
    _state_attrs: ClassVar[tuple[str, ...]] = ("log_weights",)

    def __init__(self, n_arms: int, dim: int, gamma: float = 0.1, seed: int | None = 0):
        super().__init__(n_arms, dim, seed)
        self.gamma = check_finite_float("gamma", gamma, low=0.0, high=1.0, low_open=True)
        self.log_weights = np.zeros(self.n_arms)

    def params(self) -> dict[str, Any]:
        """Constructor arguments (JSON-safe) that rebuild an untrained copy of this policy."""
        return {**super().params(), "gamma": self.gamma}

    def arm_probs(self) -> np.ndarray:
        """The current mixed distribution over arms, (K,)."""
        w = np.exp(self.log_weights - self.log_weights.max())
        return (1.0 - self.gamma) * w / w.sum() + self.gamma / self.n_arms

    def expected(self, contexts: np.ndarray) -> np.ndarray:
        """The log-probabilities of the current distribution (the arm with the largest weight first)."""
        x = self._check_contexts(contexts)
        return np.broadcast_to(np.log(self.arm_probs()), (x.shape[0], self.n_arms)).copy()

    def select(self, contexts: np.ndarray) -> Decision:
        """Sample one arm per context from the current distribution."""
        x = self._check_contexts(contexts)
        n = x.shape[0]
        p = self.arm_probs()
        cdf = np.cumsum(p)
        arms = np.minimum(np.searchsorted(cdf, self.rng.random(n) * cdf[-1], side="right"), self.n_arms - 1)
        probs = np.broadcast_to(p, (n, self.n_arms)).copy()
        return Decision(arms.astype(np.int64), np.log(probs), probs)

    def update(self, contexts: np.ndarray, arms: np.ndarray, rewards: np.ndarray) -> None:
        """Importance-weighted exponential update with the distribution the arms were drawn from."""
        _, a, r = self._check_feedback(contexts, arms, rewards)
        if r.min() < 0.0 or r.max() > 1.0:
            raise ValueError(f"Exp3 rewards must lie in [0, 1], got range [{r.min():.4g}, {r.max():.4g}]; "
                             "normalize them first (e.g. bandits.QuantileNormalizer)")
        p = self.arm_probs()
        gain = np.bincount(a, weights=r / p[a], minlength=self.n_arms)
        self.log_weights = self.log_weights + self.gamma * gain / self.n_arms


class EpsilonGreedy(_CountingPolicy):
    """Epsilon-greedy: with probability epsilon a uniform arm, else the best mean (ties split)."""

    name: ClassVar[str] = "epsilon_greedy"

    def __init__(self, n_arms: int, dim: int, epsilon: float = 0.1, initial_value: float = 0.0,
                 seed: int | None = 0):
        super().__init__(n_arms, dim, seed)
        self.epsilon = check_finite_float("epsilon", epsilon, low=0.0, high=1.0)
        self.initial_value = check_finite_float("initial_value", initial_value)

    def params(self) -> dict[str, Any]:
        """Constructor arguments (JSON-safe) that rebuild an untrained copy of this policy."""
        return {**super().params(), "epsilon": self.epsilon, "initial_value": self.initial_value}

    def select(self, contexts: np.ndarray) -> Decision:
        """Explore uniformly with probability epsilon, else exploit the best mean reward."""
        x = self._check_contexts(contexts)
        n, k = x.shape[0], self.n_arms
        scores = np.broadcast_to(self._means(self.initial_value), (n, k)).copy()
        greedy_arms, greedy_probs = greedy_choice(scores, self.rng)
        explore = self.rng.random(n) < self.epsilon
        arms = np.where(explore, self.rng.integers(0, k, size=n), greedy_arms)
        probs = self.epsilon / k + (1.0 - self.epsilon) * greedy_probs
        return Decision(arms.astype(np.int64), scores, probs)


class UniformRandom(Policy):
    """Every arm with probability 1/K, independently per context (the `random` baseline)."""

    name: ClassVar[str] = "uniform"

    def select(self, contexts: np.ndarray) -> Decision:
        """Draw one arm uniformly at random per context."""
        x = self._check_contexts(contexts)
        n, k = x.shape[0], self.n_arms
        arms = self.rng.integers(0, k, size=n).astype(np.int64)
        return Decision(arms, np.zeros((n, k)), np.full((n, k), 1.0 / k))

    def expected(self, contexts: np.ndarray) -> np.ndarray:
        """All arms alike (so `exploit` stays uniform)."""
        return np.zeros((self._check_contexts(contexts).shape[0], self.n_arms))

    def update(self, contexts: np.ndarray, arms: np.ndarray, rewards: np.ndarray) -> None:
        """Validate the feedback; a uniform policy learns nothing from it."""
        self._check_feedback(contexts, arms, rewards)
