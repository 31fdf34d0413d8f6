"""Wall time of strategies side by side: runs one after the other in ABBA order, stage seconds per run.

    python benchmarks/wall_time.py --strategies laser ensemble:mean --out /tmp/wall \\
        --set eval_every=10 --markdown benchmarks/results/<folder>/wall-time.md

Each strategy is trained `--repeats` times (default 2), the order alternating (A B B A ...), so that
whatever favours an early or a late run (a cold page cache, a first compilation, a machine settling)
falls on both. Nothing else should run on the machine meanwhile: the figures are seconds, not counts.
A run's time is its `elapsed_s` (rounds and evaluations, models already loaded); the stage columns sum
the rounds' `seconds`. Prints a markdown table (and writes it with `--markdown`) with the ratio of each
strategy's mean time to the last strategy's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

STAGES = ("embed", "generate", "feedback", "score", "pairs", "train", "sync")


def read(run: Path) -> dict:
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    rounds = [x for x in lines if x["type"] == "round"]
    evals = [x for x in lines if x["type"] == "eval"]
    stages = defaultdict(float)
    for r in rounds:
        for k, v in r["seconds"].items():
            stages[k] += v
    probes = [r["probes"] for r in rounds if r.get("probes")]
    return {"elapsed": evals[-1]["elapsed_s"], "rounds_s": sum(stages.values()), "stages": dict(stages),
            "accuracy": evals[-1]["mean_accuracy"], "forward": evals[-1]["rm_forward_total"],
            "probes": (sum(p["sampled"] for p in probes), sum(p["prompts"] for p in probes)) if probes else None}


def order(strategies: list[str], repeats: int) -> list[str]:
    """A B B A A B ...: each strategy as often first as last."""
    out = []
    for i in range(repeats):
        out += strategies if i % 2 == 0 else strategies[::-1]
    return out


def table(results: dict[str, list[dict]], strategies: list[str]) -> str:
    ref = np.mean([r["elapsed"] for r in results[strategies[-1]]])
    head = ["strategy", "runs", "wall s (mean)", "each run", f"vs {strategies[-1]}", "rounds s",
            *STAGES, "probes sampled", "RM forward passes", "final accuracy"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in strategies:
        rs = results[s]
        wall = np.mean([r["elapsed"] for r in rs])
        stage = [f"{np.mean([r['stages'].get(k, 0.0) for r in rs]):.1f}" for k in STAGES]
        probes = rs[0]["probes"]
        rows.append("| " + " | ".join([
            s, str(len(rs)), f"{wall:.1f}", ", ".join(f"{r['elapsed']:.1f}" for r in rs), f"{wall / ref:.2f}x",
            f"{np.mean([r['rounds_s'] for r in rs]):.1f}", *stage,
            f"{probes[0]} of {probes[1]}" if probes else "", f"{rs[0]['forward']:,}",
            ", ".join(f"{100 * r['accuracy']:.1f}" for r in rs)]) + " |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--strategies", nargs="+", default=["laser", "ensemble:mean"])
    ap.add_argument("--repeats", type=int, default=2, help="runs per strategy (default 2: ABBA)")
    ap.add_argument("--config", default=None, help="run config (default: the built-in defaults)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="overrides for every run")
    ap.add_argument("--out", type=Path, required=True, help="where the runs go")
    ap.add_argument("--markdown", type=Path, default=None, help="also write the table here")
    args = ap.parse_args(argv)
    results: dict[str, list[dict]] = defaultdict(list)
    for i, s in enumerate(order(args.strategies, args.repeats)):
        name = f"{i:02d}-{s.replace(':', '-')}"
        cmd = [sys.executable, "-m", "laser.cli", "train", "--quiet", "--strategy", s, "--name", name,
               "--set", f"output_dir={args.out}", *(x for kv in args.set for x in ("--set", kv))]
        if args.config:
            cmd += ["--config", args.config]
        t0 = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, env=os.environ)
        if done.returncode:
            print(done.stdout[-2000:], done.stderr[-4000:], file=sys.stderr)
            return done.returncode
        results[s].append(read(args.out / name))
        print(f"{name}: {results[s][-1]['elapsed']:.1f} s in rounds and evaluations "
              f"({time.perf_counter() - t0:.0f} s with start-up)", flush=True)
    text = table(results, args.strategies)
    print(text)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
