"""Noticing that an arm got worse: a change detector on each arm's rewards.

A bandit that is sure of an arm stops testing the alternatives, and a kernel or ridge estimate built on hundreds
of good rewards takes hundreds of bad ones to turn. When an arm's rewards change for the worse (a reward model
server redeployed with other weights, a judge that degrades as the policy moves away from what it was trained
on), that is too slow. The detector takes each reward minus the arm's lower confidence bound at that context
(`Policy.interval`: the estimate minus its half-width, taken before the reward is learned), in blocks of `window`
observations per arm: a block whose mean is below -`threshold` says the arm now earns clearly less than the policy
is sure of where it is played, and the arm is reported as changed (its caller forgets it: `Policy.forget`).
Measuring from the lower bound, not the estimate, keeps an arm out while the policy is still learning it (an arm
barely tried, or tried far from where it is played now, has a wide interval). A single reward is noisy (a rerank
gain of a few samples is often -1 or 1 where the arm's mean is 0): the block's mean, not each reward, is tested,
and blocks do not overlap, so a run of ordinary noise is tested once, not at every observation. (A bar of two
standard errors of a block's mean, from the spread of the arm's residuals, was measured and dropped: an RM's
rewards differ so much between the domains it is tried on that on the default world it hid the change it is for;
benchmarks/results/2026-12-06-drift/.)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import check_finite_float, check_positive_int


class ChangeDetector:
    """Per-arm blocks of residuals (each reward minus the arm's lower bound); `observe` returns the arms whose last
    block fell."""

    def __init__(self, n_arms: int, window: int = 4, threshold: float = 0.5):
        self.n_arms = check_positive_int("n_arms", n_arms)
        self.window = check_positive_int("window", window)
        self.threshold = check_finite_float("threshold", threshold, low=0.0, low_open=True)
        self.blocks: list[list[float]] = [[] for _ in range(self.n_arms)]

    def observe(self, arms: np.ndarray, residuals: np.ndarray) -> np.ndarray:
        """Add one residual per observation (arm played, the reward minus the arm's lower bound there, before
        learning it); returns the arms (sorted, each once) whose block completed here with a mean below -threshold."""
        arms = np.asarray(arms, dtype=np.int64).reshape(-1)
        residuals = np.asarray(residuals, dtype=np.float64).reshape(-1)
        if arms.shape != residuals.shape:
            raise ValueError(f"arms {arms.shape} and residuals {residuals.shape} must have the same length")
        changed = set()
        for a, e in zip(arms.tolist(), residuals.tolist(), strict=True):
            if not 0 <= a < self.n_arms:
                raise ValueError(f"arm {a} out of range [0, {self.n_arms})")
            if not np.isfinite(e):
                continue
            block = self.blocks[a]
            block.append(e)
            if len(block) == self.window:
                if float(np.mean(block)) < -self.threshold:
                    changed.add(a)
                block.clear()
        return np.array(sorted(changed), dtype=np.int64)

    def state_dict(self) -> dict[str, Any]:
        return {"window": self.window, "threshold": self.threshold, "blocks": [list(b) for b in self.blocks]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        blocks = [list(map(float, b)) for b in state["blocks"]]
        if len(blocks) != self.n_arms:
            raise ValueError(f"state has {len(blocks)} arms, this detector {self.n_arms}")
        self.window, self.threshold, self.blocks = int(state["window"]), float(state["threshold"]), blocks
