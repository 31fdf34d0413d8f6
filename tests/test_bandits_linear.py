"""LinUCB / LinTS numerics: mabwiser parity, inverse accuracy, in-place updates, discounting, TS probabilities."""

from __future__ import annotations

import numpy as np
import pytest
from bandit_streams import LinearStream
from mabwiser.mab import MAB, LearningPolicy

import bandits
from bandits._blas import sym_subtract_inplace
from bandits.gaussian import argmax_probs


def _mabwiser_scores(mab: MAB, x: np.ndarray, k: int) -> np.ndarray:
    exp = mab.predict_expectations(x)
    exp = [exp] if isinstance(exp, dict) else exp
    return np.array([[e[a] for a in range(k)] for e in exp])


@pytest.mark.parametrize("alpha,l2", [(1.0, 1.0), (0.1, 1.0), (0.7, 2.5)])
def test_linucb_scores_equal_mabwiser_before_and_after_updates(alpha, l2):
    rng = np.random.default_rng(1)
    k, d = 4, 12
    x = rng.normal(size=(400, d))
    arms = rng.integers(0, k, 400)
    r = rng.normal(size=400)
    test = rng.normal(size=(50, d))
    ours = bandits.LinUCB(k, d, alpha=alpha, l2=l2)
    mab = MAB(arms=list(range(k)), learning_policy=LearningPolicy.LinUCB(alpha=alpha, l2_lambda=l2))
    # mabwiser needs a fit before predicting, and until an arm's first fit it holds A^-1 = l2*I (not
    # I/l2): fit every arm once on a zero row, which adds nothing to A or b.
    mab.fit(list(range(k)), [0.0] * k, np.zeros((k, d)))
    np.testing.assert_allclose(ours.select(test).scores, _mabwiser_scores(mab, test, k), rtol=0, atol=1e-8)
    # Same data through both: a batch (Woodbury path), then one instance at a time (Sherman-Morrison).
    ours.update(x[:150], arms[:150], r[:150])
    mab.partial_fit(arms[:150], r[:150], x[:150])
    for i in range(150, 400):
        ours.update(x[i:i + 1], arms[i:i + 1], r[i:i + 1])
    mab.partial_fit(arms[150:], r[150:], x[150:])
    np.testing.assert_allclose(ours.select(test).scores, _mabwiser_scores(mab, test, k), rtol=0, atol=1e-8)


def test_sherman_morrison_inverse_matches_numpy_inverse_after_1000_updates():
    rng = np.random.default_rng(2)
    d = 64
    x = rng.normal(size=(1000, d)) / np.sqrt(d)
    one = bandits.LinUCB(2, d, l2=1.0)
    for i in range(1000):
        one.select(x[i:i + 1])  # exercises the select -> update cache too
        one.update(x[i:i + 1], [i % 2], [1.0])
    batch = bandits.LinUCB(2, d, l2=1.0)
    for lo in range(0, 1000, 125):
        batch.update(x[lo:lo + 125], np.arange(lo, lo + 125) % 2, np.ones(125))
    for k in range(2):
        rows = x[k::2]
        exact = np.linalg.inv(np.eye(d) + rows.T @ rows)
        np.testing.assert_allclose(one.a_inv[k], exact, rtol=0, atol=1e-8)
        np.testing.assert_allclose(batch.a_inv[k], exact, rtol=0, atol=1e-8)
        # theta by recursive least squares equals the ridge solution A^-1 b
        b = rows.sum(axis=0)  # every reward was 1
        np.testing.assert_allclose(one.theta[k], exact @ b, rtol=0, atol=1e-8)
        np.testing.assert_allclose(batch.theta[k], exact @ b, rtol=0, atol=1e-8)


def test_rank_updates_are_in_place_without_copies():
    rng = np.random.default_rng(3)
    for dtype in (np.float64, np.float32):
        m = np.eye(32, dtype=dtype) * 2
        ptr = m.__array_interface__["data"][0]
        u = rng.normal(size=(1, 32)).astype(dtype)
        expected = m - u.T @ u
        sym_subtract_inplace(m, u, u.copy())
        assert m.__array_interface__["data"][0] == ptr
        np.testing.assert_allclose(m, expected, atol=1e-5)
        u3 = rng.normal(size=(3, 32)).astype(dtype)
        expected = m - u3.T @ u3
        sym_subtract_inplace(m, u3, u3.copy())
        np.testing.assert_allclose(m, expected, atol=1e-4)


def test_float32_state_tracks_float64_closely():
    s = LinearStream(3, 256, 600, seed=4)
    p64, p32 = bandits.LinUCB(3, 256), bandits.LinUCB(3, 256, dtype="float32")
    for i in range(500):
        arm = [i % 3]
        p64.update(s.x[i:i + 1], arm, s.rewards[i, arm])
        p32.update(s.x[i:i + 1], arm, s.rewards[i, arm])
    a, b = p64.select(s.x[500:]).scores, p32.select(s.x[500:]).scores
    assert p32.a_inv.dtype == np.float32
    assert np.abs(a - b).max() < 1e-4


