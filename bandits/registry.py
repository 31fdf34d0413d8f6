"""Build a policy by name: `make_policy("linucb", n_arms=4, dim=64, alpha=0.1)`."""

from __future__ import annotations

import inspect
from typing import Any

from .base import Policy
from .kernel import KernelUCB
from .linear import LinTS, LinUCB
from .mab import UCB1, EpsilonGreedy, Exp3, GaussianThompson, UniformRandom

POLICIES: dict[str, type[Policy]] = {
    cls.name: cls for cls in (LinUCB, LinTS, KernelUCB, UCB1, GaussianThompson, Exp3, EpsilonGreedy, UniformRandom)
}
ALIASES = {"random": "uniform", "thompson": "gaussian_thompson", "ts": "gaussian_thompson",
           "egreedy": "epsilon_greedy", "kernel": "kernel_ucb"}


def make_policy(name: str, n_arms: int, dim: int, **params: Any) -> Policy:
    """Construct the policy called `name` (see `POLICIES`) with K arms, context width d, and its params."""
    key = ALIASES.get(str(name).lower(), str(name).lower())
    if key not in POLICIES:
        raise ValueError(f"unknown policy {name!r}; choose one of {sorted(POLICIES)} (aliases: {sorted(ALIASES)})")
    cls = POLICIES[key]
    allowed = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "n_arms", "dim")]
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown} for policy {key!r}; allowed: {allowed}")
    return cls(n_arms, dim, **params)
