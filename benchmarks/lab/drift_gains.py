"""After a judge is swapped out mid-run, is there a new best RM the router could find in 10 rounds?

Loads the round-`--round` checkpoint of `benchmarks/drift.py`'s base run of each seed (the policy as it is when the
swap happens), samples every validation prompt of `--domain` `--reps` times (n = round.n, each time another
seed), and measures every RM's rerank gain (the router's own reward, `laser.training.feedback.rerank_gain`) on the
informative ones (samples partly right). Prints per RM the mean gain and its spread, the gap between the best
and the second best other than the swapped RM, and how many informative probes of the domain a router would need
to tell them apart (a two-sided 95% test at 80% power: 2 (1.96 + 0.84)^2 sd^2 / gap^2 per RM).

    python benchmarks/drift.py --seeds 0 1 2 --only 'no swap'    # the base runs, if not there yet
    python benchmarks/lab/drift_gains.py --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def gains_of(seed: int, args) -> dict:
    from router_replay import every_rm_gains, informative  # beside this script

    from laser.config import load_config
    from laser.parts import build_trainer

    config = load_config(ROOT / args.config, [f"output_dir={args.runs}", f"seed={seed}", f"name=base-s{seed}",
                                              *args.set])
    tr = build_trainer(config)
    try:
        tr.load_checkpoint(config.run_dir / "checkpoints" / f"round-{args.round:06d}")
        s, rms = tr.settings, list(tr.rms)
        rows = [ex for ex in tr.validation if ex.domain == args.domain]
        gains = []  # one row per informative (probe, rep): each RM's rerank gain
        for rep in range(args.reps):
            sampled = tr.engine.sample([ex.prompt for ex in rows], n=s.n, temperature=s.temperature, top_p=s.top_p,
                                       max_new_tokens=s.max_new_tokens, seed=7000 + rep)
            texts = [sampled.texts(j) for j in range(len(rows))]
            mixed = informative(rows, texts)
            if mixed:
                gains.append(every_rm_gains(tr, [rows[j] for j in mixed], [texts[j] for j in mixed]))
    finally:
        tr.engine.close()
    g = np.concatenate(gains)
    return {"seed": seed, "rms": rms, "gains": g.tolist(), "rows": len(rows), "reps": args.reps,
            "informative_share": len(g) / (len(rows) * args.reps)}


def report(results: list[dict], args) -> str:
    out = [f"# Rerank gain of each RM on `{args.domain}` at the round-{args.round} policy", "",
           f"`python benchmarks/lab/drift_gains.py --seeds {' '.join(str(r['seed']) for r in results)} "
           f"--domain {args.domain} --swapped {args.swapped}` (`{args.config}`, {args.reps} samplings of each "
           f"validation prompt of the domain). Gain: the router's reward on an informative probe, in [-1, 1].", "",
           "| seed | informative probes | " + " | ".join(f"`{r}`" for r in results[0]["rms"]) +
           " | best other than the swapped RM, gap to the second | probes per RM to tell them apart |",
           "|---|---|" + "---|" * len(results[0]["rms"]) + "---|---|"]
    for r in results:
        g, rms = np.array(r["gains"]), r["rms"]
        mean, sd = g.mean(axis=0), g.std(axis=0, ddof=1)
        others = [k for k, name in enumerate(rms) if name != args.swapped]
        order = sorted(others, key=lambda k: -mean[k])
        best, second = order[0], order[1]
        gap = mean[best] - mean[second]
        pooled = np.sqrt((sd[best] ** 2 + sd[second] ** 2) / 2)
        need = 2 * (1.96 + 0.84) ** 2 * pooled ** 2 / gap ** 2 if gap > 0 else float("inf")
        out.append(f"| {r['seed']} | {len(g)} ({r['informative_share']:.0%} of samplings) | " +
                   " | ".join(f"{mean[k]:+.2f} ± {sd[k]:.2f}" for k in range(len(rms))) +
                   f" | `{rms[best]}` by {gap:.2f} over `{rms[second]}` | {need:.0f} |")
    out += ["", "Mean ± standard deviation over the informative probes (each sampling its own)."]
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/demo.yaml")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--round", type=int, default=20, help="the checkpoint of the base run (the swap round)")
    ap.add_argument("--domain", default="rotate")
    ap.add_argument("--swapped", default="rotator", help="the RM swapped out (left out of the new best)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--set", nargs="*", default=[])
    ap.add_argument("--runs", type=Path, default=ROOT / "runs" / "drift")
    ap.add_argument("--out", type=Path, default=None, help="write the table here (a .md file) and the gains beside")
    args = ap.parse_args()
    results = [gains_of(s, args) for s in args.seeds]
    text = report(results, args)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        args.out.with_suffix(".json").write_text(json.dumps(results) + "\n")


if __name__ == "__main__":
    main()
