"""Remote reward models: scoring speed against in-process, and what routing saves when every RM is a server.

    python benchmarks/bench_remote_rms.py [--candidates 2048] [--rounds 6] [--out FILE.md]

Starts one vLLM pooling server per sequence classifier of the quick world (`laser.serve.start_servers`, what
`laser serve-rms` runs), then

1. scores the same distinct candidates (gold and wrong answers to the quick world's prompts) with each RM
   in-process (`kind: hf`) and remote (`kind: remote`, `protocol: vllm`), cold caches: candidates per second,
   and the largest difference between the two scores;
2. trains the quick config for `--rounds` rounds with every RM remote, as LASeR and as ensemble:mean (same
   seed): per round, the (candidate, RM) pairs sent to the servers (`rm_forward`, probes included) and the
   seconds spent scoring (`seconds.score`, plus `seconds.feedback` for LASeR's probes).

Timing is a benchmark, not a test: run it on an idle machine. The servers each take a share of the cores.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from laser.report import emit_markdown, read_run

ROOT = Path(__file__).resolve().parents[1]
PORT = 18700


def candidates(suite, count: int) -> tuple[list[str], list[str]]:
    """`count` distinct (prompt, completion) pairs: each prompt's gold answer and plausible wrong ones."""
    from laser.tasks.mistakes import wrong_answer

    rng = random.Random(0)
    seen, prompts, completions = set(), [], []
    for ex in suite.train + suite.test:
        for text in [ex.answer] + [wrong_answer(ex, rng) for _ in range(3)]:
            key = (ex.prompt, " " + text)
            if key not in seen:
                seen.add(key)
                prompts.append(key[0])
                completions.append(key[1])
            if len(prompts) == count:
                return prompts, completions
    return prompts, completions


def train(out: Path, strategy: str, rounds: int, servers, models: dict) -> list[dict]:
    name = strategy.replace(":", "-")
    cmd = [sys.executable, "-m", "laser.cli", "train", "--quiet", "--config", str(ROOT / "configs" / "quick.yaml"),
           "--name", name, "--set", f"output_dir={out}", "--set", f"strategy={strategy}", "--set", f"rounds={rounds}",
           "--set", f"eval_every={rounds}", "--set", f"checkpoint_every={rounds}"]
    for s in servers:
        for k, v in {"kind": "remote", "url": s.url, "tokenizer": models[s.name]}.items():
            cmd += ["--set", f"models.reward_models.{s.name}.{k}={v}"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{strategy} failed:\n{done.stderr[-3000:]}")
    return read_run(out / name).rounds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--candidates", type=int, default=2048)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--out", type=Path, help="also write the tables to this markdown file")
    ap.add_argument("--runs", type=Path, help="keep the two runs' directories here (default: a temporary one)")
    args = ap.parse_args()
    from laser.assets import build_assets, quick_recipe
    from laser.rewards import load_reward_model
    from laser.rewards.remote import RemoteRM
    from laser.serve import start_servers, stop_servers

    assets = build_assets(quick_recipe(), progress=False)
    lineup, _ = assets.lineup("classifiers")
    models = {name: str(path) for name, (_, path) in lineup.items()}
    prompts, completions = candidates(assets.suite(), args.candidates)
    lines = [f"Quick world, its {len(models)} sequence classifiers, each behind its own vLLM pooling server on this "
             f"machine; command: `python benchmarks/bench_remote_rms.py --candidates {args.candidates} --rounds "
             f"{args.rounds}`.", "",
             f"Scoring {len(prompts)} distinct candidates, cold cache:", "",
             "| RM | in-process candidates/s | remote candidates/s | remote / in-process | max abs difference |",
             "|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        servers = start_servers(models, port=PORT, log_dir=tmp, timeout=900)
        started = time.perf_counter() - t0
        try:
            for name, model in models.items():
                local = load_reward_model("hf", model, name=name)
                remote = RemoteRM(next(s.url for s in servers if s.name == name), name=name, tokenizer=model)
                for rm in (local, remote):  # first calls pay one-off set-up: not timed
                    rm.score(prompts[:64], [c + " ." for c in completions[:64]])
                t0 = time.perf_counter()
                a = local.score(prompts, completions)
                t_local = time.perf_counter() - t0
                t0 = time.perf_counter()
                b = remote.score(prompts, completions)
                t_remote = time.perf_counter() - t0
                diff = float(np.nanmax(np.abs(a.values - b.values)))
                lines.append(f"| {name} | {len(prompts) / t_local:.0f} | {len(prompts) / t_remote:.0f} | "
                             f"{t_local / t_remote:.2f}x | {diff:.1e} |")
            runs_dir = args.runs or Path(tmp)
            runs = {s: train(runs_dir, s, args.rounds, servers, models) for s in ("laser", "ensemble:mean")}
        finally:
            stop_servers(servers)
    lines += ["", f"(the {len(models)} servers took {started:.0f} s to start)", "",
              f"`laser train` of the quick config, {args.rounds} rounds, every RM remote (mean per round; the "
              "scoring seconds are the round's `score` stage, plus `feedback` for LASeR's probes):", "",
              "| strategy | RM calls per round | RM seconds per round (score + probes) | RM calls, all rounds | "
              "same, rounds after the warm-up |", "|---|---|---|---|---|"]
    for strategy, rounds in runs.items():
        calls = [r["rm_forward"] for r in rounds]
        score = [r["seconds"].get("score", 0.0) for r in rounds]
        probes = [r["seconds"].get("feedback", 0.0) for r in rounds]
        late = [r for r in rounds if not r.get("probes", {}).get("every_rm", False)]
        late_s = [r["seconds"].get("score", 0.0) + r["seconds"].get("feedback", 0.0) for r in late]
        lines.append(f"| {strategy} | {np.mean(calls):.0f} | {np.mean(score) + np.mean(probes):.2f} "
                     f"({np.mean(score):.2f} + {np.mean(probes):.2f}) | {sum(calls)} | "
                     f"{np.mean([r['rm_forward'] for r in late]):.0f} calls, "
                     f"{np.mean(late_s):.2f} s |")
    ratio = sum(r["rm_forward"] for r in runs["laser"]) / max(sum(r["rm_forward"] for r in runs["ensemble:mean"]), 1)
    lines += ["", f"LASeR / ensemble:mean RM calls: {ratio:.2f}x"]
    emit_markdown(lines, args.out)


if __name__ == "__main__":
    main()
