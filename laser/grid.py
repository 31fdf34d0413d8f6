"""Strategies x seeds: one `laser train` run each, reused when finished, resumed when interrupted.

`laser demo` and `laser bench` both train a grid of runs under one directory (`<out>/<strategy>-s<seed>/`).
A finished run is reused only if it was trained with the same config (name and output directory
aside) on the same embedded assets (the recipe digest in its `assets.json`); otherwise the grid stops
and says which setting differs, rather than mixing results. With
`jobs > 1` the runs go to that many worker processes, each pinned to its own share of the CPU cores
(torch and vLLM's CPU kernels otherwise both claim every core, and two runs fight over them).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import yaml

from laser.config import ConfigError, RunConfig
from laser.report import read_run
from laser.strategies import parse_strategy
from laser.training.rundir import check_assets, load_run_config


class GridError(ValueError):
    """A grid cannot be run as asked (a run directory holds a run with another config, a run failed)."""


def slug(strategy: str) -> str:
    return strategy.replace(":", "-")


def job_config(base: RunConfig, strategy: str, seed: int, out: str | Path) -> RunConfig:
    """The config of one (strategy, seed) run of the grid."""
    return base.model_copy(update={"strategy": strategy, "seed": seed, "name": f"{slug(strategy)}-s{seed}",
                                   "output_dir": str(out)})


def _comparable(config: RunConfig) -> dict:
    d = config.model_dump(mode="json")
    d.pop("name"), d.pop("output_dir")
    return d


def _diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        x, y = a.get(k), b.get(k)
        if isinstance(x, dict) and isinstance(y, dict):
            out += _diff(x, y, f"{prefix}{k}.")
        elif x != y:
            out.append(f"{prefix}{k}: {x!r} there, {y!r} asked")
    return out


def _unrecorded(recorded: dict, asked: dict, prefix: str = "") -> list[str]:
    """Dotted keys of `asked` that the recorded config does not hold at all."""
    out = []
    for k, v in asked.items():
        if k not in recorded:
            out.append(f"{prefix}{k}")
        elif isinstance(v, dict) and isinstance(recorded[k], dict) and k not in _FREE_FORM:
            out += _unrecorded(recorded[k], v, f"{prefix}{k}.")
    return out


_FREE_FORM = {"params", "ensemble_params", "reward_models", "max_new_tokens_by_domain"}  # user-keyed mappings


def run_state(config: RunConfig) -> str:
    """'finished', 'resume' (a checkpoint to continue from), or 'new'. Raises GridError when the directory
    holds a run of another config, or one trained on other embedded assets than this version builds."""
    run_dir = config.run_dir
    if not (run_dir / "config.yaml").exists():
        return "new"
    try:
        saved = load_run_config(run_dir)
    except ConfigError as e:
        raise GridError(f"{run_dir}: {e}") from None
    unrecorded = _unrecorded(yaml.safe_load((run_dir / "config.yaml").read_text()) or {}, _comparable(config))
    if unrecorded:  # written by a version without these settings: what it ran with is unknown, not the default
        raise GridError(f"{run_dir} holds a run whose config does not record {', '.join(unrecorded[:4])} (written "
                        "by an older version); move it away or choose another output directory")
    diff = _diff(_comparable(saved), _comparable(config))
    if diff:
        raise GridError(f"{run_dir} holds a run with another config ({'; '.join(diff[:4])}); move it away or "
                        "choose another output directory")
    state = None
    try:
        if read_run(run_dir).finished:  # its config's rounds, equal to `config.rounds` past the check above
            state = "finished"
    except (FileNotFoundError, ValueError):
        pass
    if state is None and (run_dir / "checkpoints" / "latest").exists():
        state = "resume"
    if state is not None:
        try:
            check_assets(config)  # results of another world are never reused or continued
        except ConfigError as e:
            raise GridError(str(e)) from None
        return state
    (run_dir / "metrics.jsonl").unlink(missing_ok=True)  # started but never checkpointed: start over
    return "new"


def _cores() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))


def _train_in_subprocess(config: RunConfig, state: str, cores: list[int]) -> None:
    run_dir = config.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    if state == "resume":
        cmd = [sys.executable, "-m", "laser.cli", "train", "--resume", str(run_dir), "--quiet"]
    else:
        spec = run_dir / "requested.yaml"
        spec.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
        cmd = [sys.executable, "-m", "laser.cli", "train", "--config", str(spec), "--quiet"]
    env = dict(os.environ, OMP_NUM_THREADS=str(len(cores)), MKL_NUM_THREADS=str(len(cores)),
               VLLM_CPU_OMP_THREADS_BIND=",".join(map(str, cores)))
    log = run_dir / "train.log"
    with open(log, "ab") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env,
                              preexec_fn=(lambda: os.sched_setaffinity(0, cores)) if hasattr(os, "sched_setaffinity")
                              else None)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-5:]
        raise GridError(f"{config.name} failed (exit {proc.returncode}); the end of {log}:\n  " + "\n  ".join(tail))


@dataclass(frozen=True)
class GridRuns:
    """What `run_grid` did: {strategy: [run dir per seed]} and the number of finished runs it reused."""

    runs: dict[str, list[Path]]
    reused: int

    def reuse_note(self) -> str:
        """How many runs were reused, for a report's wall-time line."""
        total = sum(len(dirs) for dirs in self.runs.values())
        return f"{self.reused} of {total} runs finished earlier and reused, their time not included"


