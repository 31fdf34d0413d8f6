"""Does a world leave room for routing? Checks on the oracle, every single RM and the ensemble over seeds.

A world is worth routing in when the oracle (each domain judged by its best RM) beats the best single
RM by a clear margin; that happens when each judge, used alone, lifts its own domains and no other,
and when averaging every RM blurs the right one's signal. `world_checks` states each of these with the
numbers behind it, from the finished runs of `laser bench --strategies singles oracle ensemble:mean`.
They describe a world; they do not admit or reject it. A build checks its recipe's own targets (the policy's
band, the judges' accuracies: `laser.assets.build.check_targets`); worlds built not to favour routing (a
generalist judge, noisy judges) are expected to answer "no" here, and a bench reports what comes out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from .runs import StrategyResult, mean_ci


@dataclass
class WorldCheck:
    """One property of the world, whether it holds, and the numbers behind it."""

    text: str
    holds: bool
    detail: str

    def __post_init__(self) -> None:
        self.holds = bool(self.holds)


def single_rm(strategy: str) -> str | None:
    """The RM of a fixed `single:<rm>` strategy; None for any other, `single:auto` included (it chooses its RM)."""
    kind, _, rm = strategy.partition(":")
    return rm if kind == "single" and rm and rm != "auto" else None


def paired(a: StrategyResult, b: StrategyResult, domain: str | None = None) -> tuple[float, float, int]:
    """(mean, 95% CI half-width, seeds) of a - b in final test accuracy, paired by seed."""
    fa = {r.seed: (r.final["mean_accuracy"] if domain is None else r.final["accuracy"][domain]) for r in a.runs}
    fb = {r.seed: (r.final["mean_accuracy"] if domain is None else r.final["accuracy"][domain]) for r in b.runs}
    seeds = sorted(set(fa) & set(fb))
    m, h = mean_ci([fa[s] - fb[s] for s in seeds])
    return m, h, len(seeds)


def gains(res: StrategyResult) -> dict[str, float]:
    """Per domain: mean over seeds of final minus initial (round 0) test accuracy."""
    domains = list(res.runs[0].final["accuracy"])
    return {d: float(np.mean([r.final["accuracy"][d] - r.initial["accuracy"][d] for r in res.runs]))
            for d in domains}


def home_domains(table: Mapping[str, Mapping[str, float]]) -> dict[str, list[str]]:
    """{rm: the domains where it is the oracle's RM (its best-measured domains)}."""
    domains = sorted({d for row in table.values() for d in row})
    best = {d: max(table, key=lambda rm: table[rm].get(d, -1.0)) for d in domains}
    return {rm: [d for d in domains if best[d] == rm] for rm in table}


def world_checks(results: Mapping[str, StrategyResult], table: Mapping[str, Mapping[str, float]],
                 headroom: float = 0.10, home_gain: float = 0.15, off_gain: float = 0.05,
                 ensemble_gap: float = 0.08) -> list[WorldCheck]:
    """The world's headroom checks (thresholds in accuracy, 0.10 = 10 points); empty without the oracle."""
    if "oracle" not in results:
        return []
    oracle = results["oracle"]
    singles = {rm: r for n, r in results.items() if (rm := single_rm(n)) is not None}
    out = []
    if singles:
        best = max(singles, key=lambda rm: float(np.mean(singles[rm].accuracy())))
        m, h, n = paired(oracle, singles[best])
        out.append(WorldCheck(f"oracle - best single RM ({best}) >= {headroom * 100:.0f} points, CI excluding 0",
                              m >= headroom and (n >= 2 and m - h > 0),
                              f"{m * 100:+.1f} ± {h * 100:.1f} points over {n} seeds"))
    homes = home_domains(table)
    for rm, res in singles.items():
        home = homes.get(rm, [])
        if not home:
            continue  # an RM that is best nowhere (the length-hacked one) has no home to lift
        g = gains(res)
        low = min(home, key=g.get)
        out.append(WorldCheck(f"single:{rm} raises its home ({', '.join(home)}) by >= {home_gain * 100:.0f} points",
                              g[low] >= home_gain, ", ".join(f"{d} {g[d] * 100:+.1f}" for d in home)))
        others = [d for d in g if d not in home]
        top = max(others, key=g.get) if others else None
        if top is not None:
            out.append(WorldCheck(f"single:{rm} raises no other domain by more than {off_gain * 100:.0f} points",
                                  g[top] <= off_gain, ", ".join(f"{d} {g[d] * 100:+.1f}" for d in others)))
    if "ensemble:mean" in results:
        m, h, n = paired(oracle, results["ensemble:mean"])
        out.append(WorldCheck(f"ensemble:mean below the oracle by >= {ensemble_gap * 100:.0f} points",
                              m >= ensemble_gap, f"oracle - ensemble:mean {m * 100:+.1f} ± {h * 100:.1f} points"))
    return out


def format_checks(checks: list[WorldCheck]) -> str:
    """The checks as a markdown task list."""
    return "\n".join(f"- [{'x' if c.holds else ' '}] {c.text}: {c.detail}" for c in checks)


def format_facts(checks: list[WorldCheck]) -> str:
    """The checks as statements answered yes or no (descriptions of a world, not requirements)."""
    return "\n".join(f"- {c.text}? {'yes' if c.holds else 'no'}: {c.detail}" for c in checks)
