"""benchmarks/gpu_check.py's dry run (`--tiny`, CPU-sized): every step of the GPU check runs and reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_gpu_checks_dry_run_reports_every_field(quick_world, tmp_path):
    assets, _ = quick_world
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--tiny", "--out",
                           str(tmp_path)], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "LASER_ASSETS_DIR": str(assets.root.parent)})
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    printed = done.stdout.splitlines()
    start = max(i for i, line in enumerate(printed) if line == "{")  # vLLM's log lines come before it
    assert report == json.loads("\n".join(printed[start:]))  # printed and written alike
    assert report["device"] == "cpu" and report["engine"]["name"] in ("vllm", "hf")
    # the engine serves the trained LoRA policy after the last sync: the same greedy tokens and log-probabilities
    assert report["parity"]["first_greedy_token_matches_hf"] == "8/8"
    assert report["parity"]["max_abs_logprob_diff_per_token"] < 1e-3
    s = report["sampling"]
    assert s["tokens"] > 0 and s["tokens"] <= s["prompts"] * s["n"] * s["max_new_tokens"] and s["tokens_per_s"] > 0
    laser1, laser2, ensemble = report["rounds"]
    assert [r["strategy"] for r in report["rounds"]] == ["laser", "laser", "ensemble:mean"]
    assert all(r["pairs"] > 0 and r["dpo"][0]["pairs"] == r["pairs"] for r in report["rounds"])
    assert report["dpo"]["optimizer_steps"] == 3 and report["dpo"]["seconds_per_step"] > 0
    assert set(report["memory_gib"]) == {"policy weights", "LoRA adapters", "engine", "reward models",
                                         "update (gradients, activations)"}
    assert all(v["planned"] > 0 for v in report["memory_gib"].values())
    sleep = report["sleep"]
    if report["engine"]["name"] == "vllm":  # vLLM sleeps on CUDA only: said so, not pretended
        assert sleep["level"] == 0 and report["engine"]["sleep_note"].startswith("vLLM has no sleep mode")
    else:
        assert sleep["sleeps"] == 3 and len(sleep["freed_gib"]) == 3
