"""What the router was told and what it did, per domain: the mean bandit reward of each (domain, RM) over a
run's rounds (`feedback_by_domain` in metrics.jsonl) and the RM picks per domain in the second half.

    python benchmarks/feedback_by_domain.py runs/demo/laser-s0 runs/demo/laser-s1 runs/demo/laser-s2

Rewards are the raw validation gains (before the router's quantile normalization), averaged over the
rounds where the pair occurred, with their standard error over those rounds.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np


def summarize(run_dirs: list[Path]) -> str:
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
    lines = ["| domain | RM | rounds | mean reward (x1e-3) | s.e. | 2nd-half picks |", "|---|---|---|---|---|---|"]
    for (domain, rm), v in sorted(gains.items()):
        a = np.array(v) * 1e3
        total = sum(picks[domain].values()) or 1
        lines.append(f"| {domain} | {rm} | {len(a)} | {a.mean():+.2f} | {a.std() / np.sqrt(len(a)):.2f} | "
                     f"{picks[domain][rm] / total:.0%} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, help="run directories (runs/<name>)")
    print(summarize(ap.parse_args().runs))


if __name__ == "__main__":
    main()
