"""Does the router deliver? LASeR's checks against every other strategy of a grid, over seeds.

Routing is worth it when LASeR beats the best single RM by a clear margin, comes close to the oracle
(each domain judged by its best RM), beats the strategies that do not learn (random, sequential, the
averaging ensemble), loses to none of the baselines that read the same validation labels (`single:auto`,
`ensemble:val_weighted`, `static:by_domain`), sends the instances to the oracle's RM and not to the reward
hacker, and costs a fraction of the ensembles' RM passes. `router_checks` states each of these that the
grid's strategies allow, with the numbers behind it; differences are paired by seed. Wall time is no
claim: on a shared machine it is reported side by side (`wall_times`), never passed or failed.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .runs import StrategyResult, mean_ci
from .world import WorldCheck, paired, single_rm

# The baselines that read the validation labels LASeR reads (`laser.strategies.validated`).
VALIDATION_BASELINES = ("single:auto", "ensemble:val_weighted", "static:by_domain")


def best_single_of(results: Mapping[str, StrategyResult]) -> str | None:
    """The fixed `single:<rm>` strategy with the best mean final test accuracy among the results, if any."""
    singles = [n for n in results if single_rm(n) is not None]
    return max(singles, key=lambda n: mean_ci(results[n].accuracy())[0]) if singles else None


def picks_share(res: StrategyResult, rm: str) -> float:
    """The share of all instances (every run, every round) routed to `rm`."""
    total = hits = 0
    for r in res.runs:
        for row in r.final["picks"].values():
            total += sum(row.values())
            hits += row.get(rm, 0)
    return hits / max(total, 1)


def router_checks(results: Mapping[str, StrategyResult], laser: str = "laser", reference_single: str | None = None,
                  hacker: str | None = None, over_single: float = 0.05, to_oracle: float = 0.02,
                  oracle_picks: float = 0.8, hacker_picks: float = 0.05, cost: float = 0.3,
                  no_harm: float = 0.01) -> list[WorldCheck]:
    """LASeR's checks (thresholds in accuracy, 0.05 = 5 points); empty without a `laser` result.

    `reference_single`: the single RM to beat (default: the best one in the results); `hacker`: the
    length-hacked RM whose share of the picks must stay small."""
    if laser not in results:
        return []
    ours = results[laser]
    out = []
    single = reference_single or best_single_of(results)
    if single in results:
        m, h, n = paired(ours, results[single])
        out.append(WorldCheck(f"LASeR >= best single RM ({single}) + {over_single * 100:.0f} points, CI excluding 0",
                              m >= over_single and m - h > 0, f"{m * 100:+.1f} ± {h * 100:.1f} points over {n} seeds"))
    if "oracle" in results:
        m, h, n = paired(ours, results["oracle"])
        out.append(WorldCheck(f"LASeR within {to_oracle * 100:.0f} points of the oracle", m >= -to_oracle,
                              f"LASeR - oracle {m * 100:+.1f} ± {h * 100:.1f} points over {n} seeds"))
    for other in ("random", "sequential", "ensemble:mean"):
        if other in results:
            m, h, n = paired(ours, results[other])
            out.append(WorldCheck(f"LASeR > {other}, CI excluding 0", m - h > 0,
                                  f"{m * 100:+.1f} ± {h * 100:.1f} points over {n} seeds"))
    for other in VALIDATION_BASELINES:  # the same labels, used without routing: routing must not lose to them
        if other in results:
            m, h, n = paired(ours, results[other])
            where = "CI excluding 0" if m - h > 0 or m + h < 0 else "CI including 0"
            out.append(WorldCheck(f"LASeR >= {other} - {no_harm * 100:.0f} point (no harm)", m >= -no_harm,
                                  f"{m * 100:+.1f} ± {h * 100:.1f} points over {n} seeds, {where}"))
    sft = float(np.mean([r.initial["mean_accuracy"] for r in ours.runs]))
    acc = mean_ci(ours.accuracy())[0]
    out.append(WorldCheck("LASeR improves on the SFT policy by >= 5 points", acc - sft >= 0.05,
                          f"{sft:.1%} -> {acc:.1%} ({(acc - sft) * 100:+.1f} points)"))
    match = [m for r in ours.runs if (m := r.oracle_match()) is not None]
    if match:
        out.append(WorldCheck(f"LASeR picks the oracle's RM on >= {oracle_picks:.0%} of second-half instances",
                              float(np.mean(match)) >= oracle_picks, f"{np.mean(match):.0%} (per seed: "
                              + ", ".join(f"{m:.0%}" for m in match) + ")"))
    if hacker and all("picks" in r.final for r in ours.runs):
        share = picks_share(ours, hacker)
        out.append(WorldCheck(f"LASeR sends < {hacker_picks:.0%} of instances to the length-hacked {hacker}",
                              share < hacker_picks, f"{share:.1%} of all instances"))
    for other in ("ensemble:mean", "ensemble:val_weighted"):
        if other in results:
            f_ours = float(np.mean([r.final["rm_forward_total"] for r in ours.runs]))
            f_ens = float(np.mean([r.final["rm_forward_total"] for r in results[other].runs]))
            out.append(WorldCheck(f"LASeR's RM forward passes (validation probes included) <= {cost}x {other}'s",
                                  f_ours <= cost * f_ens,
                                  f"{f_ours:,.0f} vs {f_ens:,.0f} ({f_ours / max(f_ens, 1):.2f}x)"))
    return out


def wall_times(results: Mapping[str, StrategyResult]) -> str:
    """Each strategy's mean wall time per run (rounds and evaluations), side by side: a figure, not a claim."""
    return ", ".join(f"{name} {np.mean([r.wall_s for r in res.runs]):.0f} s" for name, res in results.items())
