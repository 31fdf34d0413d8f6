"""Reward normalizers: the LASeR quantile scheme and the running z-score."""

from __future__ import annotations

import numpy as np
import pytest

from bandits import QuantileNormalizer, ZScoreNormalizer


def test_quantile_normalizer_maps_by_20th_and_80th_percentile_of_history():
    q = QuantileNormalizer()
    assert q.normalize([3.0])[0] == 0.5  # a single value: both quantiles equal it
    q.normalize(np.arange(1.0, 11.0))  # history: 3, 1..10
    hist = [3.0, *range(1, 11)]
    lo, hi = np.percentile(hist + [100.0], [20, 80])
    assert q.normalize([100.0])[0] == 1.0
    lo, hi = np.percentile(hist + [100.0, -5.0], [20, 80])
    assert q.normalize([-5.0])[0] == 0.0
    lo, hi = np.percentile(q.history + [6.0], [20, 80])
    assert q.normalize([6.0])[0] == pytest.approx((6.0 - lo) / (hi - lo))
    # transform maps without adding
    n = len(q.history)
    lo, hi = np.percentile(q.history, [20, 80])
    assert q.transform([lo, hi, (lo + hi) / 2]).tolist() == pytest.approx([0.0, 1.0, 0.5])
    assert len(q.history) == n


def test_quantile_normalizer_window_and_state():
    q = QuantileNormalizer(window=3)
    q.normalize([1, 2, 3, 4, 5])
    assert q.history == [3.0, 4.0, 5.0]
    r = QuantileNormalizer()
    r.load_state_dict(q.state_dict())
    assert r.history == q.history and r.window == 3
    np.testing.assert_array_equal(r.transform([4.2]), q.transform([4.2]))


def test_zscore_normalizer_matches_numpy_statistics():
    rng = np.random.default_rng(0)
    v = rng.normal(3.0, 2.0, size=500)
    z = ZScoreNormalizer()
    out = z.normalize(v)
    assert out[0] == 0.0  # one value: std 0
    assert out[-1] == pytest.approx((v[-1] - v.mean()) / v.std())
    assert z.mean == pytest.approx(v.mean()) and z.std == pytest.approx(v.std())
    z2 = ZScoreNormalizer()
    z2.load_state_dict(z.state_dict())
    np.testing.assert_allclose(z2.transform([1.0, 5.0]), z.transform([1.0, 5.0]))
    assert ZScoreNormalizer(clip=1.0).normalize([0.0, 10.0, -10.0]).tolist() == [0.0, 1.0, -1.0]


@pytest.mark.parametrize("cls", [QuantileNormalizer, ZScoreNormalizer])
def test_normalizers_reject_nan(cls):
    n = cls()
    with pytest.raises(ValueError, match="NaN or inf"):
        n.normalize([1.0, float("nan")])


def test_quantile_normalizer_bad_params():
    with pytest.raises(ValueError, match="low must be < high"):
        QuantileNormalizer(0.8, 0.2)


def test_quantile_normalizer_equals_numpy_quantile_of_the_history_exactly():
    """The sorted-history lookup gives bit for bit what np.quantile over the (windowed) history gives."""
    rng = np.random.default_rng(0)
    for trial in range(200):
        low, high = float(rng.uniform(0, 0.4)), float(rng.uniform(0.5, 1))
        window = [None, 1, 5, 37][trial % 4]
        norm, history = QuantileNormalizer(low, high, window), []
        for _ in range(25):
            v = rng.integers(-2, 3, size=rng.integers(1, 6)).astype(float) if trial % 2 else rng.standard_normal(5)
            out = norm.normalize(v)
            for x, got in zip(v, out, strict=True):
                history = (history + [float(x)])[-window:] if window else history + [float(x)]
                q_low, q_high = np.quantile(history, [low, high])
                want = (1.0 if x > q_high else 0.0 if x < q_low else 0.5) if q_high <= q_low \
                    else np.clip((x - q_low) / (q_high - q_low), 0.0, 1.0)
                assert got == want
        assert norm.history == history
        restored = QuantileNormalizer(low, high, window)
        restored.load_state_dict(norm.state_dict())
        assert np.array_equal(restored.normalize([0.25, -1.0]), norm.normalize([0.25, -1.0]))


@pytest.mark.parametrize("cls", [QuantileNormalizer, ZScoreNormalizer])
def test_normalize_together_maps_a_batch_alike_whatever_its_order(cls):
    """Rewards that arrive together all join the history before any is mapped: the same value maps to the
    same number wherever it sits in the batch, and a permuted batch maps to the permuted result. `normalize`,
    one value at a time, does not (the first of equal rewards maps against a shorter history)."""
    history = [0.2, -0.4, 0.9]
    batch = np.array([1.0, -1.0, 0.3, 1.0, -1.0, 0.3])
    a, b = cls(), cls()
    for n in (a, b):
        n.normalize(history)
    out = a.normalize_together(batch)
    perm = np.random.default_rng(0).permutation(len(batch))
    np.testing.assert_allclose(b.normalize_together(batch[perm]), out[perm])
    assert out[0] == out[3] and out[1] == out[4]
    np.testing.assert_allclose(out, a.transform(batch))  # mapped against the history that holds the batch
    seq, fresh = cls(), cls()
    one_by_one = seq.normalize(batch)  # from an empty history: the first 1.0 maps against itself alone
    assert one_by_one[0] < one_by_one[3]
    alike = fresh.normalize_together(batch)
    assert alike[0] == alike[3]
    assert fresh.state_dict() == seq.state_dict()  # the same statistics either way


def test_normalize_together_keeps_the_window():
    q = QuantileNormalizer(window=4)
    q.normalize([5.0, 6.0])
    q.normalize_together([1.0, 2.0, 3.0])
    assert q.history == [6.0, 1.0, 2.0, 3.0]
    restored = QuantileNormalizer(window=4)
    restored.load_state_dict(q.state_dict())
    assert restored.transform([2.5]) == q.transform([2.5])

