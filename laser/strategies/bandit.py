"""LASeR's strategy: a contextual bandit (`bandits`) picks one reward model per instance."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

import bandits
from bandits.normalizers import QuantileNormalizer

from .base import Assignment, Batch, RewardStrategy, StrategyError


def _bounds(expected: np.ndarray, width: np.ndarray, arms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: (the chosen arm's lower bound (estimate minus its interval's half-width) minus the largest upper
    bound of the other arms, -inf with one arm; the chosen arm's lower bound)."""
    rows = np.arange(len(arms))
    chosen = expected[rows, arms] - width[rows, arms]
    others = np.asarray(expected + width, dtype=np.float64).copy()
    others[rows, arms] = -np.inf
    separation = chosen - others.max(axis=1) if others.shape[1] > 1 else np.full(len(arms), -np.inf)
    return separation, chosen


class BanditStrategy(RewardStrategy):
    """LASeR: a contextual bandit picks one RM per instance (or one per batch, from the mean context).

    With `normalize_feedback`, rewards are normalized by the LASeR code's quantile scheme (20th-80th
    percentile of the reward history -> [0, 1]) before the bandit sees it, so that validation gains of
    any scale are comparable; rewards on a fixed scale (the rerank gain, in [-1, 1]) go in as they are.

    `center`: the bandit sees each context minus the running mean of every context it learned from,
    L2-normalized, plus a constant feature (so a linear policy can still hold a per-RM baseline). A
    policy's prompt embeddings share one large common direction (mean cosine 0.96 between the embedded
    world's domains), which would otherwise leave LinUCB one bandit for every prompt.
    """

    name = "laser"

    def __init__(self, rm_names: Sequence[str], dim: int, policy: str = "kernel_ucb", selection: str = "instance",
                 normalize_feedback: bool = True, center: bool = False, seed: int = 0,
                 drift_threshold: float | None = None, drift_window: int = 4, **params):
        super().__init__(rm_names)
        if selection not in ("instance", "batch"):
            raise StrategyError(f"selection must be 'instance' or 'batch', got {selection!r}")
        self.center = bool(center)
        try:
            self.policy = bandits.make_policy(policy, n_arms=self.k, dim=dim + self.center, seed=seed, **params)
        except (ValueError, TypeError) as e:
            raise StrategyError(str(e)) from e
        self.selection = selection
        self.normalizer = QuantileNormalizer() if normalize_feedback else None
        self.context_sum, self.context_count = np.zeros(dim), 0
        try:
            self.detector = None if drift_threshold is None else \
                bandits.ChangeDetector(self.k, window=drift_window, threshold=drift_threshold)
        except ValueError as e:
            raise StrategyError(str(e)) from e
        self.forgotten: list[str] = []  # RMs forgotten on a detected change since `take_forgotten` last ran

    def _contexts(self, contexts: np.ndarray, remember: bool = False) -> np.ndarray:
        x = np.asarray(contexts, dtype=np.float64)
        if self.center:
            if remember:
                self.context_sum = self.context_sum + x.sum(axis=0)
                self.context_count += len(x)
            x = x - self.context_sum / max(self.context_count, 1)
            x = np.hstack([x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12), np.ones((len(x), 1))])
        return x.mean(axis=0, keepdims=True) if self.selection == "batch" else x

    @property
    def learns(self) -> bool:
        return True

    def assign(self, contexts: np.ndarray, batch: Batch) -> Assignment:
        x = self._contexts(contexts)
        decision = self.policy.select(x) if batch.explore else self.policy.exploit(x)
        separation = lower = upper = None
        if batch.explore and decision.expected is not None and decision.width is not None:
            # Policies that keep a confidence interval (UCB's bonus, Thompson sampling's posterior scale) say where
            # they are sure; the others never skip a probe.
            separation, lower = _bounds(decision.expected, decision.width, decision.arms)
            upper = np.asarray(decision.expected + decision.width, dtype=np.float64)
        n = len(contexts)
        if self.selection == "batch":
            out = self._one_per_instance(np.repeat(decision.arms, n), np.repeat(decision.probs, n, axis=0))
            out.separation = None if separation is None else np.repeat(separation, n)
            out.lower = None if lower is None else np.repeat(lower, n)
            out.upper = None if upper is None else np.repeat(upper, n, axis=0)
            return out
        out = self._one_per_instance(decision.arms, decision.probs)
        out.separation, out.lower, out.upper = separation, lower, upper
        return out

    def ranking(self, contexts: np.ndarray) -> np.ndarray:
        """Each instance's RMs by the reward the router expects of them there, best first."""
        expected = self.policy.expected(self._contexts(contexts))
        if self.selection == "batch":
            expected = np.repeat(expected, len(contexts), axis=0)
        return np.argsort(-expected, axis=1, kind="stable")

    def _rewards(self, contexts: np.ndarray, feedback: np.ndarray) -> np.ndarray:
        r = np.asarray(feedback, dtype=np.float64)
        if r.shape != (len(contexts),):
            raise StrategyError(f"feedback has shape {r.shape}, expected ({len(contexts)},) (one per instance)")
        return np.array([r.mean()]) if self.selection == "batch" else r

    def _learn(self, contexts: np.ndarray, assignment: Assignment, r: np.ndarray) -> None:
        arms = assignment.arms[:1] if self.selection == "batch" else assignment.arms
        x = self._contexts(contexts, remember=True)
        if self.detector is not None:
            try:  # each reward against the arm's interval there, before it is learned
                expected, width = self.policy.interval(x)
            except NotImplementedError:  # a policy that keeps no interval
                expected = None
            if expected is not None:
                rows = np.arange(len(arms))
                changed = self.detector.observe(arms, r - (expected[rows, arms] - width[rows, arms]))
                if changed.size:
                    self.policy.forget(changed)  # the new rewards below are its first again
                    self.forgotten += [self.rm_names[a] for a in changed]
                    shown = np.asarray(contexts, dtype=np.float64)
                    if self.selection == "instance":
                        shown = shown[np.isin(arms, changed)]
                    self.change_context = shown.mean(axis=0)
        self.policy.update(x, arms, r)

    def take_forgotten(self) -> list[str]:
        """The RMs forgotten on a detected change since the last call."""
        out, self.forgotten = self.forgotten, []
        return out

    def observe(self, contexts: np.ndarray, assignment: Assignment, feedback: np.ndarray) -> None:
        r = self._rewards(contexts, feedback)
        self._learn(contexts, assignment, r if self.normalizer is None else self.normalizer.normalize(r))

    def observe_all(self, observations: Sequence[tuple[np.ndarray, Assignment, np.ndarray]],
                    batch: Batch | None = None) -> None:
        """With normalized rewards, every reward of `observations` joins the normalizer's history before any is
        mapped (`normalize_together`): observed one call at a time, the RM observed first would have its rewards
        mapped against a shorter history than the others' (in the warm-up, where every RM scores the same
        probes in the config's order, equal rewards favoured the RMs listed last). Then learned call by call. An RM
        forgotten on the way dates the change by `batch.round` (`last_change`; `change_context` says where)."""
        forgotten = len(self.forgotten)
        if self.normalizer is None or not observations:
            super().observe_all(observations)
        else:
            rewards = [self._rewards(c, f) for c, _, f in observations]
            mapped = np.split(self.normalizer.normalize_together(np.concatenate(rewards)),
                              np.cumsum([len(r) for r in rewards])[:-1])
            for (contexts, assignment, _), r in zip(observations, mapped, strict=True):
                self._learn(contexts, assignment, r)
        if batch is not None and len(self.forgotten) > forgotten:
            self.last_change = batch.round

    def state_dict(self) -> dict:
        return {**super().state_dict(), "policy": self.policy.state_dict(),
                "feedback_history": None if self.normalizer is None else list(self.normalizer.history),
                "context_sum": self.context_sum.tolist(), "context_count": self.context_count,
                "detector": None if self.detector is None else self.detector.state_dict(),
                "last_change": self.last_change,
                "change_context": None if self.change_context is None else self.change_context.tolist()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.policy.load_state_dict(state["policy"])
        if "context_sum" in state:
            self.context_sum = np.asarray(state["context_sum"], dtype=np.float64)
            self.context_count = int(state["context_count"])
        if self.detector is not None and state.get("detector") is not None:
            self.detector.load_state_dict(state["detector"])
        self.last_change = state.get("last_change")
        where = state.get("change_context")
        self.change_context = None if where is None else np.asarray(where, dtype=np.float64)
        # The state says whether rewards were normalized (a router keeps the scale it was trained on).
        history = state.get("feedback_history")
        self.normalizer = None if history is None else (self.normalizer or QuantileNormalizer())
        if self.normalizer is not None:
            self.normalizer.history = list(history)
