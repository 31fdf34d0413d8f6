"""LASeR's strategy: a contextual bandit (`bandits`) picks one reward model per instance."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

import bandits
from bandits.normalizers import QuantileNormalizer

from .base import Assignment, Batch, RewardStrategy, StrategyError


def _bounds(scores: np.ndarray, expected: np.ndarray, arms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: (the chosen arm's lower bound (estimate minus its exploration bonus) minus the largest other
    arm's score (its upper bound), -inf with one arm; the chosen arm's lower bound)."""
    rows = np.arange(len(arms))
    chosen = 2.0 * expected[rows, arms] - scores[rows, arms]
    others = np.asarray(scores, dtype=np.float64).copy()
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
                 normalize_feedback: bool = True, center: bool = False, seed: int = 0, **params):
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
        separation = lower = None
        if batch.explore:
            try:  # UCB policies hand their estimate over with the decision; others are asked for it
                expected = decision.expected if decision.expected is not None else self.policy.expected(x)
                separation, lower = _bounds(decision.scores, expected, decision.arms)
            except NotImplementedError:  # a policy that keeps no estimate
                pass
        n = len(contexts)
        if self.selection == "batch":
            out = self._one_per_instance(np.repeat(decision.arms, n), np.repeat(decision.probs, n, axis=0))
            out.separation = None if separation is None else np.repeat(separation, n)
            out.lower = None if lower is None else np.repeat(lower, n)
            return out
        out = self._one_per_instance(decision.arms, decision.probs)
        out.separation, out.lower = separation, lower
        return out

    def _rewards(self, contexts: np.ndarray, feedback: np.ndarray) -> np.ndarray:
        r = np.asarray(feedback, dtype=np.float64)
        if r.shape != (len(contexts),):
            raise StrategyError(f"feedback has shape {r.shape}, expected ({len(contexts)},) (one per instance)")
        return np.array([r.mean()]) if self.selection == "batch" else r

    def _learn(self, contexts: np.ndarray, assignment: Assignment, r: np.ndarray) -> None:
        arms = assignment.arms[:1] if self.selection == "batch" else assignment.arms
        self.policy.update(self._contexts(contexts, remember=True), arms, r)

    def observe(self, contexts: np.ndarray, assignment: Assignment, feedback: np.ndarray) -> None:
        r = self._rewards(contexts, feedback)
        self._learn(contexts, assignment, r if self.normalizer is None else self.normalizer.normalize(r))

    def observe_all(self, observations: Sequence[tuple[np.ndarray, Assignment, np.ndarray]]) -> None:
        """With normalized rewards, every reward of `observations` joins the normalizer's history before any is
        mapped (`normalize_together`): observed one call at a time, the RM observed first would have its rewards
        mapped against a shorter history than the others' (in the warm-up, where every RM scores the same
        probes in the config's order, equal rewards favoured the RMs listed last). Then learned call by call."""
        if self.normalizer is None or not observations:
            super().observe_all(observations)
            return
        rewards = [self._rewards(c, f) for c, _, f in observations]
        mapped = np.split(self.normalizer.normalize_together(np.concatenate(rewards)),
                          np.cumsum([len(r) for r in rewards])[:-1])
        for (contexts, assignment, _), r in zip(observations, mapped, strict=True):
            self._learn(contexts, assignment, r)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "policy": self.policy.state_dict(),
                "feedback_history": None if self.normalizer is None else list(self.normalizer.history),
                "context_sum": self.context_sum.tolist(), "context_count": self.context_count}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.policy.load_state_dict(state["policy"])
        if "context_sum" in state:
            self.context_sum = np.asarray(state["context_sum"], dtype=np.float64)
            self.context_count = int(state["context_count"])
        # The state says whether rewards were normalized (a router keeps the scale it was trained on).
        history = state.get("feedback_history")
        self.normalizer = None if history is None else (self.normalizer or QuantileNormalizer())
        if self.normalizer is not None:
            self.normalizer.history = list(history)
