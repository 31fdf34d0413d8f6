"""KernelUCB: exact GP posterior, the ring buffer, and routing on clustered contexts."""

from __future__ import annotations

import numpy as np
import pytest

import bandits


def _reference(x_obs, y_obs, x, length_scale, noise):
    """The kernel-weighted posterior mean and sd, one context and one observation at a time."""
    mean, sd = [], []
    for q in x:
        w = [np.exp(-np.sum((q - xi) ** 2) / (2 * length_scale ** 2)) for xi in x_obs]
        mean.append(sum(wi * yi for wi, yi in zip(w, y_obs, strict=True)) / (sum(w) + noise))
        sd.append(np.sqrt(noise / (sum(w) + noise)))
    return np.array(mean), np.array(sd)


def test_scores_equal_the_kernel_weighted_posterior_per_arm():
    rng = np.random.default_rng(0)
    p = bandits.KernelUCB(3, 4, alpha=0.7, length_scale=0.8, noise=0.3)
    x, arms, r = rng.normal(size=(40, 4)), rng.integers(0, 2, 40), rng.normal(size=40)  # arm 2 never played
    p.update(x, arms, r)
    q = rng.normal(size=(6, 4))
    d = p.select(q)
    for k in (0, 1):
        mean, sd = _reference(x[arms == k], r[arms == k], q, 0.8, 0.3)
        np.testing.assert_allclose(p.expected(q)[:, k], mean, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(d.scores[:, k], mean + 0.7 * sd, rtol=1e-9, atol=1e-12)
    # an arm never played keeps the prior: mean 0, sd 1
    np.testing.assert_allclose(p.expected(q)[:, 2], 0.0)
    np.testing.assert_allclose(d.scores[:, 2], 0.7)


def test_the_estimate_follows_the_nearest_contexts_however_far_apart_contexts_are():
    """Contexts of one kind that are only moderately similar (cosine 0.4, weight exp(-4.9) = 0.007 each)
    still decide: an arm that earned 1 on ten of them beats one that earned 0.1 on ten of another kind."""
    p = bandits.KernelUCB(2, 3)
    home, other = np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])
    near = 0.4 * home + np.sqrt(1 - 0.4 ** 2) * np.array([0.0, 0.0, 1.0])  # cosine 0.4 to `home`
    p.update(np.tile(near, (10, 1)), np.zeros(10, dtype=int), np.ones(10))
    p.update(np.tile(other, (10, 1)), np.ones(10, dtype=int), np.full(10, 0.1))
    est = p.expected(home[None, :])[0]
    assert est[0] > 0.2 > est[1]  # 10 x 0.007 / (0.07 + 0.25) = 0.22; arm 1's neighbours are 30x further
    assert p.exploit(home[None, :]).arms.tolist() == [0]


def test_ring_buffer_keeps_the_last_capacity_observations():
    rng = np.random.default_rng(1)
    x, r = rng.normal(size=(5, 3)), rng.normal(size=5)
    p = bandits.KernelUCB(2, 3, capacity=3)
    for t in range(5):  # one at a time, then check against a policy that only saw the last three
        p.update(x[t:t + 1], [0], r[t:t + 1])
    fresh = bandits.KernelUCB(2, 3, capacity=3)
    fresh.update(x[2:], [0, 0, 0], r[2:])
    q = rng.normal(size=(4, 3))
    np.testing.assert_allclose(p.select(q).scores, fresh.select(q).scores, rtol=1e-12)
    assert p.counts.tolist() == [5, 0] and p.kept.tolist() == [3, 0]


def test_bad_parameters_name_themselves():
    for bad, msg in [({"length_scale": 0}, "length_scale"), ({"noise": -1}, "noise"), ({"capacity": 0}, "capacity"),
                     ({"alpha": -0.1}, "alpha"), ({"dtype": "int8"}, "dtype")]:
        with pytest.raises(ValueError, match=msg):
            bandits.KernelUCB(2, 3, **bad)


def test_routes_clusters_that_no_linear_function_separates():
    """Four clusters along a line, one apart (the middle two lie between the outer ones); arm k earns 1 on cluster k
    and 0.05 elsewhere, plus noise. After 40 rewards per arm under uniform routing, the kernel policy's
    exploit picks each cluster's arm on >= 95% of fresh contexts. A linear policy cannot: x.theta_k is
    monotone along the line, so an arm that is best only in the middle is never the argmax there."""
    rng = np.random.default_rng(0)
    d, k = 8, 4
    step, base = np.eye(d)[0], np.eye(d)[1]

    def draw(n):
        c = rng.integers(0, k, n)
        return base + c[:, None] * step + 0.05 * rng.normal(size=(n, d)), c

    value = np.where(np.eye(k, dtype=bool), 1.0, 0.05)
    x, c = draw(160)
    arms = np.tile(np.arange(k), 40)
    rewards = value[c, arms] + 0.25 * rng.normal(size=160)
    xt, ct = draw(400)
    accuracy = {}
    for name in ("kernel_ucb", "linucb"):
        p = bandits.make_policy(name, k, d, seed=0)
        p.update(x, arms, rewards)
        accuracy[name] = (p.exploit(xt).arms == ct).mean()
    assert accuracy["kernel_ucb"] >= 0.95
    assert accuracy["linucb"] <= 0.8
