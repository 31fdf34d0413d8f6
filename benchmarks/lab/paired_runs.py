"""Two sets of runs that differ in one setting, compared seed by seed: what the setting costs or gains.

    python benchmarks/lab/paired_runs.py --a runs/bench-world-v2-kernel/laser-s{0..4} \\
        --b runs/bench-world-v2-noise/laser-s{0..4} --label-a "no noise" --label-b "score_noise 0.3"

Runs are paired by their config's seed (a seed present in only one set is an error). Prints each pair's
final mean test accuracy and oracle match in the second half, and the mean difference (b - a) with its
paired 95% Student-t confidence interval, per domain and overall; the RM forward passes of each set.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import yaml

from laser.report import mean_ci, read_run


def by_seed(dirs: list[Path]) -> dict[int, Path]:
    out: dict[int, Path] = {}
    for d in dirs:
        seed = yaml.safe_load((d / "config.yaml").read_text())["seed"]  # runs of older versions' keys too
        if seed in out:
            raise SystemExit(f"seed {seed} twice: {out[seed]} and {d}")
        out[seed] = d
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--a", nargs="+", type=Path, required=True, help="the reference runs")
    ap.add_argument("--b", nargs="+", type=Path, required=True, help="the runs with the setting changed")
    ap.add_argument("--label-a", default="a")
    ap.add_argument("--label-b", default="b")
    args = ap.parse_args()
    a, b = by_seed(args.a), by_seed(args.b)
    if set(a) != set(b):
        raise SystemExit(f"the two sets have different seeds: {sorted(a)} vs {sorted(b)}")
    seeds = sorted(a)
    ra, rb = {s: read_run(a[s]) for s in seeds}, {s: read_run(b[s]) for s in seeds}
    for r in [*ra.values(), *rb.values()]:
        if not r.finished:  # its "final" accuracy would be an earlier round's
            raise SystemExit(f"{r.run_dir} has not finished: last evaluation after round {r.final.get('round')} "
                             f"of {r.planned}")
    domains = sorted(ra[seeds[0]].final["accuracy"])
    print(f"| seed | {args.label_a} | {args.label_b} | difference | oracle match, 2nd half ({args.label_a} / "
          f"{args.label_b}) |\n|---|---|---|---|---|")
    for s in seeds:
        x, y = ra[s].final["mean_accuracy"] * 100, rb[s].final["mean_accuracy"] * 100
        ma, mb = ra[s].oracle_match(), rb[s].oracle_match()
        match = "-" if ma is None or mb is None else f"{ma:.0%} / {mb:.0%}"
        print(f"| {s} | {x:.1f} | {y:.1f} | {y - x:+.1f} | {match} |")
    print(f"\n| | {args.label_a} | {args.label_b} | {args.label_b} - {args.label_a} (paired 95% CI) |")
    print("|---|---|---|---|")
    for name in ["mean", *domains]:
        def acc(r, name=name):
            return (r.final["mean_accuracy"] if name == "mean" else r.final["accuracy"][name]) * 100
        xs, ys = np.array([acc(ra[s]) for s in seeds]), np.array([acc(rb[s]) for s in seeds])
        d, h = mean_ci(ys - xs)
        print(f"| {name} | {xs.mean():.1f} | {ys.mean():.1f} | {d:+.1f} ± {h:.1f} |")
    fa = np.mean([ra[s].final.get("rm_forward_total", np.nan) for s in seeds])
    fb = np.mean([rb[s].final.get("rm_forward_total", np.nan) for s in seeds])
    print(f"\nRM forward passes per run: {fa:,.0f} ({args.label_a}), {fb:,.0f} ({args.label_b}); {len(seeds)} seeds")


if __name__ == "__main__":
    main()
