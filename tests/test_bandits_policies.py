"""Contract of every policy: Decision shapes, exact probabilities, ties, registry, and bad input."""

from __future__ import annotations

import numpy as np
import pytest

import bandits

ALL = ["linucb", "lints", "kernel_ucb", "ucb1", "gaussian_thompson", "exp3", "epsilon_greedy", "uniform"]


def _trained(name: str, k: int = 3, d: int = 5, seed: int = 0, **params) -> bandits.Policy:
    p = bandits.make_policy(name, k, d, seed=seed, **params)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(60, d))
    p.update(x, rng.integers(0, k, 60), rng.random(60))
    return p


@pytest.mark.parametrize("name", ALL)
def test_decision_shapes_and_probabilities(name):
    p = _trained(name)
    x = np.random.default_rng(1).normal(size=(7, 5))
    d = p.select(x)
    assert d.arms.shape == (7,) and d.arms.dtype == np.int64
    assert d.scores.shape == (7, 3) and d.probs.shape == (7, 3)
    assert ((d.arms >= 0) & (d.arms < 3)).all()
    np.testing.assert_allclose(d.probs.sum(axis=1), 1.0, atol=1e-12)
    assert (d.probs[np.arange(7), d.arms] > 0).all()  # a chosen arm never has probability 0
    assert len(d) == 7


@pytest.mark.parametrize("name,params", [("exp3", {}), ("epsilon_greedy", {"epsilon": 0.3}), ("uniform", {}),
                                         ("gaussian_thompson", {}), ("ucb1", {})])
def test_randomized_probs_equal_empirical_choice_frequencies(name, params):
    p = _trained(name, **params)
    d = p.select(np.zeros((50000, 5)))
    freq = np.bincount(d.arms, minlength=3) / len(d)
    np.testing.assert_allclose(d.probs[0], freq, atol=0.01)


def test_greedy_ties_are_split_and_broken_at_random():
    p = bandits.LinUCB(4, 3)  # untrained: every arm has the same score
    d = p.select(np.ones((4000, 3)))
    np.testing.assert_allclose(d.probs, 0.25)
    freq = np.bincount(d.arms, minlength=4) / 4000
    np.testing.assert_allclose(freq, 0.25, atol=0.03)
    one = p.select(np.ones((1, 3)))
    np.testing.assert_allclose(one.probs, 0.25)
    # and with a clear winner, probs are 1/0
    p.update(np.ones((1, 3)), [2], [5.0])
    d = p.select(np.ones((3, 3)))
    assert (d.arms == 2).all() and (d.probs[:, 2] == 1).all() and d.probs.sum() == 3


def test_ucb1_plays_every_arm_first_and_reports_inf():
    p = bandits.UCB1(3, 1)
    seen = []
    for _ in range(3):
        d = p.select(np.zeros((1, 1)))
        assert np.isinf(d.scores[0, [a for a in range(3) if a not in seen]]).all()
        seen.append(int(d.arms[0]))
        p.update(np.zeros((1, 1)), d.arms, [0.5])
    assert sorted(seen) == [0, 1, 2]


def test_make_policy_names_aliases_and_errors():
    assert isinstance(bandits.make_policy("LinUCB", 2, 3, alpha=0.1), bandits.LinUCB)
    assert isinstance(bandits.make_policy("random", 2, 3), bandits.UniformRandom)
    with pytest.raises(ValueError, match="unknown policy 'nope'.*linucb"):
        bandits.make_policy("nope", 2, 3)
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['alhpa'\].*alpha"):
        bandits.make_policy("linucb", 2, 3, alhpa=0.1)
    for bad in [dict(n_arms=0), dict(dim=-1), dict(n_arms=2.5)]:
        args = {"n_arms": 2, "dim": 3, **bad}
        with pytest.raises(ValueError, match=next(iter(bad))):
            bandits.make_policy("linucb", **args)
    with pytest.raises(ValueError, match="discount"):
        bandits.LinUCB(2, 3, discount=1.5)
    with pytest.raises(ValueError, match="l2"):
        bandits.LinUCB(2, 3, l2=0)
    with pytest.raises(ValueError, match="dtype"):
        bandits.LinUCB(2, 3, dtype="float16")
    with pytest.raises(ValueError, match="sampler"):
        bandits.LinTS(2, 3, sampler="svd")


