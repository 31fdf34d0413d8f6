"""Metrics files -> tables and plots: a run's `report.md`, and strategies compared over seeds."""

from .machine import describe_machine
from .plots import plot_accuracy, plot_pareto, plot_picks, plot_stages
from .runs import (
                   RunSummary,
                   StrategyResult,
                   emit_markdown,
                   format_comparison,
                   format_run,
                   grid_title,
                   mean_ci,
                   read_run,
                   rounds_to_reach,
                   write_run_report,
)

__all__ = ["RunSummary", "StrategyResult", "describe_machine", "emit_markdown", "format_comparison", "format_run",
           "grid_title", "mean_ci", "plot_accuracy", "plot_pareto", "plot_picks", "plot_stages", "read_run",
           "rounds_to_reach", "write_run_report"]
