"""Matplotlib figures of runs: test accuracy per round (with a 95% band over seeds), RM picks per domain, stage
seconds, and the Pareto view of per-domain accuracy."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .runs import mean_ci


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a server
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, out: str | Path) -> Path:
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return Path(out)


def plot_accuracy(groups: Mapping[str, Sequence], out: str | Path) -> Path:
    """Mean test accuracy per evaluation round, one line per group of runs (mean over its seeds, 95% band)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for name, runs in groups.items():
        rounds = sorted(set.intersection(*({e["round"] for e in r.evals} for r in runs)))
        stats = [mean_ci([next(e["mean_accuracy"] for e in r.evals if e["round"] == k) for r in runs])
                 for k in rounds]
        mean = np.array([m for m, _ in stats]) * 100
        half = np.nan_to_num(np.array([h for _, h in stats]) * 100)
        ax.plot(rounds, mean, marker="o", label=f"{name} (n={len(runs)})")
        ax.fill_between(rounds, mean - half, mean + half, alpha=0.15)
    ax.set_xlabel("round")
    ax.set_ylabel("greedy test accuracy, mean over domains (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(plt, fig, out)


def plot_picks(rounds: Sequence[dict], out: str | Path, window: int = 5) -> Path:
    """Per domain, the share of instances assigned to each RM over the rounds (moving window of `window` rounds)."""
    plt = _pyplot()
    counts: dict[str, dict[str, np.ndarray]] = defaultdict(dict)
    n = len(rounds)
    for i, r in enumerate(rounds):
        for d, row in r.get("picks_by_domain", {}).items():
            for rm, c in row.items():
                counts[d].setdefault(rm, np.zeros(n))[i] = c
    domains = sorted(counts)
    fig, axes = plt.subplots(1, max(len(domains), 1), figsize=(3.2 * max(len(domains), 1), 3.0), sharey=True,
                             squeeze=False)
    rms = sorted({rm for d in domains for rm in counts[d]})
    colors = {rm: plt.cm.tab10(i % 10) for i, rm in enumerate(rms)}
    kernel = np.ones(max(1, min(window, n)))  # "same" convolution keeps n points only for a kernel <= n
    for ax, d in zip(axes[0], domains, strict=False):
        total = np.convolve(sum(counts[d].values()), kernel, mode="same")
        shares = [np.convolve(counts[d].get(rm, np.zeros(n)), kernel, mode="same") / np.maximum(total, 1)
                  for rm in rms]
        ax.stackplot(np.arange(n), *shares, colors=[colors[rm] for rm in rms], labels=rms)
        ax.set_title(d, fontsize=9)
        ax.set_xlabel("round")
        ax.set_ylim(0, 1)
    axes[0][0].set_ylabel("share of instances")
    axes[0][-1].legend(fontsize=7, loc="lower right")
    return _save(plt, fig, out)


def plot_stages(stage_seconds: Mapping[str, Mapping[str, float]], out: str | Path) -> Path:
    """Seconds per stage of a round (generate, score, train, ...), one stacked bar per strategy (mean over seeds)."""
    plt = _pyplot()
    names = list(stage_seconds)
    stages = list(dict.fromkeys(k for row in stage_seconds.values() for k in row))
    fig, ax = plt.subplots(figsize=(max(6.4, 0.6 * len(names) + 2), 4.0))
    bottom = np.zeros(len(names))
    for i, st in enumerate(stages):
        v = np.array([stage_seconds[n].get(st, 0.0) for n in names])
        ax.bar(names, v, bottom=bottom, label=st, color=plt.cm.tab10(i % 10))
        bottom += v
    ax.set_ylabel("seconds per run (all rounds)")
    ax.tick_params(axis="x", labelrotation=45, labelsize=7)
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, axis="y")
    return _save(plt, fig, out)


def pareto_front(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats on both coordinates (higher is better), sorted by the first."""
    front = [p for p in points if not any(q[0] >= p[0] and q[1] >= p[1] and q != p for q in points)]
    return sorted(set(front))


def plot_pareto(points: Mapping[str, Mapping[str, tuple[float, float]]], soups: Sequence[Mapping[str, float]],
                out: str | Path, axes: tuple[str, str] | None = None) -> Path:
    """Per-domain test accuracy as objectives. Left: two domains (`axes`, default the first two) with every
    point ({label: {domain: (mean, CI half-width)}}) and its CI, the soups as dots and their Pareto front as a
    line; right: every domain, one line per point (parallel coordinates)."""
    plt = _pyplot()
    domains = list(next(iter(points.values())) if points else soups[0])
    x, y = axes or (domains[0], domains[1 % len(domains)])
    fig, (left, right) = plt.subplots(1, 2, figsize=(11.0, 4.2))
    if soups:
        pts = [(s[x] * 100, s[y] * 100) for s in soups]
        left.scatter(*zip(*pts, strict=True), s=12, color="0.6", label="soups (grid of λ)" if len(pts) > 1 else "soup")
        front = pareto_front(pts)
        if len(front) > 1:
            left.plot(*zip(*front, strict=True), color="0.4", lw=1.2, label="soup front")
    for i, (label, cells) in enumerate(points.items()):
        color = plt.cm.tab10(i % 10)
        (mx, hx), (my, hy) = cells[x], cells[y]
        left.errorbar(mx * 100, my * 100, xerr=np.nan_to_num(hx) * 100, yerr=np.nan_to_num(hy) * 100, fmt="o",
                      color=color, capsize=3, label=label)
        right.errorbar(range(len(domains)), [cells[d][0] * 100 for d in domains],
                       yerr=[np.nan_to_num(cells[d][1]) * 100 for d in domains], color=color, marker="o",
                       capsize=3, label=label)
    left.set_xlabel(f"{x} test accuracy (%)")
    left.set_ylabel(f"{y} test accuracy (%)")
    right.set_xticks(range(len(domains)), domains)
    right.set_ylabel("test accuracy (%)")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    left.legend(fontsize=7)
    return _save(plt, fig, out)