BAD_SELECT = [
    (np.zeros((2, 4)), r"shape \(n, 5\), got \(2, 4\)"),
    (np.zeros(5), r"shape \(n, 5\), got \(5,\)"),
    (np.zeros((0, 5)), "empty"),
    (np.array([[0, 0, np.nan, 0, 0]]), r"NaN or inf \(rows \[0\]\)"),
    (np.array([[0, 0, np.inf, 0, 0], [1, 1, 1, 1, 1]]), "NaN or inf"),
    ([["a"] * 5], "numeric"),
]


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("x,msg", BAD_SELECT)
def test_bad_contexts_raise_value_error(name, x, msg):
    p = _trained(name)
    with pytest.raises(ValueError, match=msg):
        p.select(x)
    with pytest.raises(ValueError, match=msg):
        p.update(x, np.zeros(len(np.atleast_2d(x)), dtype=int), np.zeros(len(np.atleast_2d(x))))


BAD_FEEDBACK = [
    (np.array([0, 3]), np.zeros(2), r"arms must be in \[0, 3\), got out-of-range ids \[3\]"),
    (np.array([-1, 0]), np.zeros(2), r"out-of-range ids \[-1\]"),
    (np.array([0, 1, 2]), np.zeros(2), r"arms must have shape \(2,\)"),
    (np.array([0.5, 1.0]), np.zeros(2), "integer arm ids"),
    (np.array([0, 1]), np.array([0.0, np.nan]), r"rewards contain NaN or inf \(rows \[1\]\)"),
    (np.array([0, 1]), np.zeros(3), r"rewards must have shape \(2,\)"),
]


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("arms,rewards,msg", BAD_FEEDBACK)
def test_bad_feedback_raises_and_leaves_state_untouched(name, arms, rewards, msg):
    p = _trained(name)
    before = p.state_dict()
    with pytest.raises(ValueError, match=msg):
        p.update(np.ones((2, 5)), arms, rewards)
    after = p.state_dict()
    assert before["rng"] == after["rng"]
    for key, v in before["state"].items():
        np.testing.assert_array_equal(after["state"][key], v)


def test_single_instance_bad_arm_and_reward_raise():
    p = bandits.LinUCB(3, 2)
    with pytest.raises(ValueError, match="out-of-range"):
        p.update(np.ones((1, 2)), [7], [0.0])
    with pytest.raises(ValueError, match="NaN or inf"):
        p.update(np.ones((1, 2)), [0], [float("inf")])
    np.testing.assert_array_equal(p.counts, 0)


def test_exp3_rejects_rewards_outside_unit_interval():
    p = bandits.Exp3(3, 2)
    with pytest.raises(ValueError, match=r"\[0, 1\].*QuantileNormalizer"):
        p.update(np.ones((2, 2)), [0, 1], [0.5, 1.5])
    np.testing.assert_array_equal(p.log_weights, 0)


@pytest.mark.parametrize("name", ALL)
def test_exploit_picks_the_best_estimate_without_exploring(name):
    """`expected` is the policy's estimate without bonus or sampling; `exploit` takes its argmax."""
    p = bandits.make_policy(name, 3, 2, seed=0)
    x = np.array([[1.0, 0.0], [0.0, 1.0]])
    for _ in range(30):  # arm 1 pays on the first context, arm 2 on the second
        p.update(x, np.array([1, 2]), np.array([0.9, 0.8]))
        p.update(x, np.array([0, 0]), np.array([0.1, 0.1]))
    est = p.expected(x)
    assert est.shape == (2, 3) and est.dtype == np.float64 and np.isfinite(est).all()
    d = p.exploit(x)
    np.testing.assert_allclose(d.probs.sum(axis=1), 1.0)
    if name == "uniform":  # learns nothing: every arm alike, ties split at random
        assert (est == 0).all() and (d.probs == 1 / 3).all()
        return
    if name in ("linucb", "lints", "kernel_ucb"):  # contextual: a different arm per context
        assert d.arms.tolist() == [1, 2]
    else:  # context-free: the arm with the best mean (arm 1's 0.9 beats arm 2's 0.8 and arm 0's 0.1)
        assert d.arms.tolist() == [1, 1]
    for _ in range(20):  # deterministic once the estimates differ: no exploration
        assert p.exploit(x).arms.tolist() == d.arms.tolist()


