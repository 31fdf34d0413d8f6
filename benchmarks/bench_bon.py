"""Best-of-n on the embedded test split: every strategy, n in {1, 4, 16}, accuracy, RM cost and wall time.

    python benchmarks/bench_bon.py                       # the full split (800 prompts), about 10 minutes
    python benchmarks/bench_bon.py --limit 200 --n 1 4   # a smaller check

The policy and the frozen router are those of a LASeR demo run (`runs/demo/laser-s0`, trained here
first if it is missing: about 75 s). For each n the candidates are sampled once and every strategy
reranks the same candidates (a paired comparison); the test prompts are shuffled (seed 0) so that the
online routers see the domains mixed, as a stream of user prompts would be. RM caches are cleared
before each strategy, so forward passes and wall times are each strategy's own. "RM scorings" counts
(candidate, RM) judgements: what a strategy costs.

Strategies: laser (frozen: the bandit trained during DPO), laser online from nll and from gold
feedback (fresh routers that learn while they serve), laser warm-started (the trained router, learning on
from nll or gold as it serves), laser with an offline prior (a fresh router taught from `--prior-rows` held-out
validation rows, every RM scoring the policy's samples of each: `laser.training.prior`; then frozen, or learning
from nll or gold), random, ensemble:mean, each single RM, and the oracle (the best RM per
domain by the build's on-policy table; it reads the domain labels). `--only` runs the strategies whose
label starts with one of its words.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _strategies(rm_names: list[str]) -> list[tuple[str, str, str]]:
    """(label, strategy spec, feedback)."""
    return ([("laser (frozen router)", "laser", "frozen"), ("laser online (nll)", "laser", "nll"),
             ("laser online (gold)", "laser", "gold"), ("laser warm start (nll)", "laser", "warm-nll"),
             ("laser warm start (gold)", "laser", "warm-gold"), ("laser prior (frozen)", "laser", "prior-none"),
             ("laser prior (nll)", "laser", "prior-nll"), ("laser prior (gold)", "laser", "prior-gold"),
             ("random", "random", "none"),
             ("ensemble:mean", "ensemble:mean", "none")]
            + [(f"single:{rm}", f"single:{rm}", "none") for rm in rm_names] + [("oracle", "oracle", "none")])


def _macro(hits: dict[str, list[bool]]) -> tuple[float, float]:
    """Mean over domains of the accuracy, and the half-width of its 95% normal interval."""
    p = np.array([np.mean(v) for v in hits.values()])
    n = np.array([len(v) for v in hits.values()])
    return float(p.mean()), float(1.96 * np.sqrt(np.sum(p * (1 - p) / n)) / len(p))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--router", default="runs/demo/laser-s0", help="a finished LASeR run (trained if missing)")
    ap.add_argument("--n", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--limit", type=int, default=None, help="use the first LIMIT shuffled test prompts")
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--batch-size", type=int, default=32, help="prompts per routing step")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "bon"))
    ap.add_argument("--only", nargs="+", default=None, metavar="LABEL",
                    help="run only the strategies whose label starts with one of these (e.g. 'laser' oracle)")
    ap.add_argument("--prior-rows", type=int, default=200, help="held-out rows of the offline prior (200)")
    args = ap.parse_args(argv)

    from laser.bon import BonRunner, BonSettings, PromptRow
    from laser.bon.setup import load_embedder, load_reward_models, make_bon_strategy, resolve_setup
    from laser.config import RunConfig
    from laser.generation import Candidates, make_engine
    from laser.parts import resolve_models
    from laser.report import describe_machine
    from laser.rewards import ScoreNormalizer
    from laser.training.prior import learn_prior
    from laser.training.run import train

    router = Path(args.router)
    if not (router / "checkpoints" / "latest").exists():
        print(f"training the router run {router} (LASeR, the demo's defaults, seed 0)", flush=True)
        train(RunConfig(name=router.name, output_dir=str(router.parent), strategy="laser", seed=0), progress=False)
    setup = resolve_setup(router=str(router))
    _, _, _, assets = resolve_models(setup.config)
    test = list(assets.suite().test)
    order = np.random.default_rng(0).permutation(len(test))[:args.limit]
    rows = [PromptRow(ex.id, ex.prompt, ex.answer, ex.domain, ex.answer_format) for ex in (test[i] for i in order)]
    engine = make_engine(setup.policy, setup.config.engine)
    rms = load_reward_models(setup)
    embedder = load_embedder(setup, engine)
    k = len(rms)
    results = []
    t_all = time.perf_counter()
    for n in args.n:
        settings = BonSettings(n=n, temperature=args.temperature, max_new_tokens=args.max_new_tokens,
                               batch_size=args.batch_size)
        t0 = time.perf_counter()
        cands = engine.sample([r.prompt for r in rows], n=n, temperature=args.temperature,
                              max_new_tokens=args.max_new_tokens, seed=0, logprobs=True)  # the nll feedback's
        sample_s = time.perf_counter() - t0
        distinct = float(np.mean([len(g) for g in cands.samples]))
        print(f"n={n}: sampled {len(rows)} prompts x {n} in {sample_s:.1f} s ({distinct:.2f} distinct per prompt)",
              flush=True)
        for label, spec, feedback in _strategies(list(rms)):
            if args.only and not any(label.startswith(w) for w in args.only):
                continue
            for rm in rms.values():
                rm.clear_cache()
                rm.stats.forward = 0
            normalizer = ScoreNormalizer(setup.config.normalizer)
            frozen = feedback == "frozen"
            warm = feedback.startswith("warm-")  # the trained router, learning on as it serves
            prior = feedback.startswith("prior-")  # a fresh router taught from held-out rows first
            feedback = feedback.removeprefix("warm-").removeprefix("prior-")
            if frozen or warm:
                strategy = make_bon_strategy(setup, spec, embedder, normalizer)
            else:
                fresh = dataclasses.replace(setup, router=None)  # the same setup, without the trained state
                strategy = make_bon_strategy(fresh, spec, embedder if spec == "laser" else None, normalizer)
            prior_stats = None
            if prior:
                r = setup.config.round
                prior_stats = learn_prior(strategy, rms, normalizer, engine, embedder.embed, assets.suite().validation,
                                          rows=args.prior_rows, n=r.n, temperature=r.temperature,
                                          max_new_tokens=r.max_new_tokens, seed=0)
                frozen = feedback == "none"
            runner = BonRunner(engine, strategy, rms, settings.model_copy(
                update={"feedback": "none" if frozen else feedback}), embedder if spec == "laser" else None,
                normalizer)
            out_rows = []
            for b in range(0, len(rows), args.batch_size):
                part = Candidates(cands.prompts[b:b + args.batch_size], cands.samples[b:b + args.batch_size])
                out_rows += runner.choose(rows[b:b + args.batch_size], part, batch_index=b // args.batch_size)
            hits: dict[str, list[bool]] = defaultdict(list)
            for r in out_rows:
                hits[r["domain"]].append(r["correct"])
            mean, ci = _macro(hits)
            res = {"strategy": label, "n": n, "accuracy": {d: float(np.mean(v)) for d, v in sorted(hits.items())},
                   "mean": mean, "ci95": ci, "rm_scorings": int(sum(r["rm_calls"] for r in out_rows)),
                   "rm_forward": int(sum(rm.stats.forward for rm in rms.values())),
                   "prior_rm_forward": prior_stats["rm_forward"] if prior_stats else 0,
                   "prior_informative": prior_stats["informative"] if prior_stats else 0,
                   "rerank_s": round(runner.elapsed, 2), "sample_s": round(sample_s, 2),
                   "picks": {rm: sum(rm in r["rms"] for r in out_rows) for rm in rms},
                   "correct": [bool(r["correct"]) for r in out_rows], "domains": [r["domain"] for r in out_rows]}
            results.append(res)
            print(f"  {label:24} {mean:6.1%} ± {ci:.1%}  scorings {res['rm_scorings']:6d}  "
                  f"rerank {res['rerank_s']:6.1f} s" + (f"  (prior: {res['prior_informative']} informative rows, "
                                                        f"{res['prior_rm_forward']} RM passes)" if prior else ""),
                  flush=True)
    engine.close()
    total_s = time.perf_counter() - t_all
    table = format_table(results, k)
    claims = check_claims(results, k, max(args.n))
    command = " ".join(["python benchmarks/bench_bon.py", *(argv if argv is not None else sys.argv[1:])])
    header = (f"`{command}` on {describe_machine()}; {len(rows)} test prompts, "
              f"policy and frozen router from {router}, temperature {args.temperature}; {total_s:.0f} s in all.")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bon.md").write_text(header + "\n\n" + table + "\n\n" + claims + "\n")
    (out / "bon.json").write_text(json.dumps({"command": header, "k": k, "results": results}, indent=1))
    print("\n" + table + "\n\n" + claims)
    print(f"\nwrote {out / 'bon.md'} and {out / 'bon.json'}")
    return 0


def format_table(results: list[dict], k: int) -> str:
    domains = sorted({d for r in results for d in r["accuracy"]})
    lines = [f"| strategy | n | {' | '.join(domains)} | mean ± 95% CI | RM scorings | vs ensemble | rerank s |",
             "|---" * (len(domains) + 6) + "|"]
    ens = {r["n"]: r["rm_scorings"] for r in results if r["strategy"] == "ensemble:mean"}
    for r in results:
        ratio = f"{r['rm_scorings'] / ens[r['n']]:.2f}" if ens.get(r["n"]) else ""
        lines.append(f"| {r['strategy']} | {r['n']} | " + " | ".join(f"{100 * r['accuracy'][d]:.1f}" for d in domains)
                     + f" | **{100 * r['mean']:.1f} ± {100 * r['ci95']:.1f}** | {r['rm_scorings']:,}"
                     + (f" (+ {r['prior_rm_forward']:,} prior passes)" if r.get("prior_rm_forward") else "")
                     + f" | {ratio} | "
                     f"{r['rerank_s']:.1f} |")
    return "\n".join(lines)


def _paired(a: dict, b: dict) -> tuple[float, float]:
    """The macro (mean over domains) accuracy difference a - b on the same prompts, with its 95% half-width."""
    d = np.array(a["correct"], dtype=float) - np.array(b["correct"], dtype=float)
    dom = np.array(a["domains"])
    per = [(d[dom == x].mean(), d[dom == x].var(ddof=1) / (dom == x).sum()) for x in sorted(set(a["domains"]))]
    return float(np.mean([m for m, _ in per])), float(1.96 * np.sqrt(sum(v for _, v in per)) / len(per))


def check_claims(results: list[dict], k: int, n: int) -> str:
    at = {r["strategy"]: r for r in results if r["n"] == n}
    laser = at.get("laser (frozen router)")
    if laser is None:
        return ""
    out = [f"Claims at n={n}:"]
    for other in ("random", "ensemble:mean"):
        if other in at:
            diff, half = _paired(laser, at[other])
            ok = laser["mean"] >= at[other]["mean"]
            out.append(f"- [{'x' if ok else ' '}] LASeR (frozen) >= {other}: {laser['mean']:.1%} vs "
                       f"{at[other]['mean']:.1%} (paired difference {100 * diff:+.1f} ± {100 * half:.1f} points)")
    if "oracle" in at:
        o = at["oracle"]
        best_single = max((r for s, r in at.items() if s.startswith("single:")), key=lambda r: r["mean"], default=None)
        out.append(f"- LASeR (frozen) vs the oracle: {laser['mean']:.1%} vs {o['mean']:.1%} (gap "
                   f"{100 * (o['mean'] - laser['mean']):.1f} points)"
                   + (f"; best single RM {best_single['strategy']} {best_single['mean']:.1%}" if best_single else ""))
    if "ensemble:mean" in at:
        ratio = laser["rm_scorings"] / max(at["ensemble:mean"]["rm_scorings"], 1)
        out.append(f"- [{'x' if abs(ratio - 1 / k) < 0.02 else ' '}] LASeR's RM scorings are 1/K of the "
                   f"ensemble's: {laser['rm_scorings']:,} vs {at['ensemble:mean']['rm_scorings']:,} = {ratio:.3f} "
                   f"(1/K = {1 / k:.3f})")
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
