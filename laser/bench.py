"""`laser bench`: every strategy x S seeds on the embedded default, with confidence intervals, cost and plots.

The runs go to `<runs>/<strategy>-s<seed>/` (reused when finished with the same config, resumed when
interrupted: `laser.grid`); the comparison goes to `benchmarks/results/<date>-<name>/`: `report.md`
(the command and the machine at the top, then test accuracy per domain and mean as mean ± 95% CI over
seeds, the paired difference to LASeR, oracle picks, RM forward passes, wall time and the rounds each
strategy needed to reach ensemble:mean's final accuracy), `results.json` (every raw number: each run's
evaluations and per-stage seconds) and `accuracy.png`, `picks.png`, `stages.png`, `pareto.png` (per-domain
accuracy as objectives). `soup:uniform` is no training of its own: the uniform rewarded soup of the bench's
`single:<rm>` runs per seed (`laser.soup`), whose cost is the sum of theirs.
"""

from __future__ import annotations

import datetime
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from laser.config import RunConfig
from laser.grid import run_grid
from laser.parts import resolve_models
from laser.report import (
    StrategyResult,
    describe_machine,
    format_comparison,
    grid_title,
    mean_ci,
    plot_accuracy,
    plot_pareto,
    plot_picks,
    plot_stages,
    read_run,
)
from laser.report.router import router_checks, wall_times
from laser.report.world import format_checks, format_facts, single_rm, world_checks

# "singles" stands for single:<rm> for every reward model of the run.
DEFAULT_STRATEGIES = ("laser", "laser:linucb", "laser:lints", "laser:exp3", "random", "sequential", "ensemble:mean",
                      "ensemble:worst_case", "ensemble:uncertainty_weighted", "singles", "single:auto",
                      "ensemble:val_weighted", "static:by_domain", "soup:uniform", "oracle")
QUICK = {"seeds": (0,), "overrides": {"rounds": 16, "eval_every": 4, "checkpoint_every": 8}}
FULL = {"seeds": (0, 1, 2, 3, 4), "overrides": {"eval_every": 5}}


def expand(strategies: Sequence[str], rm_names: Sequence[str]) -> list[str]:
    out: list[str] = []
    for s in strategies:
        out += [f"single:{rm}" for rm in rm_names] if s == "singles" else [s]
    return list(dict.fromkeys(out))