def test_discounted_statistics_match_explicit_weighted_ridge():
    rng = np.random.default_rng(5)
    k, d, g = 2, 6, 0.9
    x = rng.normal(size=(40, d))
    arms = rng.integers(0, k, 40)
    r = rng.normal(size=40)
    p = bandits.LinUCB(k, d, l2=0.5, discount=g)
    p.update(x[:15], arms[:15], r[:15])
    for i in range(15, 40):
        p.update(x[i:i + 1], arms[i:i + 1], r[i:i + 1])
    age = g ** np.arange(39, -1, -1)  # instance i was seen 39 - i steps before the end
    for a in range(k):
        m = arms == a
        gram = (x[m] * age[m, None]).T @ x[m]
        a_mat = gram + 0.5 * np.eye(d)
        theta = np.linalg.solve(a_mat, (age[m] * r[m]) @ x[m])
        np.testing.assert_allclose(p.a_inv[a], np.linalg.inv(a_mat), atol=1e-10)
        np.testing.assert_allclose(p.theta[a], theta, atol=1e-10)


def test_lints_is_deterministic_for_a_seed_and_samplers_agree_in_distribution():
    s = LinearStream(3, 8, 300, seed=6)
    runs = []
    for _ in range(2):
        p = bandits.LinTS(3, 8, alpha=0.5, seed=11)
        p.update(s.x[:200], np.arange(200) % 3, s.rewards[np.arange(200), np.arange(200) % 3])
        runs.append(p.select(s.x[200:]).scores)
    np.testing.assert_array_equal(runs[0], runs[1])
    # Both samplers draw x.theta_k ~ N(x.theta_hat_k, alpha^2 x A^-1 x): compare moments of many draws.
    x = np.repeat(s.x[250:251], 20000, axis=0)
    draws = {}
    for sampler in ("cholesky", "marginal"):
        p = bandits.LinTS(3, 8, alpha=0.5, sampler=sampler, seed=12)
        p.update(s.x[:200], np.arange(200) % 3, s.rewards[np.arange(200), np.arange(200) % 3])
        draws[sampler] = p.select(x).scores
    mean = x[0] @ p.theta.T
    std = 0.5 * np.sqrt(np.einsum("d,kde,e->k", x[0], p.a_inv, x[0]))
    for sc in draws.values():
        np.testing.assert_allclose(sc.mean(axis=0), mean, atol=4 * std.max() / np.sqrt(20000) * 1.5)
        np.testing.assert_allclose(sc.std(axis=0), std, rtol=0.03)


@pytest.mark.parametrize("case", [
    ([0.1, 0.2, 0.15, 0.0], [0.3, 0.003, 0.1, 1.0]),  # 300x std ratio
    ([0.0, 0.0, 0.0], [1.0, 1.0, 1.0]),  # symmetric: 1/3 each
    ([0.5, -0.5], [0.2, 0.9]),
    ([1.0, 0.0, 0.2, 0.1, 0.3, -0.2, 0.05, 0.4], [0.01, 0.5, 0.2, 0.3, 0.05, 2.0, 0.1, 0.15]),
])
def test_thompson_probabilities_match_monte_carlo(case):
    mean, std = np.array([case[0]]), np.array([case[1]])
    p = argmax_probs(mean, std)
    rng = np.random.default_rng(7)
    draws = mean + std * rng.standard_normal((1_000_000, mean.shape[1]))
    mc = np.bincount(draws.argmax(axis=1), minlength=mean.shape[1]) / len(draws)
    assert abs(p.sum() - 1) < 1e-12
    np.testing.assert_allclose(p[0], mc, atol=2e-3)


def test_thompson_probabilities_two_arms_closed_form():
    mean, std = np.array([[0.3, 0.1]]), np.array([[0.2, 0.5]])
    from scipy.stats import norm
    exact = norm.cdf((0.3 - 0.1) / np.sqrt(0.2**2 + 0.5**2))
    np.testing.assert_allclose(argmax_probs(mean, std)[0, 0], exact, atol=5e-4)


def test_lints_probs_match_its_own_choice_frequencies():
    s = LinearStream(4, 8, 400, seed=8)
    p = bandits.LinTS(4, 8, alpha=0.5, seed=3)
    p.update(s.x[:300], np.arange(300) % 4, s.rewards[np.arange(300), np.arange(300) % 4])
    x = np.repeat(s.x[350:351], 40000, axis=0)
    d = p.select(x)
    freq = np.bincount(d.arms, minlength=4) / len(d)
    np.testing.assert_allclose(d.probs[0], freq, atol=0.01)


def test_lints_draws_independent_noise_per_arm():
    # Identical arms must still get independent posterior draws (mabwiser's LinTS shares one RNG state
    # across arms after fit, which correlates the arms' noise and under-explores).
    p = bandits.LinTS(4, 3, alpha=1.0, seed=0)
    x = np.ones((2000, 3))
    p.update(x[:40], np.arange(40) % 4, np.ones(40))  # every arm sees the same data
    scores = p.select(x).scores
    np.testing.assert_allclose(np.corrcoef(scores.T)[np.triu_indices(4, 1)], 0.0, atol=0.1)
    np.testing.assert_allclose(p.select(x[:1]).probs, 0.25, atol=1e-3)


@pytest.mark.parametrize("n", [1, 5])
def test_update_after_caller_mutates_contexts_in_place(n):
    # select caches X A^-1; if the caller then changes X in place, update must use the new values.
    rng = np.random.default_rng(9)
    x = rng.normal(size=(n, 4))
    arms = np.zeros(n, dtype=int)
    a, b = bandits.LinUCB(2, 4), bandits.LinUCB(2, 4)
    a.select(x)
    x[:] = rng.normal(size=(n, 4))
    a.update(x, arms, np.ones(n))
    b.update(x, arms, np.ones(n))
    np.testing.assert_allclose(a.a_inv, b.a_inv, atol=1e-12)
    np.testing.assert_allclose(a.theta, b.theta, atol=1e-12)
