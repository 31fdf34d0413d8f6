"""Per-reward-model running normalizers, so that RMs on different scales can be compared and combined.

`ScoreNormalizer(kind)` keeps one running normalizer per RM name:
- `zscore`: (s - mean) / std with Welford statistics over every score seen (bandits.ZScoreNormalizer);
- `quantile`: the LASeR code's scale, the 20th percentile of the history at 0 and the 80th at 1, linear,
  and not clipped: the code's clipping to [0, 1] made every candidate above the 80th percentile a tie at
  1.0, so the "best" of several good candidates was the first of them (pairs need the order; the
  bandit's rewards keep the clipped scheme, `bandits.QuantileNormalizer`);
- `rank`: the percentile rank of the score among the scores seen, in [0, 1];
- `none`: scores pass through.
A batch is first added to the statistics, then every score of it is mapped against the updated
statistics (so the order inside a batch does not matter). NaN (unscorable) scores stay NaN and are not
added. The state is JSON-safe.
"""

from __future__ import annotations

import numpy as np

from bandits.normalizers import QuantileNormalizer, ZScoreNormalizer

from .base import RewardError

KINDS = ("zscore", "quantile", "rank", "none")


class OrderPreservingQuantile(QuantileNormalizer):
    """The quantile scale of `bandits.QuantileNormalizer` without its clipping: strictly increasing, so a
    score above another stays above it (while the quantiles coincide: the score minus them, plus 0.5)."""

    def _map(self, v: np.ndarray) -> np.ndarray:
        q_low, q_high = self._quantile(self.low), self._quantile(self.high)
        if q_high <= q_low:
            return v - q_low + 0.5
        return (v - q_low) / (q_high - q_low)


class RankNormalizer:
    """Percentile rank against the scores seen so far (the current batch included), in [0, 1]."""

    def __init__(self, window: int | None = 100_000):
        self.window = window
        self.history: list[float] = []

    def normalize(self, values: np.ndarray) -> np.ndarray:
        self.history.extend(float(v) for v in values)
        if self.window is not None and len(self.history) > self.window:
            del self.history[:len(self.history) - self.window]
        return self.transform(values)

    def transform(self, values: np.ndarray) -> np.ndarray:
        if not self.history:
            return np.full(len(values), 0.5)
        h = np.sort(np.asarray(self.history))
        lo = np.searchsorted(h, values, side="left")
        hi = np.searchsorted(h, values, side="right")
        return (lo + hi) / (2.0 * len(h))  # ties share the middle rank

    def state_dict(self) -> dict:
        return {"window": self.window, "history": list(self.history)}

    def load_state_dict(self, state: dict) -> None:
        self.window, self.history = state["window"], [float(x) for x in state["history"]]


class _Identity:
    def normalize(self, values: np.ndarray) -> np.ndarray:
        return np.asarray(values, dtype=np.float64)

    transform = normalize

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def _make(kind: str, params: dict):
    if kind == "zscore":
        return ZScoreNormalizer(**params)
    if kind == "quantile":
        return OrderPreservingQuantile(**params)
    if kind == "rank":
        return RankNormalizer(**params)
    return _Identity()


class ScoreNormalizer:
    """One running normalizer per reward model (see the module docstring for the kinds)."""

    def __init__(self, kind: str = "zscore", **params):
        if kind not in KINDS:
            raise RewardError(f"unknown normalizer {kind!r}; choose one of {list(KINDS)}")
        self.kind, self.params = kind, params
        _make(kind, params)  # validate the parameters now rather than on the first batch
        self.per_rm: dict[str, object] = {}

    def _get(self, rm: str):
        if rm not in self.per_rm:
            self.per_rm[rm] = _make(self.kind, self.params)
        return self.per_rm[rm]

    def __call__(self, rm: str, values, update: bool = True) -> np.ndarray:
        """Normalize one RM's scores (adding them to its statistics when `update`); NaN stays NaN."""
        v = np.asarray(values, dtype=np.float64).reshape(-1)
        out = np.full(v.shape, np.nan)
        ok = np.isfinite(v)
        if ok.any():
            norm = self._get(rm)
            if update:  # the whole batch joins the statistics, then every score maps against them alike
                norm.normalize(v[ok])
            out[ok] = norm.transform(v[ok])
        return out

    def state_dict(self) -> dict:
        return {"kind": self.kind, "params": dict(self.params),
                "per_rm": {k: n.state_dict() for k, n in self.per_rm.items()}}

    def load_state_dict(self, state: dict) -> None:
        fresh = ScoreNormalizer(state["kind"], **state["params"])
        for rm, s in state["per_rm"].items():
            fresh._get(rm).load_state_dict(s)
        self.__dict__.update(fresh.__dict__)