def run_bench(base: RunConfig, strategies: Sequence[str], seeds: Sequence[int], runs_dir: str | Path,
              results_dir: str | Path, jobs: int = 1, command: str = "laser bench", progress: bool = True) -> Path:
    """Train the grid, then write the comparison (see the module docstring); returns the report's path."""
    t0 = time.perf_counter()
    _, rm_configs, table, assets = resolve_models(base)
    names = expand(strategies, list(rm_configs))
    if "oracle" in names and table is None:
        raise ValueError("the oracle needs the measured accuracy table of the embedded reward models")
    soups = [n for n in names if n.startswith("soup:")]
    if soups and soups != ["soup:uniform"]:
        raise ValueError(f"unknown strategy {next(n for n in soups if n != 'soup:uniform')!r}: the bench mixes "
                         "soup:uniform (laser soup makes any other weights)")
    trained = [n for n in names if n not in soups]
    grid = run_grid(base, trained, seeds, runs_dir, jobs=jobs, progress=progress,
                    say=lambda m: print(f"[laser bench] {m}", file=sys.stderr, flush=True))
    results = {name: StrategyResult(name, [read_run(d) for d in dirs]) for name, dirs in grid.runs.items()}
    front: list[dict] = []
    if soups:
        from laser.soup import bench_soups

        uniform, front = bench_soups({n: r.runs for n, r in results.items() if single_rm(n) is not None}, runs_dir,
                                     progress=progress)
        results["soup:uniform"] = StrategyResult("soup:uniform", uniform)
    out = Path(results_dir)
    out.mkdir(parents=True, exist_ok=True)
    reference = "laser" if "laser" in results else None
    reach = "ensemble:mean" if "ensemble:mean" in results else None
    table_md = format_comparison(results, reference=reference, reach=reach)
    trained_results = {n: r for n, r in results.items() if n in trained}  # soups have no rounds to plot
    plot_accuracy({n: r.runs for n, r in trained_results.items()}, out / "accuracy.png")
    if reference:
        plot_picks(results[reference].runs[0].rounds, out / "picks.png")
    stages = {n: {k: float(np.mean([r.stage_seconds().get(k, 0.0) for r in res.runs]))
                  for k in res.runs[0].stage_seconds()} for n, res in trained_results.items()}
    plot_stages(stages, out / "stages.png")
    domains = list(next(iter(results.values())).runs[0].final["accuracy"])
    plot_pareto({n: {d: mean_ci(r.accuracy(d)) for d in domains} for n, r in results.items()},
                [row["accuracy"] for row in front], out / "pareto.png")
    wall = time.perf_counter() - t0
    checks = world_checks(results, table) if table else []
    claims = router_checks(results, hacker="verbose" if "verbose" in rm_configs else None)
    world = world_label(base, assets)
    lines = [f"# Strategies on {world}: {grid_title(len(names), len(seeds))}", "",
             f"Command: `{command}`  ", f"Machine: {describe_machine()}  ",
             f"Date: {datetime.date.today().isoformat()}; wall time of the command: {wall:.0f} s "
             f"({jobs} parallel run(s); {grid.reuse_note()})", "",
             f"K = {len(rm_configs)} reward models ({', '.join(rm_configs)}); {base.rounds} rounds of "
             f"{base.round.prompts_per_round} prompts x {base.round.n} samples, evaluated every {base.eval_every} "
             f"rounds; greedy test accuracy in %, mean ± 95% CI (Student t) over seeds {list(seeds)}; 'vs laser' "
             "is the paired difference per seed with its CI; 'wall s' is each run's time in rounds and "
             "evaluations.", "", table_md, "",
             *(["How much room the world leaves for routing (`laser.report.world`; a description, not a requirement; "
                "gains are final minus round-0 accuracy, mean over seeds):", "", format_facts(checks), ""]
               if checks else []),
             *(["Does the router deliver (`laser.report.router`; differences paired by seed):", "",
                format_checks(claims), "", f"Wall time per run (this machine, not a claim): {wall_times(results)}.",
                ""] if claims else []),
             "![accuracy per round, mean and 95% band over seeds](accuracy.png)", "",
             "![LASeR's RM picks per domain over the rounds, first seed](picks.png)", "",
             "![seconds per stage, mean over seeds](stages.png)", "",
             "![per-domain test accuracy as objectives: every strategy (mean, 95% CI) and, with soup:uniform, the "
             "soups of a grid of weights on the first seed's single-RM runs and their front](pareto.png)"]
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n")
    raw = {"command": command, "machine": describe_machine(), "seeds": list(seeds), "world": world,
           "world_checks": [c.__dict__ for c in checks], "router_checks": [c.__dict__ for c in claims],
           "reward_models": list(rm_configs),
           "oracle_table": table, "config": base.model_dump(mode="json"), "wall_s": wall,
           "strategies": {n: [{"seed": r.seed, "run_dir": str(r.run_dir), "evals": r.evals,
                               "stage_seconds": r.stage_seconds(), "wall_s": r.wall_s,
                               "oracle_match_second_half": r.oracle_match(),
                               **dict(zip(("validation_labels_read", "validation_rm_forward"),
                                          r.validation_reads(), strict=True)),
                               "rm_forward_per_round": [x["rm_forward"] for x in r.rounds]}
                              for r in res.runs] for n, res in results.items()},
           "soup_front": front}
    (out / "results.json").write_text(json.dumps(raw, indent=1))
    print(table_md)
    if checks:
        print("\n" + format_facts(checks))
    if claims:
        print("\n" + format_checks(claims))
    print(f"\nreport: {report}")
    return report


def world_label(config: RunConfig, assets) -> str:
    """Which world a grid ran on, for report titles: the recipe file, or the embedded default, and its domains."""
    if assets is None:
        return "your models"
    name = config.models.embedded_recipe or f"the embedded {config.models.embedded or 'default'} world"
    return f"{name} ({', '.join(assets.recipe.suite.domains)}; recipe {assets.recipe.digest()})"
