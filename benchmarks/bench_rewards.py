"""Reward scoring throughput: one RM vs the K-RM ensemble, batched vs one at a time, cache off vs on.

Runs on the embedded default's reward models (built, or found in the cache, by `laser build-assets`;
`--quick` uses the reduced world). Candidates are test prompts with their gold answer and wrong answers,
as the policy would write them. Every configuration scores the same candidates; the table gives
candidates per second and the ratios the design relies on.

    python benchmarks/bench_rewards.py [--quick] [--candidates 1024] [--json benchmarks/results/rewards.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import time
from pathlib import Path

import torch

from laser.assets import AssetRecipe, build_assets, quick_recipe
from laser.assets.pairs import wrong_answer
from laser.rewards import load_reward_model


def candidates(assets, n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    suite = assets.suite()
    rng = random.Random(seed)
    prompts, completions = [], []
    while len(prompts) < n:
        ex = rng.choice(suite.test)
        text = ex.target() if rng.random() < 0.3 else wrong_answer(ex, rng)
        prompts.append(ex.prompt)
        completions.append(" " + text + ("" if rng.random() < 0.7 else " please"))
    return prompts, completions


def timed(fn, repeat: int = 3) -> float:
    """The fastest of `repeat` runs of fn, in seconds (the machine is shared: the minimum is the signal)."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="use the reduced world (3 RMs) instead of the default")
    ap.add_argument("--candidates", type=int, default=1024)
    ap.add_argument("--one-at-a-time", type=int, default=128, help="candidates timed one at a time (extrapolated)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.manual_seed(0)
    assets = build_assets(quick_recipe() if args.quick else AssetRecipe())
    prompts, completions = candidates(assets, args.candidates)
    paths = assets.reward_models
    k = len(paths)
    fresh = {name: lambda p=path, **kw: load_reward_model("hf", str(p), **kw) for name, path in paths.items()}
    first = next(iter(paths))
    rows = {}

    rm = fresh[first](batch_size=args.batch_size, cache_size=None)
    rm.score(prompts[:64], completions[:64])  # warm-up
    rows["one RM, batched"] = timed(lambda: rm.score(prompts, completions)) / len(prompts)
    m = args.one_at_a_time
    single = fresh[first](batch_size=1, cache_size=None)
    rows["one RM, one at a time"] = timed(lambda: [single.score([p], [c]) for p, c in
                                                   zip(prompts[:m], completions[:m], strict=True)]) / m
    ensemble = [fresh[n](batch_size=args.batch_size, cache_size=None) for n in paths]
    ens = f"ensemble of {k} RMs, batched"
    rows[ens] = timed(lambda: [r.score(prompts, completions) for r in ensemble]) / len(prompts)
    cached = fresh[first](batch_size=args.batch_size)
    cached.score(prompts, completions)
    rows["one RM, every candidate cached"] = timed(lambda: cached.score(prompts, completions)) / len(prompts)

    per_s = {name: 1.0 / t for name, t in rows.items()}
    ratios = {
        "ensemble / one RM (cost)": rows[ens] / rows["one RM, batched"],
        "batched / one at a time (speed-up)": rows["one RM, one at a time"] / rows["one RM, batched"],
        "cached / uncached (speed-up)": rows["one RM, batched"] / rows["one RM, every candidate cached"],
    }
    print(f"Reward scoring on the embedded {'reduced' if args.quick else 'default'} world: {len(prompts)} candidates, "
          f"K={k} RMs, batch {args.batch_size}, torch threads {torch.get_num_threads()}\n")
    print("| configuration | candidates / s |\n|---|---|")
    for name, v in per_s.items():
        print(f"| {name} | {v:,.0f} |")
    print("\n| ratio | value |\n|---|---|")
    for name, v in ratios.items():
        print(f"| {name} | {v:.2f} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"candidates_per_s": per_s, "ratios": ratios, "k": k,
                                         "candidates": len(prompts), "batch_size": args.batch_size,
                                         "quick": args.quick, "machine": platform.machine(),
                                         "torch_threads": torch.get_num_threads()}, indent=1))


if __name__ == "__main__":
    main()
