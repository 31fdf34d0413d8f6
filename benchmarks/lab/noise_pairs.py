"""What Gaussian noise on the RM scores does to the round's preference pairs, and what a pair rule can do about it.

Samples n completions of validation prompts from the world's SFT policy (as a round does: vLLM, T = 0.8,
distinct texts), lets each prompt's oracle RM (the judge of its domain) score them, normalizes the scores
as a run does (`zscore`), then draws the paper's noise (Gaussian, `--sigma`, on every normalized score)
many times and builds the round's pairs with each rule, margin and min_chosen. By the gold answers
(validation data: this is a measurement, not something a run reads) each pair is one of: right over wrong
(what DPO should learn), wrong over right (it teaches the wrong preference), wrong over wrong or right over
right. The SFT term of the default loss trains on the chosen side, so a wrong chosen answer is learned too.

    python benchmarks/lab/noise_pairs.py [--prompts 400] [--draws 200] [--sigma 0.3] [--out FILE.md]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from laser.config import load_config
from laser.generation import make_engine
from laser.parts import load_reward_models, load_tasks, resolve_models
from laser.rewards import ScoreNormalizer
from laser.strategies import OracleStrategy
from laser.strategies.scoring import CandidateTable
from laser.tasks.checkers import check
from laser.training.pairs import build_pairs

# (pair rule, min_margin, min_chosen)
RULES = [("max_min", 0.0, None), ("max_min", 0.5, None), ("max_min", 1.0, None), ("max_min", 0.0, -0.5),
         ("max_min", 0.0, 0.0), ("max_min", 0.0, 0.5), ("max_min", 0.0, 1.0), ("top_vs_rest", 0.0, None),
         ("max_random", 0.0, None)]


def kinds(rows: list[dict], right: dict[tuple[int, str], bool]) -> np.ndarray:
    """Counts of pairs (right>wrong, wrong>right, wrong>wrong, right>right)."""
    out = np.zeros(4)
    for r in rows:
        c, j = right[(r["instance"], r["chosen"])], right[(r["instance"], r["rejected"])]
        out[0 if c and not j else 1 if j and not c else 2 if not c else 3] += 1
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=400)
    ap.add_argument("--draws", type=int, default=200)
    ap.add_argument("--sigma", type=float, default=0.3)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="run config override")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    config = load_config(None, args.set)
    policy, rm_configs, table, assets = resolve_models(config)
    _, validation, _ = load_tasks(config, assets)
    examples = validation[: args.prompts]
    engine = make_engine(policy, config.engine)
    s = config.round
    cands = engine.sample([ex.prompt for ex in examples], n=s.n, temperature=s.temperature, top_p=s.top_p,
                          max_new_tokens=s.max_new_tokens, seed=0)
    prompts = [ex.prompt for ex in examples]
    ctable = CandidateTable.of(prompts, [cands.texts(i) for i in range(len(prompts))])
    oracle = OracleStrategy.from_accuracy(list(rm_configs), table).best_by_domain
    rms = load_reward_models({name: rm_configs[name] for name in set(oracle.values())})
    raw = np.full(len(ctable), np.nan)
    for name, rm in rms.items():
        rows = np.flatnonzero([oracle[examples[i].domain] == name for i in ctable.instance])
        raw[rows] = ScoreNormalizer("zscore")(name, rm.score([prompts[ctable.instance[c]] for c in rows],
                                                             [ctable.texts[c] for c in rows]).values)
    right = {(int(i), t): bool(check(examples[i], t)) for i, t in zip(ctable.instance, ctable.texts, strict=True)}
    per = [np.array([right[(i, ctable.texts[c])] for c in ctable.rows(i)]) for i in range(len(prompts))]
    mixed = np.mean([r.any() and not r.all() for r in per])
    gap = [raw[ctable.rows(i)][r].mean() - raw[ctable.rows(i)][~r].mean() for i, r in enumerate(per)
           if r.any() and not r.all()]
    lines = [f"# Noise on RM scores and the round's pairs ({len(prompts)} validation prompts, n = {s.n}, "
             f"T = {s.temperature}, SFT policy, each prompt's oracle RM, zscore)", "",
             f"`python benchmarks/lab/noise_pairs.py --prompts {args.prompts} --draws {args.draws} "
             f"--sigma {args.sigma}`",
             "", f"Distinct samples per prompt: {len(ctable) / len(prompts):.2f}; prompts with right and wrong "
             f"samples: {mixed:.0%}; on those, mean normalized score of the right ones minus the wrong ones: "
             f"{np.mean(gap):.2f} (median {np.median(gap):.2f}).", "",
             "Pairs per 100 prompts, by kind (noise: mean over draws):", "",
             "| rule | min_margin | min_chosen | sigma | pairs | right > wrong | wrong > right | wrong > wrong | "
             "right > right |", "|---|---|---|---|---|---|---|---|---|"]
    for rule, margin, low in RULES:
        for sigma in (0.0, args.sigma):
            rng = np.random.default_rng(0)
            total = np.zeros(4)
            draws = args.draws if sigma else 1
            for _ in range(draws):
                noisy = raw + (rng.normal(0, sigma, raw.shape) if sigma else 0)
                rows, _ = build_pairs(ctable, noisy, rule=rule, min_margin=margin, num_pairs=3, rng=rng,
                                      min_chosen=low)
                total += kinds(rows, right)
            total *= 100 / (draws * len(prompts))
            cells = " | ".join(f"{v:.1f}" for v in total)
            shown = "-" if low is None else low
            lines.append(f"| {rule} | {margin} | {shown} | {sigma} | {total.sum():.1f} | {cells} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
