"""The selection simulator (`laser.simulate`): every strategy, noise robustness, drift and scale, in minutes.

    python benchmarks/bench_simulate.py            # 3 seeds x 100,000 instances per strategy, about 5 minutes
    python benchmarks/bench_simulate.py --instances 20000 --seeds 0 --no-scale

Writes benchmarks/results/simulate/simulate.md and simulate.json. Every strategy runs through the same
`RewardStrategy` interface as `laser train`; on one seed all strategies see the same instances, the
same candidates and the same RM noise, so differences are paired.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
STRATEGIES = ["laser", "laser:linucb", "laser:lints", "laser:exp3", "random", "sequential", "ensemble:mean",
              "ensemble:worst_case", "ensemble:uncertainty_weighted", "singles", "oracle"]


def _ci(x) -> tuple[float, float]:
    from laser.report import mean_ci

    return mean_ci(list(x))


def _pm(m: float, h: float, scale: float = 1.0, digits: int = 3) -> str:
    return f"{m * scale:.{digits}f}" if np.isnan(h) else f"{m * scale:.{digits}f} ± {h * scale:.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--instances", type=int, default=100_000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--noise", type=float, default=0.3, help="std of the Gaussian noise added to RM scores")
    ap.add_argument("--no-scale", action="store_true", help="skip the K x d timing grid")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "simulate"))
    args = ap.parse_args(argv)

    from laser.report import describe_machine
    from laser.simulate import default_world, run_strategies, simulate
    from laser.strategies import make_strategy

    t_all = time.perf_counter()
    world = default_world()
    specs = [x for s in STRATEGIES for x in ([f"single:{rm}" for rm in world.rm_names] if s == "singles" else [s])]
    md = []
    raw: dict = {"world": {rm.name: {"gain": rm.gain.tolist(), "noise": rm.noise.tolist(), "length": rm.length}
                           for rm in world.rms}, "accuracy_table": world.accuracy_table()}

    # 1-2. Every strategy, without and with extra score noise.
    runs = {noise: {seed: run_strategies(world, specs, instances=args.instances, seed=seed, score_noise=noise)
                    for seed in args.seeds} for noise in (0.0, args.noise)}
    print(f"strategies done in {time.perf_counter() - t_all:.0f} s", flush=True)
    md += [f"K = {len(world.rms)} simulated RMs (4 specialists, length-hacked, adversarial), 4 domains, "
           f"d = {world.dim}, "
           f"{world.candidates} candidates per instance, {args.instances:,} instances per run, seeds {args.seeds}; "
           "mean ± 95% CI over seeds. 'chosen quality' is the latent quality (N(0, 1) per candidate) of the "
           "candidate the strategy's scores put first; 'regret vs oracle' is the oracle's chosen quality minus "
           "the strategy's on the same draws; 'pair accuracy' is the share of (best, worst) pairs ordered "
           f"rightly; the last columns are the change under Gaussian noise sigma = {args.noise} on every RM "
           "score.", "",
           "| strategy | chosen quality | regret vs oracle | pair accuracy (%) | RM scorings / instance | "
           "us / decision | chosen quality, noisy | pair accuracy change, noisy (points) |",
           "|---|---|---|---|---|---|---|---|"]
    raw["strategies"] = {}
    for spec in specs:
        rows = {noise: [runs[noise][seed][spec].summary() for seed in args.seeds] for noise in runs}
        clean, noisy = rows[0.0], rows[args.noise]
        regret = [runs[0.0][s]["oracle"].chosen_quality.mean() - runs[0.0][s][spec].chosen_quality.mean()
                  for s in args.seeds]
        drop = [n["pair_accuracy"] - c["pair_accuracy"] for c, n in zip(clean, noisy, strict=True)]
        md.append(f"| {spec} | {_pm(*_ci(r['chosen_quality'] for r in clean))} | {_pm(*_ci(regret))} | "
                  f"{_pm(*_ci(r['pair_accuracy'] for r in clean), 100, 1)} | {clean[0]['rm_calls_per_instance']:.0f} | "
                  f"{np.mean([r['us_per_decision'] for r in clean]):.1f} | "
                  f"{_pm(*_ci(r['chosen_quality'] for r in noisy))} | {_pm(*_ci(drop), 100, 2)} |")
        raw["strategies"][spec] = {"clean": clean, "noisy": noisy, "regret_vs_oracle": regret,
                                   "picks_seed0": runs[0.0][args.seeds[0]][spec].picks}

    # 3. Drift: the specialists rotate domains halfway; stationary vs discounted LinUCB.
    drift_specs = [("laser (LinUCB, no discount)", "laser:linucb", {}),
                   ("laser (LinUCB, discount 0.999)", "laser:linucb", {"discount": 0.999}),
                   ("laser (LinUCB, discount 0.99)", "laser:linucb", {"discount": 0.99}),
                   ("ensemble:mean", "ensemble:mean", {}), ("oracle (knows the drift)", "oracle", {})]
    md += ["", "Drift: after half of the stream every specialist moves to the next domain (the best RM of each "
               "domain changes). Chosen quality over the second half, mean ± 95% CI over seeds:", "",
           "| strategy | first half | second half | last quarter |", "|---|---|---|---|"]
    raw["drift"] = {}
    table = world.accuracy_table()
    for label, spec, params in drift_specs:
        res = [simulate(make_strategy(spec, world.rm_names, dim=world.dim, seed=seed, oracle_table=table, **params),
                        world, instances=args.instances, seed=seed, drift_at=0.5) for seed in args.seeds]
        h, q = args.instances // 2, 3 * args.instances // 4
        parts = {k: [r.chosen_quality[sl].mean() for r in res]
                 for k, sl in (("first", slice(None, h)), ("second", slice(h, None)), ("last", slice(q, None)))}
        md.append(f"| {label} | " + " | ".join(_pm(*_ci(parts[k])) for k in ("first", "second", "last")) + " |")
        raw["drift"][label] = parts
    print(f"drift done at {time.perf_counter() - t_all:.0f} s", flush=True)

    # 4. Scale: LinUCB's time per decision (select + update) with K RMs and d-dimensional contexts.
    if not args.no_scale:
        md += ["", "Scale: LinUCB (float64) routing batches of 256 instances; microseconds per instance for "
                   "`assign` + `observe` (select + update), the RM scoring excluded:", "",
               "| K \\ d | 16 | 256 | 1024 | 4096 |", "|---|---|---|---|---|"]
        raw["scale"] = {}
        for k in (4, 8, 16, 32):
            cells = []
            for d in (16, 256, 1024, 4096):
                w = default_world(extra_rms=k - 6, dim=d) if k >= 6 else _first_rms(default_world(dim=d), k)
                n = 4096 if d <= 256 else 1024 if d <= 1024 else 512
                r = simulate(make_strategy("laser:linucb", w.rm_names, dim=d), w, instances=n)
                us = r.summary()["us_per_decision"]
                cells.append(f"{us:,.0f}")
                raw["scale"][f"K={k},d={d}"] = us
                print(f"  K={k} d={d}: {us:,.0f} us per decision", flush=True)
            md.append(f"| {k} | " + " | ".join(cells) + " |")

    total = time.perf_counter() - t_all
    command = " ".join(["python benchmarks/bench_simulate.py", *(argv if argv is not None else sys.argv[1:])])
    header = [f"`{command}` on {describe_machine()}; {total:.0f} s in all.", ""]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "simulate.md").write_text("\n".join(header + md) + "\n")
    (out / "simulate.json").write_text(json.dumps({"command": command, **raw}, indent=1, default=float))
    print("\n".join(header + md))
    return 0


def _first_rms(world, k: int):
    """The world with only its first k RMs (k < 6)."""
    from laser.simulate import World

    return World(world.domains, world.rms[:k], world.centroids, world.candidates, world.context_noise,
                 world.feedback_noise)


if __name__ == "__main__":
    sys.exit(main())
