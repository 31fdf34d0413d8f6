"""What the router was told and what it did, per domain: the mean bandit reward of each (domain, RM) over a
run's rounds (`feedback_by_domain` in metrics.jsonl) and the RM picks per domain in the second half; and
how often that reward, at its measured noise, could name the oracle's RM at all (the ceiling).

    python benchmarks/lab/feedback_by_domain.py runs/demo/laser-s0 runs/demo/laser-s1 runs/demo/laser-s2

Rewards are the raw rewards (before any normalization by the router: rerank gains in [-1, 1], or the
update-based validation gains, shown x1e-3), averaged over the rounds where the pair occurred, with
their standard error over those rounds.

The ceiling: a router that knew every instance's domain, and had `n` rewards of every RM in it (drawn
with replacement from the per-round rewards measured in these runs), picks the RM with the best mean.
The share of draws in which that is the oracle's RM bounds what any router can reach from this reward
after that much exploration: it needs no context and no exploration strategy to be right, only the
reward to rank the oracle's RM first. A LASeR run of R rounds sees each (domain, RM) in at most R rounds.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter, defaultdict
from collections.abc import Mapping
from pathlib import Path

import numpy as np


def load(run_dirs: list[Path]) -> tuple[dict[tuple[str, str], list[float]], dict[str, Counter]]:
    """({(domain, rm): per-round mean rewards}, {domain: second-half picks per rm}) over the runs."""
    gains: dict[tuple[str, str], list[float]] = defaultdict(list)
    picks: dict[str, Counter] = defaultdict(Counter)
    for run in run_dirs:
        rounds = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        rounds = [r for r in rounds if r["type"] == "round"]
        half = (max(r["round"] for r in rounds) + 1) // 2
        for r in rounds:
            for domain, row in r["feedback_by_domain"].items():
                for rm, v in row.items():
                    gains[(domain, rm)].append(v)
            if r["round"] >= half:
                for domain, row in r["picks_by_domain"].items():
                    picks[domain].update(row)
    return gains, picks


def summarize(run_dirs: list[Path], scale: float = 1e3) -> str:
    gains, picks = load(run_dirs)
    unit = "" if scale == 1 else f" (x{1 / scale:.0e})"
    lines = [f"| domain | RM | rounds | mean reward{unit} | s.e. | 2nd-half picks |", "|---|---|---|---|---|---|"]
    for (domain, rm), v in sorted(gains.items()):
        a = np.array(v) * scale
        total = sum(picks[domain].values()) or 1
        lines.append(f"| {domain} | {rm} | {len(a)} | {a.mean():+.2f} | {a.std() / np.sqrt(len(a)):.2f} | "
                     f"{picks[domain][rm] / total:.0%} |")
    return "\n".join(lines)


def ceiling(gains: Mapping[tuple[str, str], list[float]], oracle: Mapping[str, str], n: int,
            draws: int = 4000, seed: int = 0) -> dict[str, float]:
    """{domain: share of draws in which the best mean of `n` resampled rewards per RM is the oracle's RM}.

    Only the RMs rewarded in a domain compete there; a domain whose oracle's RM was never rewarded scores 0.
    """
    rng = np.random.default_rng(seed)
    out = {}
    for domain, best in sorted(oracle.items()):
        rms = sorted(rm for d, rm in gains if d == domain)
        if best not in rms:
            out[domain] = 0.0
            continue
        pools = [np.asarray(gains[(domain, rm)]) for rm in rms]
        means = np.stack([rng.choice(p, size=(draws, n)).mean(axis=1) for p in pools], axis=1)
        out[domain] = float(np.mean(means.argmax(axis=1) == rms.index(best)))
    return out


def ceiling_table(gains: Mapping[tuple[str, str], list[float]], oracle: Mapping[str, str],
                  ns: tuple[int, ...] = (5, 10, 20, 40, 80)) -> str:
    domains = sorted(oracle)
    lines = ["| rewards per (domain, RM) | " + " | ".join(domains) + " | mean |",
             "|---|" + "---|" * (len(domains) + 1)]
    for n in ns:
        c = ceiling(gains, oracle, n)
        cells = " | ".join(f"{c[d]:.0%}" for d in domains)
        lines.append(f"| {n} | {cells} | **{np.mean(list(c.values())):.0%}** |")
    return "\n".join(lines)


def run_oracle(run_dir: Path) -> dict[str, str]:
    """{domain: oracle's RM} of a run: the best RM per domain in its embedded assets' accuracy table."""
    from laser.parts import resolve_models
    from laser.strategies import OracleStrategy
    from laser.training.rundir import load_run_config

    _, rms, table, _ = resolve_models(load_run_config(run_dir))
    if table is None:
        raise SystemExit(f"{run_dir} names its own reward models: give the oracle with --oracle DOMAIN=RM ...")
    return OracleStrategy.from_accuracy(list(rms), table).best_by_domain


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, help="run directories (runs/<name>)")
    ap.add_argument("--oracle", nargs="*", metavar="DOMAIN=RM",
                    help="the oracle's RM per domain (default: from the first run's embedded assets)")
    args = ap.parse_args()
    from laser.training.rundir import load_run_config

    rerank = load_run_config(args.runs[0]).round.feedback == "rerank_gain"
    print(summarize(args.runs, scale=1.0 if rerank else 1e3))
    if args.oracle:
        bad = [x for x in args.oracle if "=" not in x]
        if bad:
            raise SystemExit(f"--oracle takes DOMAIN=RM pairs, got {bad}")
        oracle = dict(x.split("=", 1) for x in args.oracle)
    else:
        oracle = run_oracle(args.runs[0])
    print("\nCeiling: how often the best mean of n resampled rewards per RM is the oracle's RM "
          f"({', '.join(f'{d}: {rm}' for d, rm in sorted(oracle.items()))})\n")
    print(ceiling_table(load(args.runs)[0], oracle))


if __name__ == "__main__":
    main()