def run_grid(base: RunConfig, strategies: Sequence[str], seeds: Sequence[int], out: str | Path, jobs: int = 1,
             progress: bool = True, say: Callable[[str], None] | None = None) -> GridRuns:
    """Train (or reuse) every (strategy, seed); returns the run directories and how many were reused."""
    from laser.training.run import train

    say = say or (lambda msg: print(msg, file=sys.stderr, flush=True))
    for s in strategies:
        parse_strategy(s)  # a typo fails here, not after the first hour of training
    if jobs < 1:
        raise GridError(f"jobs must be >= 1, got {jobs}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    configs = [job_config(base, s, seed, out) for s in strategies for seed in seeds]
    states = [run_state(c) for c in configs]  # every conflict is found before anything trains
    todo = [(i, c, st) for i, (c, st) in enumerate(zip(configs, states, strict=True)) if st != "finished"]
    for i, (c, st) in enumerate(zip(configs, states, strict=True), 1):
        if st == "finished":
            say(f"[{i}/{len(configs)}] {c.strategy}, seed {c.seed}: finished earlier, reused ({c.run_dir})")
    if jobs == 1:
        for i, c, st in todo:
            say(f"[{i + 1}/{len(configs)}] {c.strategy}, seed {c.seed}" + (" (resumed)" if st == "resume" else ""))
            train(load_run_config(c.run_dir) if st == "resume" else c, progress=progress, resume=st == "resume")
    elif todo:
        cores = _cores()
        slots = [cores[k::jobs] for k in range(min(jobs, len(cores)))]
        free = list(range(len(slots)))

        def work(item):
            i, c, st = item
            slot = free.pop()
            t0 = time.perf_counter()
            try:
                _train_in_subprocess(c, st, slots[slot])
            finally:
                free.append(slot)
            say(f"[{i + 1}/{len(configs)}] {c.strategy}, seed {c.seed}: done in {time.perf_counter() - t0:.0f} s "
                f"(cores {slots[slot]})")

        with ThreadPoolExecutor(len(slots)) as pool:
            list(pool.map(work, todo))
    runs: dict[str, list[Path]] = {}
    for c in configs:
        runs.setdefault(c.strategy, []).append(c.run_dir)
    return GridRuns(runs, reused=len(configs) - len(todo))
