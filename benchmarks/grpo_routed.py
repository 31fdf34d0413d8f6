"""Does routing pay in online RL as it does in iterative DPO? GRPO through TRL on an embedded world's policy.

Each run trains the world's SFT policy with TRL's `GRPOTrainer` for `--steps` steps on the same prompts (the
world's training split, seeded order) with one reward, and measures greedy test accuracy after:

- `laser`: `RoutedReward` with the kernel router and `RouterCallback` (held-out probes every `--probe-every`
  steps, the warm-up before the first step);
- `single:<rm>`: one RM behind the same reward function;
- `ensemble:mean`: every RM as its own `reward_funcs` entry, each z-scored, weighted 1/K (TRL sums them);
- `oracle`: each prompt to the RM the world's table says is best on its domain (reads the domain).

    python benchmarks/grpo_routed.py                                   # the default world, 3 seeds
    python benchmarks/grpo_routed.py --steps 4 --seeds 0 --strategies laser single:cipher   # a smoke run

Prints one table (mean ± 95% CI over seeds, LASeR minus each paired by seed, RM passes, wall seconds per run) and
writes results.json and README.md under --out. CPU: about a minute a run on 2 cores with the defaults.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from laser.report.runs import mean_ci  # noqa: E402


def run(assets, strategy: str, seed: int, args) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from laser.config import EvalSettings
    from laser.generation import make_embedder
    from laser.generation.hf_engine import HFEngine
    from laser.integrations.trl import RoutedReward, RouterCallback
    from laser.rewards import load_reward_model
    from laser.strategies import make_strategy
    from laser.strategies.baselines import OracleStrategy
    from laser.training.evaluation import evaluate_accuracy

    torch.manual_seed(seed)
    suite = assets.suite()
    model = AutoModelForCausalLM.from_pretrained(assets.policy)
    tok = AutoTokenizer.from_pretrained(assets.policy)
    lineup, table = assets.lineup()
    rms = {name: load_reward_model(kind, str(path)) for name, (kind, path) in lineup.items()}
    embedder = make_embedder(model, tok)
    names = list(rms)
    callbacks, weights = [], None
    if strategy == "laser":
        router = make_strategy("laser", names, dim=embedder.dim, seed=seed, center=True, normalize_feedback=False)
        rewards = [RoutedReward(rms, router, embedder, domain_column="domain")]
        callbacks = [RouterCallback(rewards[0], suite.validation, every=args.probe_every, n=8,
                                    max_new_tokens=args.max_new_tokens, seed=seed)]
    elif strategy == "ensemble:mean":
        rewards = [RoutedReward({n: rms[n]}, make_strategy(f"single:{n}", [n]), embedder, name=f"rm_{n}")
                   for n in names]
        weights = [1.0 / len(names)] * len(names)
    elif strategy == "oracle":
        oracle = OracleStrategy.from_accuracy(names, table)
        rewards = [RoutedReward(rms, oracle, embedder, domain_column="domain")]
    else:
        rewards = [RoutedReward(rms, make_strategy(strategy, names), embedder)]
    order = np.random.default_rng(seed).permutation(len(suite.train))
    train = Dataset.from_list([{"prompt": suite.train[i].prompt, "domain": suite.train[i].domain} for i in order])
    config = GRPOConfig(output_dir=str(args.runs / f"{strategy.replace(':', '-')}-s{seed}"),
                        per_device_train_batch_size=args.prompts * args.generations,
                        num_generations=args.generations, max_completion_length=args.max_new_tokens,
                        max_steps=args.steps, learning_rate=args.learning_rate, beta=0.0, temperature=0.8,
                        logging_steps=max(args.steps // 4, 1), save_strategy="no", report_to=[], use_cpu=True,
                        seed=seed, reward_weights=weights, disable_tqdm=True)
    trainer = GRPOTrainer(model=model, reward_funcs=rewards, args=config, train_dataset=train,
                          processing_class=tok, callbacks=callbacks)
    t0 = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - t0
    engine = HFEngine.wrap(model.eval(), tok)
    acc, _ = evaluate_accuracy(engine, suite.test, EvalSettings(), args.max_new_tokens)
    forward = sum(r.rm_forward for r in rewards)
    picks = {k: int(v) for r in rewards for k, v in r.picks.items()}
    return {"strategy": strategy, "seed": seed, "accuracy": acc, "mean_accuracy": float(np.mean(list(acc.values()))),
            "rm_forward": int(forward), "picks": picks, "wall_s": round(wall, 1),
            "probe_rounds": [dict(line) for line in callbacks[0].lines] if callbacks else []}


def sft_accuracy(assets, max_new_tokens: int) -> dict[str, float]:
    """The world's SFT policy's greedy test accuracy per domain (every run's starting point)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from laser.config import EvalSettings
    from laser.generation.hf_engine import HFEngine
    from laser.training.evaluation import evaluate_accuracy

    model = AutoModelForCausalLM.from_pretrained(assets.policy).eval()
    engine = HFEngine.wrap(model, AutoTokenizer.from_pretrained(assets.policy))
    return evaluate_accuracy(engine, assets.suite().test, EvalSettings(), max_new_tokens)[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--strategies", nargs="+", default=None, help="default: laser, the best single RM, "
                    "ensemble:mean, oracle")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--prompts", type=int, default=8, help="prompts per step (8)")
    ap.add_argument("--generations", type=int, default=8, help="completions per prompt, GRPO's group (8)")
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--learning-rate", type=float, default=1e-4, help="the DPO loop's for the tiny policy (1e-4)")
    ap.add_argument("--probe-every", type=int, default=2, help="steps between the router's probe rounds (2)")
    ap.add_argument("--recipe", default=None, help="a world recipe YAML (default: the embedded default world)")
    ap.add_argument("--runs", type=Path, default=Path("runs/grpo-routed"))
    ap.add_argument("--out", type=Path, default=None, help="results folder (README.md, results.json)")
    args = ap.parse_args()
    from laser.assets import AssetRecipe, build_assets
    from laser.assets.recipe import load_recipe

    assets = build_assets(load_recipe(args.recipe) if args.recipe else AssetRecipe(), progress=False)
    _, table = assets.lineup()
    best = max((n for n in table if n != "verbose"), key=lambda n: np.mean(list(table[n].values())))
    strategies = args.strategies or ["laser", f"single:{best}", "ensemble:mean", "oracle"]
    sft = sft_accuracy(assets, args.max_new_tokens)
    results = []
    for strategy in strategies:
        for seed in args.seeds:
            r = run(assets, strategy, seed, args)
            print(f"{strategy} seed {seed}: {r['mean_accuracy']:.3f} ({r['wall_s']} s, {r['rm_forward']} RM passes)",
                  flush=True)
            results.append(r)
    by = {s: {r["seed"]: r for r in results if r["strategy"] == s} for s in strategies}
    domains = list(results[0]["accuracy"])
    lines = [f"# GRPO through TRL with each reward, {args.steps} steps of {args.prompts} prompts x "
             f"{args.generations} completions, seeds {args.seeds}", "",
             "Command: `python benchmarks/grpo_routed.py " + " ".join(sys.argv[1:]) + "`  ",
             "Greedy test accuracy in %, mean ± 95% CI over seeds; 'vs laser' paired by seed.", "",
             "| reward | " + " | ".join(domains) + " | mean | vs laser | RM passes | wall s |",
             "|---|" + "---|" * (len(domains) + 4),
             "| SFT policy (step 0) | " + " | ".join(f"{sft[d] * 100:.1f}" for d in domains)
             + f" | {np.mean(list(sft.values())) * 100:.1f} | | 0 | |"]
    for s, runs in by.items():
        cells = [f"{m * 100:.1f} ± {h * 100:.1f}" for m, h in
                 (mean_ci([r["accuracy"][d] for r in runs.values()]) for d in domains)]
        m, h = mean_ci([r["mean_accuracy"] for r in runs.values()])
        diff = ""
        if s != "laser" and "laser" in by:
            common = sorted(set(runs) & set(by["laser"]))
            dm, dh = mean_ci([by["laser"][k]["mean_accuracy"] - runs[k]["mean_accuracy"] for k in common])
            diff = f"{dm * 100:+.1f} ± {dh * 100:.1f}"
        lines.append(f"| {s} | " + " | ".join(cells) + f" | **{m * 100:.1f} ± {h * 100:.1f}** | {diff} | "
                     f"{np.mean([r['rm_forward'] for r in runs.values()]):,.0f} | "
                     f"{np.mean([r['wall_s'] for r in runs.values()]):.0f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "README.md").write_text(text)
        (args.out / "results.json").write_text(json.dumps({"args": sys.argv[1:], "sft_accuracy": sft,
                                                           "runs": results}, indent=1))


if __name__ == "__main__":
    main()