@pytest.mark.parametrize("name", ALL)
def test_a_decision_carries_the_estimate_and_interval_it_was_built_on_or_none(name):
    """Policies with a confidence interval hand `expected` and the interval's half-width over with `select`, so a
    caller who needs them does not pay a second pass: `expected` equals `expected(contexts)`, the width is never
    negative, and a UCB score is their sum. Thompson sampling's scores are draws: its width is the draws' scale, so
    that expected +- width is a bound and a draw is not. Other policies leave both None."""
    p = bandits.make_policy(name, 3, 4, seed=0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 4))
    p.update(x, rng.integers(0, 3, 6), rng.random(6))
    d = p.select(x)
    if name in ("linucb", "kernel_ucb", "ucb1", "lints", "gaussian_thompson"):
        np.testing.assert_allclose(d.expected, p.expected(x), rtol=1e-9, atol=1e-12)
        assert (d.width >= 0).all()
        expected, width = p.interval(x)  # the same interval without a decision (the change detector's)
        np.testing.assert_allclose(expected, d.expected, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(width, d.width, rtol=1e-9, atol=1e-12)
        if name in ("linucb", "kernel_ucb", "ucb1"):
            np.testing.assert_allclose(d.scores, d.expected + d.width, rtol=1e-9, atol=1e-12)
        else:  # many draws: their spread around the estimate is the width
            draws = np.stack([p.select(x).scores for _ in range(400)])
            np.testing.assert_allclose(draws.std(axis=0), d.width, rtol=0.2)
    else:
        assert d.expected is None and d.width is None
        with pytest.raises(NotImplementedError, match="interval"):
            p.interval(x)


@pytest.mark.parametrize("name", ALL)
def test_forget_returns_an_arm_to_its_untrained_state_and_keeps_the_others(name):
    p = bandits.make_policy(name, 3, 4, seed=0)
    fresh = bandits.make_policy(name, 3, 4, seed=0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 4))
    p.update(x, np.arange(30) % 3, rng.random(30))
    if name == "uniform":
        p.forget([1])  # nothing learned, nothing to forget
        return
    before = p.expected(x)
    p.forget([1])
    after = p.expected(x)
    if name == "exp3":  # one weight vector over the arms: the forgotten arm's weight is the prior's again
        assert p.log_weights[1] == fresh.log_weights[1] and (p.log_weights[[0, 2]] != 0).any()
        return
    np.testing.assert_allclose(after[:, 1], fresh.expected(x)[:, 1])
    np.testing.assert_allclose(after[:, [0, 2]], before[:, [0, 2]])
    with pytest.raises(ValueError, match="arms must be in"):
        p.forget([3])


def test_the_change_detector_reports_an_arm_whose_block_of_residuals_falls():
    d = bandits.ChangeDetector(2, window=4, threshold=0.5)
    assert d.observe([0, 0, 1, 0], [-0.9, -0.8, -2.0, -0.7]).tolist() == []  # blocks not complete yet
    assert d.observe([0], [-0.1]).tolist() == [0]          # arm 0's block: mean -0.625 < -0.5
    assert d.observe([0] * 4, [-0.6, 0.4, -0.6, -0.4]).tolist() == []  # mean -0.3: noise, not a change
    assert d.observe([1] * 3 + [0], [0.2, 0.1, 0.3, np.nan]).tolist() == []  # NaN residuals are not counted
    with pytest.raises(ValueError, match="threshold"):
        bandits.ChangeDetector(2, threshold=0)
