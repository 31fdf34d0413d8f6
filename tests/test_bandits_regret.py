"""Regret on synthetic streams: sub-linear growth, parity with mabwiser, non-contextual baselines, drift."""

from __future__ import annotations

import numpy as np
import pytest
from bandit_streams import LinearStream, bernoulli_stream, play, play_policy
from mabwiser.mab import MAB, LearningPolicy

import bandits

K, D, T = 5, 16, 5000
SEEDS = range(8)  # single streams are noisy (trajectories diverge on the first ties): compare means


def _mabwiser_linucb_regret(stream: LinearStream, alpha: float) -> np.ndarray:
    mab = MAB(arms=list(range(K)), learning_policy=LearningPolicy.LinUCB(alpha=alpha), seed=0)
    mab.fit(list(range(K)), [0.0] * K, np.zeros((K, D)))  # zero rows: a no-op fit that mabwiser requires
    return play(stream, lambda x: int(mab.predict(x)), lambda x, a, r: mab.partial_fit([a], [r], x))


@pytest.fixture(scope="module")
def regrets() -> dict[str, list[np.ndarray]]:
    out: dict[str, list[np.ndarray]] = {"mabwiser": [], "linucb": [], "lints": []}
    for seed in SEEDS:
        s = LinearStream(K, D, T, noise=0.1, seed=seed)
        out["mabwiser"].append(_mabwiser_linucb_regret(s, alpha=1.0))
        out["linucb"].append(play_policy(bandits.LinUCB(K, D, alpha=1.0, seed=seed), s))
        out["lints"].append(play_policy(bandits.LinTS(K, D, alpha=0.05, seed=seed), s))
    return out


@pytest.mark.parametrize("name", ["linucb", "lints"])
def test_linear_policies_regret_is_sublinear(regrets, name):
    for r in regrets[name]:
        first, last = r[:1000].sum(), r[-1000:].sum()
        assert last < first / 5, (first, last)


@pytest.mark.parametrize("name", ["linucb", "lints"])
def test_linear_policies_regret_at_most_mabwiser_plus_10_percent(regrets, name):
    ours = np.mean([r.sum() for r in regrets[name]])
    theirs = np.mean([r.sum() for r in regrets["mabwiser"]])
    assert ours <= 1.10 * theirs, (ours, theirs)


def _mab_regret(policy: bandits.Policy, rewards: np.ndarray, means: np.ndarray) -> float:
    x = np.zeros((1, policy.dim))
    regret = 0.0
    for t in range(len(rewards)):
        a = int(policy.select(x).arms[0])
        policy.update(x, [a], [rewards[t, a]])
        regret += means.max() - means[a]
    return regret


@pytest.mark.parametrize("name,params", [("ucb1", {}), ("exp3", {"gamma": 0.05}),
                                         ("gaussian_thompson", {"noise_std": 0.5}),
                                         ("epsilon_greedy", {"epsilon": 0.05})])
def test_noncontextual_policies_beat_uniform_random(name, params):
    means = np.array([0.2, 0.3, 0.5, 0.45, 0.25])
    totals, uniform = [], []
    for seed in range(3):
        rewards = bernoulli_stream(list(means), 4000, seed=seed)
        totals.append(_mab_regret(bandits.make_policy(name, 5, 1, seed=seed, **params), rewards, means))
        uniform.append(_mab_regret(bandits.UniformRandom(5, 1, seed=seed), rewards, means))
    # uniform random pays mean(gap) = 0.16 per step; a learning policy must pay well under half of it
    assert np.mean(totals) < 0.5 * np.mean(uniform), (np.mean(totals), np.mean(uniform))


def test_discounted_linucb_recovers_faster_after_the_best_arm_switches():
    post_stationary, post_discounted = [], []
    for seed in range(3):
        s = LinearStream(K, D, 6000, noise=0.1, seed=seed, switch_at=3000)
        r1 = play_policy(bandits.LinUCB(K, D, alpha=1.0), s)
        r2 = play_policy(bandits.LinUCB(K, D, alpha=1.0, discount=0.995), s)
        post_stationary.append(r1[3000:].sum())
        post_discounted.append(r2[3000:].sum())
        # the discounted policy has re-learned by the end; the stationary one is still paying
        assert r2[-1000:].sum() < 0.5 * r1[-1000:].sum()
    # measured: about 8x less regret over the 3000 steps after the switch
    assert np.mean(post_discounted) < 0.25 * np.mean(post_stationary), (post_discounted, post_stationary)
