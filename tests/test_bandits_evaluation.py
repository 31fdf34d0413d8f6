"""Off-policy estimators recover a target policy's value from uniformly logged data."""

from __future__ import annotations

import numpy as np
import pytest
from bandit_streams import LinearStream

import bandits
from bandits import evaluation


def _logged(seed: int, n: int = 4000):
    s = LinearStream(4, 6, n, noise=0.1, seed=seed)
    rng = np.random.default_rng(seed + 100)
    arms = rng.integers(0, 4, n)  # uniform logger
    rewards = s.rewards[np.arange(n), arms]
    return s, arms, rewards, np.full(n, 0.25)


def _target_probs(s: LinearStream) -> np.ndarray:
    """A fixed stochastic target: 80% on a noisy guess of the best arm, 20% spread evenly."""
    rng = np.random.default_rng(7)
    guess = (s.expected + 0.1 * rng.normal(size=s.expected.shape)).argmax(axis=1)
    probs = np.full(s.expected.shape, 0.05)
    probs[np.arange(len(guess)), guess] += 0.8
    return probs


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ips_snips_dr_within_three_standard_errors(seed):
    s, arms, rewards, logp = _logged(seed)
    target = _target_probs(s)
    truth = float((target * s.expected).sum(axis=1).mean())
    q = evaluation.fit_reward_model(s.x, arms, rewards, 4)
    estimates = {"ips": evaluation.ips(arms, rewards, logp, target),
                 "snips": evaluation.snips(arms, rewards, logp, target),
                 "dr": evaluation.doubly_robust(arms, rewards, logp, target, q)}
    for name, est in estimates.items():
        assert abs(est.value - truth) <= 3 * est.stderr, (name, est, truth)
        lo, hi = est.ci()
        assert lo < est.value < hi
    # the reward model makes DR much tighter than IPS
    assert estimates["dr"].stderr < 0.5 * estimates["ips"].stderr


def test_evaluate_a_bandit_policy_offline():
    s, arms, rewards, logp = _logged(3)
    policy = bandits.LinUCB(4, 6, alpha=0.0)
    policy.update(s.x[:2000], arms[:2000], rewards[:2000])  # learn from the first half of the log
    half = slice(2000, None)
    target = policy.select(s.x[half]).probs
    truth = float((target * s.expected[half]).sum(axis=1).mean())
    policy2 = bandits.LinUCB(4, 6, alpha=0.0)
    policy2.load_state_dict(policy.state_dict())
    est = evaluation.evaluate(policy2, s.x[half], arms[half], rewards[half], logp[half])
    for name, e in est.items():
        assert abs(e.value - truth) <= 3 * e.stderr, (name, e, truth)
    uniform_value = float(s.expected[half].mean())
    assert est["dr"].value > uniform_value  # the learned router beats the logger


def test_zero_logging_propensity_is_rejected():
    with pytest.raises(ValueError, match=r"propensity.*0.*rows \[1\]"):
        evaluation.ips(np.array([0, 1]), np.ones(2), np.array([1.0, 0.0]), np.full((2, 2), 0.5))
    with pytest.raises(ValueError, match="target_probs"):
        evaluation.ips(np.array([0]), np.ones(1), np.ones(1), np.ones(2))
