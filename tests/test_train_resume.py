"""A run killed with SIGKILL at a random point and resumed ends with the same metrics as an uninterrupted run."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TIMING = {"seconds", "sync_s", "elapsed_s"}


def _launch(out: Path, name: str, env: dict, resume: bool = False) -> subprocess.Popen:
    if resume:
        args = ["train", "--resume", str(out / name), "--quiet"]
    else:
        args = ["train", "--config", str(ROOT / "configs" / "quick.yaml"), "--name", name, "--quiet",
                "--set", f"output_dir={out}", "--set", "rounds=6", "--set", "eval_every=3",
                "--set", "checkpoint_every=2", "--set", "round.rounds_per_iteration=3"]
    return subprocess.Popen([sys.executable, "-m", "laser.cli", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _metrics(path: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(x).items() if k not in TIMING} for x in path.read_text().splitlines()]


def test_sigkill_then_resume_matches_an_uninterrupted_run(quick_world, tmp_path):
    assets, _ = quick_world
    env = dict(os.environ, LASER_ASSETS_DIR=str(assets.root.parent))
    full = _launch(tmp_path, "full", env)
    out, _ = full.communicate(timeout=600)
    assert full.returncode == 0, out

    victim = _launch(tmp_path, "killed", env)
    latest = tmp_path / "killed" / "checkpoints" / "latest"
    deadline = time.time() + 600
    while not latest.exists() and victim.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(random.Random().uniform(0.0, 1.5))  # somewhere in rounds 3-6
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=60)
    assert victim.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    killed_at = latest.read_text().strip()
    # A killed run leaves its lock behind; the next run takes it over (its process is gone).
    resumed = _launch(tmp_path, "killed", env, resume=True)
    out, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, out

    a, b = _metrics(tmp_path / "full" / "metrics.jsonl"), _metrics(tmp_path / "killed" / "metrics.jsonl")
    assert [x["type"] for x in a] == ["eval", "round", "round", "round", "eval", "round", "round", "round", "eval"]
    assert b == a, f"killed after {killed_at}"
    assert (tmp_path / "killed" / "checkpoints" / "round-000006" / "policy" / "model.safetensors").exists()
    # The DPO reference (a copy of the policy: full fine-tuning) is written once per iteration that a checkpoint
    # falls in the middle of (rounds 2 and 4: iterations of 3 rounds), not into each checkpoint; the resumed run
    # above read it back.
    refs = sorted(p.name for p in (tmp_path / "full" / "checkpoints").glob("reference-*"))
    assert refs == ["reference-000000", "reference-000003"]
    assert not any("ref" in p.name for p in (tmp_path / "full" / "checkpoints" / "round-000004").rglob("*"))
    # Resuming a run that already ended (or was killed after its final checkpoint) changes nothing.
    again = _launch(tmp_path, "full", env, resume=True)
    out, _ = again.communicate(timeout=600)
    assert again.returncode == 0, out
    assert _metrics(tmp_path / "full" / "metrics.jsonl") == a
