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
from pathlib import Path

import numpy as np

from laser.config import RunConfig
from laser.console import say
from laser.grid import run_grid
from laser.parts import resolve_models
from laser.report import StrategyResult, format_comparison, grid_title, plot_accuracy, plot_picks, read_run
from laser.report.router import router_checks, wall_times
from laser.report.world import single_rm

DEFAULT_STRATEGIES = ("laser", "random", "ensemble:mean", "best-single")


def best_single(table: dict[str, dict[str, float]]) -> str:
    """`single:<rm>` for the RM with the best mean measured accuracy over domains (chosen before training)."""
    return "single:" + max(table, key=lambda rm: float(np.mean(list(table[rm].values()))))


def run_demo(base: RunConfig, seeds: Sequence[int] = (0, 1, 2), strategies: Sequence[str] = DEFAULT_STRATEGIES,
             out: str | Path = "runs/demo", progress: bool = True, jobs: int = 1) -> Path:
    """Train every strategy for every seed (reusing finished runs), then write and print the comparison."""
    out = Path(out)
    t0 = time.perf_counter()
    _, rm_configs, table, _ = resolve_models(base)  # builds the embedded default on first use
    if "best-single" in strategies and table is None:
        raise ValueError("best-single needs a measured accuracy table (the embedded reward models)")
    names = [best_single(table) if s == "best-single" else s for s in strategies]
    grid = run_grid(base, names, seeds, out, jobs=jobs, progress=progress, say=lambda m: _say(m, progress))
    results = {name: StrategyResult(name, [read_run(d) for d in dirs]) for name, dirs in grid.runs.items()}

    single = next((n for n in names if single_rm(n) is not None), None)
    table_md = format_comparison(results, reference="laser" if "laser" in results else None)
    # the embedded worlds' length-hacked RM is `verbose`
    claims = router_checks(results, reference_single=single, hacker="verbose" if "verbose" in rm_configs else None)
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
    # Not a claim: two runs' wall times on a shared machine differ by more than the strategies do.
    lines += ["", f"Wall time per run (rounds and evaluations, mean over seeds; this machine, not a claim): "
              f"{wall_times(results)}."]
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
    say("demo", msg, file=sys.stderr if progress else sys.stdout)
