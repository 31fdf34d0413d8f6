"""How well do reward models judge the policy's own samples? Pairwise accuracy on on-policy pairs, per domain.

The build's held-out table pairs the gold answer with a synthetic wrong one. Training judges the
policy's own samples instead: this script samples n completions of every test prompt from the policy
(vLLM, temperature 1), keeps prompts with at least one correct and one incorrect sample (by the task
checker), pairs one of each at random, and reports how often each reward model scores the correct one
higher. `--likelihood PATH` adds a causal LM judged by its mean token log-likelihood (the `likelihood`
backend); the policy itself is always included that way.

    python benchmarks/lab/rm_on_policy.py [--quick] [--n 8] [--likelihood DIR ...]
"""

from __future__ import annotations

import argparse
import random

import numpy as np

from laser.assets import AssetRecipe, build_assets, quick_recipe
from laser.generation import EngineConfig, make_engine
from laser.rewards import load_reward_model
from laser.tasks.checkers import check


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="the reduced world instead of the default")
    ap.add_argument("--n", type=int, default=8, help="samples per test prompt")
    ap.add_argument("--likelihood", nargs="*", default=[], help="extra causal-LM judges (directories)")
    ap.add_argument("--seed", type=int, default=2)
    args = ap.parse_args()
    assets = build_assets(quick_recipe() if args.quick else AssetRecipe())
    test = assets.suite().test
    engine = make_engine(assets.policy, EngineConfig(engine="vllm", max_model_len=128))
    cands = engine.sample([ex.prompt for ex in test], n=args.n, temperature=1.0, max_new_tokens=16, seed=args.seed)
    engine.close()
    rng = random.Random(args.seed)
    rows = []
    for i, ex in enumerate(test):
        good = [s.text for s in cands.samples[i] if check(ex, s.text)]
        bad = [s.text for s in cands.samples[i] if not check(ex, s.text)]
        if good and bad:
            rows.append((ex, rng.choice(good), rng.choice(bad)))
    domains = np.array([ex.domain for ex, _, _ in rows])
    names = sorted(set(domains))
    judges = {name: load_reward_model("hf", str(path)) for name, path in assets.reward_models.items()}
    judges["policy (likelihood)"] = load_reward_model("likelihood", str(assets.policy))
    for path in args.likelihood:
        judges[f"{path} (likelihood)"] = load_reward_model("likelihood", path)
    prompts = [ex.prompt for ex, _, _ in rows]
    print(f"On-policy pairs: {len(rows)} test prompts with a correct and an incorrect sample among {args.n} "
          f"({', '.join(f'{d} {int((domains == d).sum())}' for d in names)}); chance 50%\n")
    print("| judge | " + " | ".join(names) + " |\n|---|" + "---|" * len(names))
    for name, rm in judges.items():
        good = rm.score(prompts, [g for _, g, _ in rows]).values
        bad = rm.score(prompts, [b for _, _, b in rows]).values
        wins = good > bad
        print(f"| {name} | " + " | ".join(f"{wins[domains == d].mean():.0%}" for d in names) + " |")


if __name__ == "__main__":
    main()
