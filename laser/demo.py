"""`laser demo`: LASeR and the baselines trained on the embedded default over several seeds, compared.

Every (strategy, seed) is one `laser train` run under `<out>/<strategy>-s<seed>/`; a finished run is
reused and an interrupted one resumed, so the demo can be stopped and started again. At the end the
comparison table, `results.json`, `accuracy.png` and `picks.png` go to `<out>/`, next to `report.md`.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from laser.config import RunConfig

DEFAULT_STRATEGIES = ("laser", "random", "ensemble:mean", "best-single")


def best_single(table: dict[str, dict[str, float]]) -> str:
    """`single:<rm>` for the RM with the best mean measured accuracy over domains (chosen before training)."""
    return "single:" + max(table, key=lambda rm: float(np.mean(list(table[rm].values()))))


@dataclass
class Claim:
    """One statement the demo checks, with the numbers behind it."""

    text: str
    holds: bool
    detail: str

    def __post_init__(self) -> None:
        self.holds = bool(self.holds)  # numpy comparisons give numpy booleans


def check_claims(results: dict, k: int, laser: str = "laser", reference_single: str | None = None) -> list[Claim]:
    """The demo's claims: LASeR >= the best single RM, > random, > ensemble:mean (mean test accuracy over seeds),
    >= 5 points over the SFT policy, picks the oracle's RM on >= 70% of second-half instances, and pays about
    1/K of the ensemble's RM forward passes."""
    from laser.report import mean_ci

    if laser not in results:
        return []
    acc = {name: mean_ci(res.accuracy())[0] for name, res in results.items()}
    ours = results[laser]
    claims = []
    for other, op in ((reference_single, ">="), ("random", ">"), ("ensemble:mean", ">")):
        if other and other in acc:
            holds = acc[laser] >= acc[other] if op == ">=" else acc[laser] > acc[other]
            claims.append(Claim(f"LASeR {op} {other}", holds, f"{acc[laser]:.1%} vs {acc[other]:.1%}"))
    sft = ours.runs[0].initial["mean_accuracy"]
    claims.append(Claim("LASeR improves on the SFT policy by >= 5 points", acc[laser] - sft >= 0.05,
                        f"{sft:.1%} -> {acc[laser]:.1%} ({(acc[laser] - sft) * 100:+.1f} points)"))
    match = [m for r in ours.runs if (m := r.oracle_match()) is not None]
    if match:
        claims.append(Claim("LASeR picks the oracle's RM on >= 70% of instances (second half)",
                            float(np.mean(match)) >= 0.7, f"{np.mean(match):.0%}"))
    if "ensemble:mean" in results:
        f_ours = np.mean([r.final["rm_forward_total"] for r in ours.runs])
        f_ens = np.mean([r.final["rm_forward_total"] for r in results["ensemble:mean"].runs])
        ratio = f_ens / max(f_ours, 1)
        claims.append(Claim("LASeR runs about 1/K of the ensemble's RM forward passes", ratio >= 0.75 * k,
                            f"ensemble / LASeR = {ratio:.2f}, K = {k}"))
    return claims


def run_demo(base: RunConfig, seeds: Sequence[int] = (0, 1, 2), strategies: Sequence[str] = DEFAULT_STRATEGIES,
             out: str | Path = "runs/demo", progress: bool = True, jobs: int = 1) -> Path:
    """Train every strategy for every seed (reusing finished runs), then write and print the comparison."""
    from laser.grid import run_grid
    from laser.report import StrategyResult, format_comparison, grid_title, plot_accuracy, plot_picks, read_run
    from laser.training.run import resolve_models

    out = Path(out)
    t0 = time.perf_counter()
    _, rm_configs, table, _ = resolve_models(base)  # builds the embedded default on first use
    if "best-single" in strategies and table is None:
        raise ValueError("best-single needs a measured accuracy table (the embedded reward models)")
    names = [best_single(table) if s == "best-single" else s for s in strategies]
    grid = run_grid(base, names, seeds, out, jobs=jobs, progress=progress, say=lambda m: _say(m, progress))
    results = {name: StrategyResult(name, [read_run(d) for d in dirs]) for name, dirs in grid.runs.items()}

    single = next((n for n in names if n.startswith("single:")), None)
    table_md = format_comparison(results, reference="laser" if "laser" in results else None)
    claims = check_claims(results, len(rm_configs), reference_single=single)
    plot_accuracy({name: res.runs for name, res in results.items()}, out / "accuracy.png")
    if "laser" in results:
        plot_picks(results["laser"].runs[0].rounds, out / "picks.png")
    k = len(rm_configs)
    lines = [f"# LASeR demo: {grid_title(len(names), len(seeds))} on the embedded default", "",
             f"K = {k} reward models ({', '.join(rm_configs)}); {base.rounds} rounds of {base.round.prompts_per_round} "
             f"prompts x {base.round.n} samples; test accuracy is greedy, in %, mean ± 95% CI over seeds "
             f"{list(seeds)}; 'vs laser' is the paired difference per seed.", "", table_md, "",
             "Claims:", ""]
    lines += [f"- [{'x' if c.holds else ' '}] {c.text}: {c.detail}" for c in claims]
    lines += ["", "![accuracy per round](accuracy.png)", "",
              "![LASeR's RM picks per domain, seed " + str(seeds[0]) + "](picks.png)", "",
              f"Total wall time of this command: {time.perf_counter() - t0:.0f} s ({grid.reuse_note()})."]
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n")
    (out / "results.json").write_text(json.dumps({
        "strategies": {name: [{"seed": r.seed, "run_dir": str(r.run_dir), "final": r.final, "initial": r.initial,
                               "oracle_match_second_half": r.oracle_match(), "wall_s": r.wall_s}
                              for r in res.runs] for name, res in results.items()},
        "claims": [c.__dict__ for c in claims], "reward_models": list(rm_configs), "oracle_table": table,
    }, indent=1))
    print("\n".join(lines[2:-5]))
    print(f"\nreport: {report}")
    return report


def _say(msg: str, progress: bool) -> None:
    print(f"[laser demo] {msg}", file=sys.stderr if progress else sys.stdout, flush=True)
