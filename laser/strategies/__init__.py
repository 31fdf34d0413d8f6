"""Reward strategies: which reward model(s) judge each instance, and how their scores become one.

Every strategy implements the one interface the training loop and the best-of-n reranker know:

    assign(contexts, batch) -> Assignment     which RMs score each instance
    combine(scores, assignment, instance)     per-candidate normalized scores of those RMs -> one score
    observe(contexts, assignment, feedback)   the reward of each instance's choice (bandits learn from it)
    state_dict() / load_state_dict(state)     everything needed to resume exactly

LASeR is `BanditStrategy` (any `bandits` policy); the baselines are `single:<rm>`, `random`,
`ensemble:<aggregator>` (every aggregator of `laser.rewards`, MORLAIF's scalarizations included),
`sequential` (one RM per round in a fixed cycle) and `oracle` (the RM with the best held-out accuracy on
each instance's domain; benchmark only, it reads the domain labels). `single:auto`, `static:by_domain` and
`ensemble:val_weighted` read the validation labels LASeR reads (`laser.strategies.validated`).
"""

from __future__ import annotations

from .bandit import BanditStrategy
from .base import Assignment, Batch, RewardStrategy, StrategyError
from .baselines import EnsembleStrategy, OracleStrategy, RandomStrategy, SequentialStrategy, SingleStrategy
from .registry import StrategySpec, make_strategy, parse_strategy
from .validated import AutoSingleStrategy, ByDomainStrategy, ValWeightedEnsemble

__all__ = ["Assignment", "AutoSingleStrategy", "BanditStrategy", "Batch", "ByDomainStrategy", "EnsembleStrategy",
           "OracleStrategy", "RandomStrategy", "RewardStrategy", "SequentialStrategy", "SingleStrategy",
           "StrategyError", "StrategySpec", "ValWeightedEnsemble", "make_strategy", "parse_strategy"]
