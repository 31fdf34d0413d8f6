"""Strategy strings ('laser:lints', 'single:math', 'ensemble:mean', ...) -> strategies."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .bandit import BanditStrategy
from .base import RewardStrategy, StrategyError
from .baselines import EnsembleStrategy, OracleStrategy, RandomStrategy, SequentialStrategy, SingleStrategy
from .validated import AutoSingleStrategy, ByDomainStrategy, ValWeightedEnsemble


@dataclass
class StrategySpec:
    """A parsed strategy string: 'laser', 'laser:lints', 'single:math', 'single:auto', 'random', 'ensemble:mean',
    'ensemble:val_weighted', 'static:by_domain', ..."""

    kind: str
    arg: str | None = None
    params: dict = field(default_factory=dict)


def parse_strategy(spec: str) -> StrategySpec:
    """Split 'kind[:arg]' and check the kind."""
    kind, _, arg = str(spec).partition(":")
    kinds = ("laser", "single", "random", "ensemble", "sequential", "oracle", "static")
    if kind not in kinds:
        raise StrategyError(f"unknown strategy {spec!r}; choose one of laser[:<bandit>], single:<rm>, "
                            "single:auto, random, ensemble:<aggregator>, ensemble:val_weighted, static:by_domain, "
                            "sequential, oracle")
    if kind == "single" and not arg:
        raise StrategyError("single needs a reward model name, or auto: single:<rm>, single:auto")
    if kind == "static" and arg != "by_domain":
        raise StrategyError(f"unknown strategy {spec!r}: the static rule is static:by_domain")
    return StrategySpec(kind, arg or None)


def make_strategy(spec: str, rm_names: Sequence[str], dim: int = 0, seed: int = 0,
                  oracle_table: Mapping[str, Mapping[str, float]] | None = None, **params) -> RewardStrategy:
    """The strategy named by `spec` over the RMs `rm_names` (`dim`: context width, for the bandit)."""
    s = parse_strategy(spec)
    if s.kind == "laser":
        return BanditStrategy(rm_names, dim, policy=s.arg or "kernel_ucb", seed=seed, **params)
    if s.kind == "single" and s.arg == "auto":
        if "auto" in rm_names:
            raise StrategyError("single:auto is the RM chosen on the validation probes, but a reward model is named "
                                "'auto': rename it")
        return AutoSingleStrategy(rm_names)
    if s.kind == "single":
        return SingleStrategy(rm_names, s.arg)
    if s.kind == "static":
        return ByDomainStrategy(rm_names)
    if s.kind == "ensemble" and s.arg == "val_weighted":
        return ValWeightedEnsemble(rm_names)
    if s.kind == "random":
        return RandomStrategy(rm_names, seed=seed)
    if s.kind == "ensemble":
        return EnsembleStrategy(rm_names, s.arg or "mean", **params)
    if s.kind == "sequential":
        return SequentialStrategy(rm_names)
    if oracle_table is None:
        raise StrategyError("the oracle needs the held-out accuracy table of the reward models (oracle_table)")
    return OracleStrategy.from_accuracy(rm_names, oracle_table)
