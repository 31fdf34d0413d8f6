"""A round's stage seconds in one process and in two ranks: the sampling, embedding and scoring split across them.

    python benchmarks/lab/ranks_split.py [--config configs/quick.yaml] [--strategy laser] [--rounds 6] [--out FILE.md]

Trains a config (default: the quick config, the reduced world, built into the cache if missing) three ways on the
same cores: one process on one thread, two ranks (`torchrun --nproc_per_node 2`, DDP over gloo) on one thread
each, and one process on two threads. Each rank samples and embeds its share of the round's prompts and runs its
share of the RM forward passes (`laser.training.distributed`); the tables show each stage's seconds per round
(mean over the rounds after the first), what each rank did (the round lines' `ranks`), the RM forward passes
(the same total, shared) and whether the runs routed and paired alike. Timing is a benchmark, not a test: run it
on an idle machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from laser.report import emit_markdown, read_run
from laser.report.runs import STAGES

ROOT = Path(__file__).resolve().parents[2]  # the repository: benchmarks/lab/ is two levels down


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(out_dir: Path, name: str, processes: int, threads: int, args) -> tuple[list[dict], float]:
    rounds = args.rounds
    args = ["-m", "laser.cli", "train", "--quiet", "--config", str(args.config), "--name", name,
            "--set", f"output_dir={out_dir}", "--set", f"rounds={rounds}", "--set", f"eval_every={rounds}",
            "--set", f"checkpoint_every={rounds}", "--set", f"engine.engine={args.engine}",
            "--set", f"strategy={args.strategy}"]
    if processes > 1:
        torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
        cmd = [torchrun, "--nproc_per_node", str(processes), "--master_port", str(_port()), *args]
    else:
        cmd = [sys.executable, *args]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode:
        raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
    return read_run(out_dir / name).rounds, wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "quick.yaml")
    ap.add_argument("--strategy", default="laser")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--engine", default="vllm", choices=["vllm", "hf"])
    ap.add_argument("--out", type=Path, help="also write the table to this markdown file")
    args = ap.parse_args()
    from laser.assets import build_assets
    from laser.config import load_config
    from laser.training.rundir import embedded_recipe

    recipe = embedded_recipe(load_config(str(args.config), []))
    if recipe is not None:
        build_assets(recipe, progress=False)  # once, before any timed run
    ways = [("one process, 1 thread", 1, 1), ("two ranks, 1 thread each", 2, 1), ("one process, 2 threads", 1, 2)]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, processes, threads in ways:
            results[label] = run(Path(tmp), f"p{processes}t{threads}", processes, threads, args)
    base = results[ways[0][0]][0]
    rel = args.config.resolve().relative_to(ROOT) if args.config.resolve().is_relative_to(ROOT) else args.config
    lines = [f"`{rel}`, strategy {args.strategy}, {args.rounds} rounds, engine {args.engine}; seconds per round, "
             f"mean over rounds 1..{args.rounds - 1} (round 0 warms up); command: "
             f"`python benchmarks/lab/ranks_split.py --config {rel} --strategy {args.strategy} --rounds {args.rounds} "
             f"--engine {args.engine}`", "",
             "| stage | " + " | ".join(label for label, _, _ in ways) + " |",
             "|---|" + "---|" * len(ways)]
    for stage in list(STAGES) + ["round"]:
        cells = []
        for label, _, _ in ways:
            rows = results[label][0][1:]
            secs = [sum(r["seconds"].values()) if stage == "round" else r["seconds"].get(stage, 0.0) for r in rows]
            cells.append(f"{np.mean(secs):.2f}")
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    lines.append("| RM forward passes, all rounds | " + " | ".join(
        str(sum(r["rm_forward"] for r in results[label][0])) for label, _, _ in ways) + " |")
    lines.append("| wall seconds of the command | " + " | ".join(f"{results[label][1]:.0f}" for label, _, _ in ways)
                 + " |")
    two = results[ways[1][0]][0]
    lines += ["", "What each rank of the two-rank run did, all rounds (the round lines' `ranks`):", "",
              "| | rank 0 | rank 1 | one process |", "|---|---|---|---|"]
    for key, label in (("prompts_sampled", "prompts sampled"), ("rm_forward", "RM forward passes")):
        per_rank = [sum(r["ranks"][k][key] for r in two) for k in (0, 1)]
        single = sum(r["prompts"] + r.get("probes", {}).get("sampled", 0) for r in base) if key == "prompts_sampled" \
            else sum(r["rm_forward"] for r in base)
        lines.append(f"| {label} | {per_rank[0]} | {per_rank[1]} | {single} |")

    def same(rows, upto=None) -> str:
        keys = ("candidates", "rm_forward", "picks", "pairs")
        return "yes" if all([r[k] for r in rows[:upto]] == [r[k] for r in base[:upto]] for k in keys) else "no"

    lines += ["", "Same samples, forward passes, picks and pairs as one process on one thread: " + "; ".join(
        f"{label}: round 0 {same(rows, 1)}, every round {same(rows)}" for label, (rows, _) in
        list(results.items())[1:]) + " (from the first DPO update on, DDP sums the gradient in another order, so "
        "a later sample or a near-tie of the router can differ)"]
    emit_markdown(lines, args.out)


if __name__ == "__main__":
    main()
