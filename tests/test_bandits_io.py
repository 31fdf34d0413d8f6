"""save/load and state_dict round trips restore a policy exactly, RNG included; no pickle."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

import bandits

CASES = [("linucb", {}), ("linucb", {"discount": 0.98, "dtype": "float32"}), ("lints", {}),
         ("lints", {"sampler": "marginal"}), ("kernel_ucb", {}), ("kernel_ucb", {"capacity": 7, "dtype": "float32"}),
         ("ucb1", {}), ("gaussian_thompson", {}), ("exp3", {}),
         ("epsilon_greedy", {"epsilon": 0.2}), ("uniform", {})]


def _run(policy: bandits.Policy, x: np.ndarray, rewards: np.ndarray, steps: int, start: int = 0) -> list:
    """Select then learn, one instance at a time; returns the chosen arms and their probs."""
    out = []
    for t in range(start, start + steps):
        d = policy.select(x[t:t + 1])
        policy.update(x[t:t + 1], d.arms, rewards[t, d.arms])
        out.append((int(d.arms[0]), d.probs[0].round(12).tolist()))
    return out


@pytest.mark.parametrize("name,params", CASES)
def test_save_load_next_100_selections_equal(tmp_path, name, params):
    rng = np.random.default_rng(0)
    x, rewards = rng.normal(size=(300, 6)), rng.random((300, 4))
    original = bandits.make_policy(name, 4, 6, seed=5, **params)
    _run(original, x, rewards, 100)
    path = bandits.save(original, tmp_path / "router")
    assert sorted(p.name for p in path.iterdir()) == ["arrays.npz", "policy.json"]
    restored = bandits.load(path)
    assert type(restored) is type(original) and restored.params() == original.params()
    assert _run(restored, x, rewards, 100, start=100) == _run(original, x, rewards, 100, start=100)
    # state_dict / load_state_dict on a fresh instance does the same
    fresh = bandits.make_policy(name, 4, 6, seed=5, **params)
    fresh.load_state_dict(original.state_dict())
    assert _run(fresh, x, rewards, 20, start=200) == _run(original, x, rewards, 20, start=200)


def test_saved_files_are_json_and_npz_without_pickle(tmp_path):
    p = bandits.LinTS(2, 3)
    p.update(np.ones((2, 3)), [0, 1], [0.1, 0.2])
    path = bandits.save(p, tmp_path / "r")
    meta = json.loads((path / "policy.json").read_text())
    assert meta["policy"] == "lints" and meta["params"]["dim"] == 3
    with zipfile.ZipFile(path / "arrays.npz") as z:
        assert all(n.endswith(".npy") for n in z.namelist())
    with np.load(path / "arrays.npz", allow_pickle=False) as npz:
        assert set(npz.files) == {"a_inv", "b", "theta", "counts", "gram"}


def test_save_overwrites_atomically_and_load_errors(tmp_path):
    a, b = bandits.LinUCB(2, 3, seed=1), bandits.UCB1(3, 2)
    bandits.save(a, tmp_path / "r")
    bandits.save(b, tmp_path / "r")  # replace an existing save
    assert isinstance(bandits.load(tmp_path / "r"), bandits.UCB1)
    assert [p.name for p in tmp_path.iterdir()] == ["r"]  # no temp or old directories left behind
    with pytest.raises(FileNotFoundError, match="not a saved policy"):
        bandits.load(tmp_path / "missing")


def test_load_state_dict_rejects_mismatches_without_half_loading():
    p = bandits.LinUCB(2, 3)
    p.update(np.ones((1, 3)), [0], [1.0])
    other = bandits.LinUCB(2, 4).state_dict()
    with pytest.raises(ValueError, match="params"):
        p.load_state_dict(other)
    with pytest.raises(ValueError, match="not 'linucb'"):
        p.load_state_dict(bandits.UCB1(2, 3).state_dict())
    bad = p.state_dict()
    bad["state"]["theta"] = np.zeros((5, 5))
    before = p.a_inv.copy()
    with pytest.raises(ValueError, match=r"state\['theta'\] has shape"):
        p.load_state_dict(bad)
    np.testing.assert_array_equal(p.a_inv, before)
