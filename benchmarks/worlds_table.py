"""One table over every world: LASeR beside the oracle, the best single RM, the baselines that read the same
validation labels, the ensembles and random, from committed `laser bench` folders.

    python benchmarks/worlds_table.py                      # the folders named in WORLDS below
    python benchmarks/worlds_table.py --out benchmarks/results/2026-12-07-worlds/README.md

Each cell: final greedy test accuracy in %, mean ± 95% CI (Student t) over the bench's seeds, then LASeR minus
that strategy paired by seed (its CI); "-" where the world's bench did not run the strategy. The last rows: LASeR's
RM forward passes as a share of each ensemble's, and the validation labels LASeR and the label-reading baselines
read per run. Below the table, in words: where routing pays, where it only matches, where it loses.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from laser.report.runs import mean_ci  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
# LASeR at today's defaults, benched after the world benches below: since `round.retest_draws: 1` (a re-tested
# probe's pick scores one right and one wrong sample) LASeR's runs are these; the other strategies' runs are the same
# at either setting (no other strategy re-tests a probe), so they stay the world bench's.
SUFFIXES = {"default": "default", "one template": "within-source", "generalist": "generalist",
            "noisy-judges": "noisy-judges", "alternative": "alt"}  # a world's folder: <prefix>-<suffix>
LASER_PREFIX = "2026-12-07-retest-draws"
# The tables below the main one: LASeR at another setting against the world bench's own LASeR runs (every sample of
# every probe scored), paired by seed: (the folders' prefix, the setting, what it is). The first: today's defaults;
# the second, `round.rerank_draws: 1` as well (one right and one wrong sample of every spot-checked probe; not the
# default; re-tests scored in full).
CHANGES = [(LASER_PREFIX, "`retest_draws: 1`", "today's default"),
           ("2026-12-07-draws", "`rerank_draws: 1`", "not the default")]
# world label: (bench folder, best single RM by the build's accuracy table, what the world is)
WORLDS = {
    "default": ("2026-12-06-default-same-labels", "single:cipher",
                "four letter domains, one specialist judge each (misleading elsewhere), a length hacker"),
    "one template": ("2026-12-07-within-source-world", "single:doubler",
                     "the default world's four operations in one prompt template, told apart by one verb "
                     "(`configs/worlds/within-source.yaml`), under one data-source label, so `static:by_domain` "
                     "cannot route and the contexts separate the sub-tasks less (76.6% nearest-centroid, 94.4% on "
                     "the default world)"),
    "generalist": ("2026-12-06-generalist-world", "single:generalist",
                   "the default world plus a judge trained on every domain"),
    "noisy-judges": ("2026-12-07-noisy-judges-world", None,
                     "specialist judges steered to 72-80% at home and left near chance elsewhere"),
    "alternative": ("2026-12-07-alt-world", "single:letters",
                    "four other domains (two on letters, two on digits), one judge covering both letter domains"),
}
COLUMNS = ("laser", "oracle", "best single", "single:auto", "static:by_domain", "ensemble:val_weighted",
           "ensemble:mean", "random")


def finals(runs: list[dict]) -> dict[int, float]:
    """{seed: final mean test accuracy}."""
    return {r["seed"]: r["evals"][-1]["mean_accuracy"] for r in runs}


def load(world: str) -> dict | None:
    folder, best, _ = WORLDS[world]
    path = RESULTS / folder / "results.json"
    if not path.is_file():
        return None
    raw = json.loads(path.read_text())
    strategies = dict(raw["strategies"])
    others = {}  # the LASeR runs of each table of CHANGES that has this world
    for prefix, label, _ in CHANGES:
        path = RESULTS / f"{prefix}-{SUFFIXES[world]}" / "results.json"
        if path.is_file():
            others[label] = json.loads(path.read_text())["strategies"]["laser"]
    own = strategies.get("laser")
    if others.get(CHANGES[0][1]) is not None:
        strategies["laser"] = others[CHANGES[0][1]]  # today's defaults
    if best is None:  # the single RM whose runs end highest, if the bench ran any
        singles = [n for n in strategies if n.startswith("single:") and n != "single:auto"]
        best = max(singles, key=lambda n: np.mean(list(finals(strategies[n]).values()))) if singles else None
    out = {"raw": raw, "best": best, "cells": {}, "reads": {}, "forward": {}, "own": own, "others": others}
    for col in COLUMNS:
        name = best if col == "best single" else col
        if name not in strategies:
            continue
        acc = finals(strategies[name])
        out["cells"][col] = (acc, name)
        out["forward"][col] = float(np.mean([r["evals"][-1]["rm_forward_total"] for r in strategies[name]]))
        if "validation_labels_read" in strategies[name][0]:
            out["reads"][col] = float(np.mean([r["validation_labels_read"] for r in strategies[name]]))
    return out


def cell(data: dict, col: str) -> str:
    if col not in data["cells"]:
        return "-"
    acc, _ = data["cells"][col]
    m, h = mean_ci(list(acc.values()))
    text = f"{m * 100:.1f} ± {h * 100:.1f}" if np.isfinite(h) else f"{m * 100:.1f}"
    if col != "laser" and "laser" in data["cells"]:
        ours = data["cells"]["laser"][0]
        seeds = sorted(set(ours) & set(acc))
        d, dh = mean_ci([ours[s] - acc[s] for s in seeds])
        text += f" ({d * 100:+.1f} ± {dh * 100:.1f})"
    return text


def verdict(world: str, data: dict) -> str:
    """Where routing pays, matches or loses on this world, against the best of the other strategies."""
    ours = data["cells"]["laser"][0]
    lines = []
    for col in COLUMNS[2:]:
        if col not in data["cells"]:
            continue
        acc, name = data["cells"][col]
        seeds = sorted(set(ours) & set(acc))
        d, h = mean_ci([ours[s] - acc[s] for s in seeds])
        if d - h > 0:
            word = "LASeR wins"
        elif d + h < 0:
            word = "LASeR loses"
        else:
            word = "no difference shown"
        lines.append(f"{name} {d * 100:+.1f} ± {h * 100:.1f} ({word})")
    return f"- **{world}**: LASeR minus " + "; ".join(lines) + "."


def changes(loaded: dict[str, dict], label: str) -> list[str]:
    """LASeR with `label`'s setting against the world bench's own LASeR runs (every sample scored), paired by seed:
    accuracy, RM passes (and as a share of ensemble:mean's), validation labels read."""
    rows = [f"| world | LASeR, every sample | with {label} | paired difference | RM passes | / ensemble:mean's "
            "| validation labels read |", "|---|---|---|---|---|---|---|"]
    for w, d in loaded.items():
        runs = d["others"].get(label)
        if runs is None or d["own"] is None:
            continue
        before, after = finals(d["own"]), finals(runs)
        seeds = sorted(set(before) & set(after))
        (b, bh), (a, ah) = mean_ci([before[s] for s in seeds]), mean_ci([after[s] for s in seeds])
        diff, dh = mean_ci([after[s] - before[s] for s in seeds])
        old, passes = (float(np.mean([r["evals"][-1]["rm_forward_total"] for r in x])) for x in (d["own"], runs))
        ens = d["forward"].get("ensemble:mean", float("nan"))
        labels = [float(np.mean([r.get("validation_labels_read", float("nan")) for r in x])) for x in (d["own"], runs)]
        rows.append(f"| {w} | {b * 100:.1f} ± {bh * 100:.1f} | {a * 100:.1f} ± {ah * 100:.1f} | "
                    f"{diff * 100:+.1f} ± {dh * 100:.1f} | {old:,.0f} -> {passes:,.0f} | "
                    f"{old / ens:.4f}x -> {passes / ens:.4f}x | {labels[0]:,.0f} -> {labels[1]:,.0f} |")
    return rows if len(rows) > 2 else []


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=None, help="also write the table here (markdown)")
    args = ap.parse_args()
    loaded = {w: d for w in WORLDS if (d := load(w)) is not None}
    missing = [WORLDS[w][0] for w in WORLDS if w not in loaded]
    head = "| strategy | " + " | ".join(loaded) + " |"
    rows = [head, "|---|" + "---|" * len(loaded)]
    for col in COLUMNS:
        label = col if col != "best single" else "best single RM"
        rows.append(f"| {label} | " + " | ".join(
            cell(d, col) + (f" ({d['best'].split(':', 1)[1]})" if col == "best single" and d["best"] else "")
            for d in loaded.values()) + " |")
    rows.append("| LASeR's RM passes / ensemble:mean's | " + " | ".join(
        f"{d['forward']['laser'] / d['forward']['ensemble:mean']:.3f}x" if "ensemble:mean" in d["forward"] else "-"
        for d in loaded.values()) + " |")
    rows.append("| validation labels read per run: LASeR / single:auto | " + " | ".join(
        f"{d['reads'].get('laser', float('nan')):,.0f} / {d['reads'].get('single:auto', float('nan')):,.0f}"
        if d["reads"] else "-" for d in loaded.values()) + " |")
    seeds = {w: len(d["cells"]["laser"][0]) for w, d in loaded.items()}
    stale = [w for w, d in loaded.items() if CHANGES[0][1] not in d["others"]]
    lines = ["# Every world, one table", "",
             "Final greedy test accuracy in %, mean ± 95% CI over seeds; in parentheses LASeR minus that strategy, "
             "paired by seed. Seeds per world: " + ", ".join(f"{w} {n}" for w, n in seeds.items()) + ". Worlds:", "",
             *[f"- {w}: {WORLDS[w][2]} (`benchmarks/results/{WORLDS[w][0]}/`)" for w in loaded], "",
             f"LASeR's row: its runs at today's defaults (`benchmarks/results/{LASER_PREFIX}-<world>/`; the world "
             "bench's own `report.md` checks its earlier runs); every other row: the world bench's runs.",
             *([f"Not re-run at today's defaults, LASeR's row from the world bench: {', '.join(stale)}."]
               if stale else []), "", *rows, "",
             "Where routing pays and where it does not (a difference counts where its 95% CI excludes 0):", "",
             *[verdict(w, d) for w, d in loaded.items()]]
    for prefix, label, what in CHANGES:
        if table := changes(loaded, label):
            lines += ["", f"LASeR with {label} ({what}; `benchmarks/results/{prefix}-<world>/`) against the world "
                      "bench's own LASeR runs (every sample of every probe scored), paired by seed:", "", *table]
    if missing:
        lines += ["", "Not found (not benched yet): " + ", ".join(missing)]
    lines += ["", "Command: `python benchmarks/worlds_table.py`"]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
