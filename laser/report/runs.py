"""Metrics files -> summaries and markdown tables: one run's report, and strategies compared over seeds."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

STAGES = ("generate", "embed", "score", "pairs", "train", "feedback", "sync")


@dataclass
class RunSummary:
    """What one run's metrics file says: its evaluations, its rounds, and the numbers a comparison needs."""

    run_dir: Path
    rounds: list[dict]
    evals: list[dict]
    strategy: str = ""
    seed: int = 0
    planned: int | None = None  # the rounds its config asks for

    @property
    def finished(self) -> bool:
        """Whether its last evaluation is the one after its last planned round (unknown plan: True)."""
        return self.planned is None or self.final.get("round", 0) >= self.planned

    @property
    def final(self) -> dict:
        return self.evals[-1]

    @property
    def initial(self) -> dict:
        return self.evals[0]

    def oracle_match(self, second_half: bool = True) -> float | None:
        """Mean share of RM assignments that went to the oracle's RM (over the second half of the rounds)."""
        vals = [r["oracle_match"] for r in self.rounds if r.get("oracle_match") is not None]
        if not vals:
            return None
        return float(np.mean(vals[len(vals) // 2:] if second_half else vals))

    def validation_reads(self) -> tuple[int, int]:
        """(validation labels read, RM forward passes on them): the probes sampled and checked against their gold
        answers over every round, and what scoring them cost."""
        probes = [r["probes"] for r in self.rounds if r.get("probes")]
        return sum(p.get("sampled", 0) for p in probes), sum(p.get("rm_forward", 0) for p in probes)

    def stage_seconds(self) -> dict[str, float]:
        """Total seconds per stage over every round."""
        out: dict[str, float] = defaultdict(float)
        for r in self.rounds:
            for k, v in r.get("seconds", {}).items():
                out[k] += v
        return {k: out[k] for k in STAGES if k in out}

    @property
    def wall_s(self) -> float:
        """Seconds in rounds and evaluations (what the run cost, startup excluded)."""
        return float(self.final.get("elapsed_s") or sum(self.stage_seconds().values()))


def read_run(run_dir: str | Path) -> RunSummary:
    """The metrics of `run_dir` (metrics.jsonl, and the strategy and seed from config.yaml if present)."""
    run_dir = Path(run_dir)
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} has no metrics.jsonl: not a run directory, or the run has not started")
    lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    summary = RunSummary(run_dir, [x for x in lines if x["type"] == "round"], [x for x in lines if x["type"] == "eval"])
    if not summary.evals:
        raise ValueError(f"{path} holds no evaluation yet")
    config = run_dir / "config.yaml"
    if config.is_file():
        c = yaml.safe_load(config.read_text())
        summary.strategy, summary.seed = c.get("strategy", ""), int(c.get("seed", 0))
        summary.planned = c.get("rounds")
    return summary


def emit_markdown(lines: Sequence[str], out: str | Path | None = None) -> str:
    """A benchmark's markdown report: printed, and written to `out` when given; returns the text."""
    text = "\n".join(lines)
    print(text)
    if out:
        Path(out).write_text(text + "\n")
    return text


def grid_title(n_strategies: int, n_seeds: int) -> str:
    """"1 strategy x 3 seeds", in the singular or plural as the counts need."""
    return (f"{n_strategies} strateg{'y' if n_strategies == 1 else 'ies'} x "
            f"{n_seeds} seed{'' if n_seeds == 1 else 's'}")


def mean_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """(mean, half-width of the Student-t confidence interval); the half-width is nan for fewer than 2 values."""
    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return float(x.mean()) if len(x) else float("nan"), float("nan")
    from scipy import stats  # scipy.stats takes a second to import: only a report with intervals needs it

    half = stats.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
    return float(x.mean()), float(half)


def _pm(mean: float, half: float, scale: float = 100.0, digits: int = 1) -> str:
    if np.isnan(half):
        return f"{mean * scale:.{digits}f}"
    return f"{mean * scale:.{digits}f} ± {half * scale:.{digits}f}"


@dataclass
class StrategyResult:
    """One strategy over several seeds."""

    strategy: str
    runs: list[RunSummary] = field(default_factory=list)

    def accuracy(self, domain: str | None = None) -> list[float]:
        return [r.final["mean_accuracy"] if domain is None else r.final["accuracy"][domain] for r in self.runs]


def format_run(summary: RunSummary) -> str:
    """One run as markdown: accuracy per evaluation, RM picks per domain, seconds per stage."""
    domains = list(summary.final["accuracy"])
    lines = [f"# Run {summary.run_dir.name}: strategy `{summary.strategy}`, seed {summary.seed}", "",
             "Test accuracy (%) per evaluation (the run's `eval` settings; 'cut off': answers that reached the "
             "length limit):", "",
             "| round | " + " | ".join(domains) + " | mean | RM forward passes | cut off |",
             "|---|" + "---|" * (len(domains) + 3)]
    for ev in summary.evals:
        cut = ev.get("truncated")  # runs of earlier versions did not count them
        lines.append(f"| {ev['round']} | " + " | ".join(f"{ev['accuracy'][d] * 100:.1f}" for d in domains)
                     + f" | {ev['mean_accuracy'] * 100:.1f} | {ev['rm_forward_total']} | "
                     + ("" if cut is None else str(sum(cut.values()))) + " |")
    picks = summary.final.get("picks", {})
    rms = sorted({rm for row in picks.values() for rm in row})
    if rms:
        lines += ["", "Instances assigned to each reward model, per domain (the whole run):", "",
                  "| domain | " + " | ".join(rms) + " |", "|---|" + "---|" * len(rms)]
        for d, row in picks.items():
            lines.append(f"| {d} | " + " | ".join(str(row.get(rm, 0)) for rm in rms) + " |")
    match = summary.oracle_match()
    if match is not None:
        lines += ["", f"Share of assignments that match the oracle's RM, second half of the rounds: {match:.0%}"]
    stages = summary.stage_seconds()
    if stages:
        lines += ["", "Seconds per stage (all rounds): "
                  + ", ".join(f"{k} {v:.1f}" for k, v in stages.items()) + f"; total {summary.wall_s:.1f} s"]
    lines += ["", "![accuracy per round](accuracy.png)", "", "![RM picks per domain](picks.png)"]
    return "\n".join(lines)


def write_run_report(run_dir: str | Path) -> Path:
    """`report.md`, `accuracy.png` and `picks.png` in `run_dir`, from its metrics; returns the report's path."""
    from .plots import plot_accuracy, plot_picks

    summary = read_run(run_dir)
    plot_accuracy({summary.strategy or summary.run_dir.name: [summary]}, summary.run_dir / "accuracy.png")
    plot_picks(summary.rounds, summary.run_dir / "picks.png")
    out = summary.run_dir / "report.md"
    tmp = out.with_suffix(".md.tmp")
    tmp.write_text(format_run(summary) + "\n")
    tmp.replace(out)
    return out


def rounds_to_reach(res: StrategyResult, target: float) -> int | None:
    """The first evaluated round at which the strategy's mean test accuracy over seeds reaches `target`."""
    by_round: dict[int, list[float]] = defaultdict(list)
    for r in res.runs:
        for ev in r.evals:
            by_round[ev["round"]].append(ev["mean_accuracy"])
    full = len(res.runs)
    hits = (rd for rd in sorted(by_round) if len(by_round[rd]) == full and np.mean(by_round[rd]) >= target - 1e-12)
    return next(hits, None)


def format_comparison(results: Mapping[str, StrategyResult], reference: str | None = None,
                      reach: str | None = None) -> str:
    """Strategies side by side: test accuracy per domain and mean (mean ± 95% CI over seeds, in %), the paired
    difference to `reference`, the share of oracle picks, RM forward passes and wall time; with `reach`, the
    rounds each strategy needed to reach that strategy's final mean accuracy."""
    first = next(iter(results.values())).runs[0]
    domains = list(first.final["accuracy"])
    target = float(np.mean(results[reach].accuracy())) if reach in results else None
    head = ("| strategy | " + " | ".join(domains) + " | mean | vs " + (reference or "-")
            + " | oracle picks (2nd half) | RM forward passes | validation labels read (their RM passes) | wall s |"
            + (f" rounds to reach {reach} ({target * 100:.1f}) |" if target is not None else ""))
    lines = [head, "|---|" + "---|" * (len(domains) + 6 + (target is not None))]
    sft = first.initial  # every run starts from the same policy and evaluates it greedily at round 0
    lines.append("| SFT policy (round 0) | " + " | ".join(f"{sft['accuracy'][d] * 100:.1f}" for d in domains)
                 + f" | {sft['mean_accuracy'] * 100:.1f} | | | 0 | | |" + (" |" if target is not None else ""))
    ref = results.get(reference) if reference else None
    for name, res in results.items():
        cells = [_pm(*mean_ci(res.accuracy(d))) for d in domains]
        diff = ""
        if ref is not None and name != reference:
            a = {r.seed: r.final["mean_accuracy"] for r in res.runs}
            b = {r.seed: r.final["mean_accuracy"] for r in ref.runs}
            common = sorted(set(a) & set(b))
            diff = _pm(*mean_ci([a[s] - b[s] for s in common])) if common else ""
        match = [m for r in res.runs if (m := r.oracle_match()) is not None]
        forward = np.mean([r.final["rm_forward_total"] for r in res.runs])
        wall = np.mean([r.wall_s for r in res.runs])
        labels, passes = np.mean([r.validation_reads() for r in res.runs], axis=0)
        # The oracle reads no validation label in its runs: its table was measured on the test split by the build.
        reads = "test split (build)" if name == "oracle" else f"{labels:,.0f} ({passes:,.0f})"
        row = (f"| {name} | " + " | ".join(cells) + f" | **{_pm(*mean_ci(res.accuracy()))}** | {diff} | "
               + (f"{np.mean(match):.0%}" if match else "") + f" | {forward:,.0f} | {reads} | {wall:.0f} |")
        if target is not None:
            rd = rounds_to_reach(res, target)
            last = max(r.final["round"] for r in res.runs)
            row += f" {rd if rd is not None else f'not in {last}'} |"
        lines.append(row)
    return "\n".join(lines)
