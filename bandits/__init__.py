"""Contextual multi-armed bandits in numpy: LinUCB, LinTS, kernel UCB, UCB1, Gaussian TS, Exp3, epsilon-greedy, random.

Every policy has `select(contexts) -> Decision(arms, scores, probs)` and `update(contexts, arms, rewards)`,
`state_dict()` / `load_state_dict()`; `save(policy, path)` / `load(path)` persist them without pickle.
"""

from . import evaluation
from .base import Decision, Policy
from .drift import ChangeDetector
from .io import load, save
from .kernel import KernelUCB
from .linear import LinTS, LinUCB
from .mab import UCB1, EpsilonGreedy, Exp3, GaussianThompson, UniformRandom
from .normalizers import QuantileNormalizer, ZScoreNormalizer
from .registry import POLICIES, make_policy

__all__ = [
    "UCB1", "POLICIES", "ChangeDetector",
    "Decision", "EpsilonGreedy", "Exp3", "GaussianThompson", "KernelUCB", "LinTS", "LinUCB",
    "Policy",
    "QuantileNormalizer", "UniformRandom", "ZScoreNormalizer", "evaluation", "load", "make_policy", "save",
]
