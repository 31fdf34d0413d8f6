"""A reward model that gets worse mid-run: does the router notice, and what does noticing cost?

    python benchmarks/drift.py                                  # the default world, 3 seeds, 8 branches: ~30 min
    python benchmarks/drift.py --seeds 0 --out /tmp/drift       # one seed
    python benchmarks/drift.py --set models.embedded_recipe=configs/worlds/alt.yaml
    python benchmarks/drift.py --rm generalist --domain rotate \
        --set models.embedded_recipe=configs/worlds/generalist.yaml

For each seed, one run of `configs/demo.yaml` to round `--swap-round` (checkpointed), then branches resumed from
that checkpoint, each to `--rounds`:

- `swap`: from the swap round on, `--rm` (by default the home judge of one domain) answers with `--by`'s scores
  (the length-hacked RM) under its own name (`models.rm_swap`), with the defaults: `round.retest` 0.25 and the
  change detector (`bandit.drift_threshold` 0.5);
- `swap, no retest`: the same with `round.retest: 0` (settled probes are never scored again);
- `swap, no detector`: the same with `bandit.drift_threshold: null`;
- `swap, retest 0.15` and `swap, retest 0.1`: the same with a smaller re-test share;
- `swap, no relearn`: the same with `round.relearn_rounds: 0` (after a forget the router learns again one pick at a
  time, not from every RM in a warm-up round);
- `no swap` and `no swap, no retest`: the cost of the re-test budget where nothing drifts (probes sampled and
  scored, RM forward passes, seconds per round) and what it does to accuracy.

Branching from one checkpoint makes the branches of a seed paired: they differ only from the swap on. Prints and
writes (`--out`: drift.md, drift.json) per branch: the share of the swapped domain's picks that go to the swapped
RM and to the new best (the best of the other RMs on that domain by the world's accuracy table) in each block of
5 rounds after the swap, the round the router forgot the swapped RM, the swapped domain's test accuracy at each
evaluation, and the cost per round.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BRANCHES = {  # name: (swap?, overrides)
    "swap": (True, []),
    "swap, no retest": (True, ["round.retest=0"]),
    "swap, no detector": (True, ["bandit.drift_threshold=null"]),
    "swap, no relearn": (True, ["round.relearn_rounds=0"]),
    "swap, retest 0.15": (True, ["round.retest=0.15"]),
    "swap, retest 0.1": (True, ["round.retest=0.1"]),
    "no swap": (False, []),
    "no swap, no retest": (False, ["round.retest=0"]),
}


def _lines(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]


def run_seed(seed: int, args) -> dict:
    from laser.config import load_config
    from laser.parts import resolve_models
    from laser.training.run import train

    base_sets = [f"output_dir={args.runs}", f"seed={seed}", "eval_every=10", *args.set]
    base = load_config(ROOT / args.config, [*base_sets, f"name=base-s{seed}", f"rounds={args.swap_round}",
                                             f"checkpoint_every={args.swap_round}"])
    _, _, table, _ = resolve_models(base)
    # table: {rm: {domain: pairwise accuracy on the policy's own samples}}
    # the swapped domain: given, else the swapped RM's home (its best-measured domain)
    domain = args.domain or max(table[args.rm], key=table[args.rm].get)
    new_best = max((r for r in table if r != args.rm), key=lambda r: table[r][domain])
    if not (base.run_dir / "checkpoints" / "latest").is_file():
        shutil.rmtree(base.run_dir, ignore_errors=True)
        train(base, progress=False)
    result = {"seed": seed, "domain": domain, "new_best": new_best, "branches": {}}
    for name, (swap, sets) in BRANCHES.items():
        if args.only and name not in args.only:
            continue
        tag = name.replace(", ", "-").replace(" ", "-")
        config = load_config(ROOT / args.config, [
            *base_sets, f"name={tag}-s{seed}", f"rounds={args.rounds}", f"checkpoint_every={args.rounds}", *sets,
            *([f"models.rm_swap.round={args.swap_round}", f"models.rm_swap.rm={args.rm}",
               f"models.rm_swap.by={args.by}"] if swap else [])])
        if not any(x["type"] == "eval" and x["round"] == args.rounds for x in
                   (_lines(config.run_dir) if (config.run_dir / "metrics.jsonl").exists() else [])):
            shutil.rmtree(config.run_dir, ignore_errors=True)
            shutil.copytree(base.run_dir, config.run_dir, ignore=shutil.ignore_patterns(".lock"))
            t0 = time.perf_counter()
            train(config, progress=False, resume=True)
            print(f"seed {seed} {name}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
        result["branches"][name] = summarize(_lines(config.run_dir), args, domain, new_best)
    return result


def summarize(lines: list[dict], args, domain: str, new_best: str) -> dict:
    rounds = [x for x in lines if x["type"] == "round" and x["round"] > args.swap_round]
    evals = {x["round"]: x["accuracy"].get(domain) for x in lines if x["type"] == "eval"}

    def share(rows, rm):
        total = sum(sum(r.values()) for r in rows)
        return None if total == 0 else sum(r.get(rm, 0) for r in rows) / total

    picks = [x.get("picks_by_domain", {}).get(domain, {}) for x in rounds]
    blocks = {f"{r + 1}-{min(r + 5, args.rounds)}": picks[r - args.swap_round:r - args.swap_round + 5]
              for r in range(args.swap_round, args.rounds, 5)}
    forgot = [x["round"] for x in rounds if args.rm in x.get("router_forgot", [])]
    probes = [x.get("probes", {}) for x in rounds]
    return {
        "picks_per_round": picks,
        "swapped_share": {k: share(v, args.rm) for k, v in blocks.items()},
        "new_best_share": {k: share(v, new_best) for k, v in blocks.items()},
        "forgot_at": forgot,
        "domain_accuracy": evals,
        "mean_accuracy": {x["round"]: x["mean_accuracy"] for x in lines if x["type"] == "eval"},
        "probes_sampled_per_round": float(np.mean([p.get("sampled", 0) for p in probes])),
        "probes_retested_per_round": float(np.mean([p.get("retested", 0) for p in probes])),
        "rm_forward_per_round": float(np.mean([x.get("rm_forward", 0) for x in rounds])),
        "seconds_per_round": float(np.mean([sum(x["seconds"].values()) for x in rounds])),
    }


def _mean(values) -> str:
    v = [x for x in values if x is not None]
    if not v:
        return "-"
    if len(v) == 1:
        return f"{v[0]:.2f}"
    from laser.report import mean_ci

    m, h = mean_ci(v)
    return f"{m:.2f} ± {h:.2f}"


def report(results: list[dict], args) -> str:
    names = [n for n in BRANCHES if all(n in r["branches"] for r in results)]
    first = results[0]
    out = [f"# Drift: `{args.rm}` answers as `{args.by}` from round {args.swap_round}",
           "", "`python benchmarks/drift.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
           + f"`; the domain followed: `{first['domain']}`, "
           f"its new best: " + ", ".join(sorted({f"`{r['new_best']}`" for r in results})) + " (by the world's "
           "accuracy table). Mean ± 95% CI over seeds.", ""]
    blocks = list(first["branches"][names[0]]["swapped_share"])
    out += ["## Picks of the swapped domain after the swap", "",
            "| branch | " + " | ".join(f"to `{args.rm}`, rounds {b}" for b in blocks) + " | "
            + " | ".join(f"to the new best, rounds {b}" for b in blocks) + " | forgot at (per seed) |",
            "|---" * (2 * len(blocks) + 2) + "|"]
    for n in names:
        rows = [r["branches"][n] for r in results]
        out.append(f"| {n} | " + " | ".join(_mean([x["swapped_share"][b] for x in rows]) for b in blocks) + " | "
                   + " | ".join(_mean([x["new_best_share"][b] for x in rows]) for b in blocks) + " | "
                   + ", ".join(str(x["forgot_at"][:1][0]) if x["forgot_at"] else "never" for x in rows) + " |")
    eval_rounds = sorted({int(k) for r in results for n in names for k in r["branches"][n]["domain_accuracy"]})
    out += ["", "## Test accuracy of the swapped domain (and mean over domains)", "",
            "| branch | " + " | ".join(f"round {k}" for k in eval_rounds) + " | mean, last round |",
            "|---" * (len(eval_rounds) + 2) + "|"]
    for n in names:
        rows = [r["branches"][n] for r in results]
        acc = [{int(k): v for k, v in x["domain_accuracy"].items()} for x in rows]
        last = [{int(k): v for k, v in x["mean_accuracy"].items()}.get(args.rounds) for x in rows]
        out.append(f"| {n} | " + " | ".join(_mean([a.get(k) for a in acc]) for k in eval_rounds) + " | "
                   + _mean(last) + " |")
    out += ["", f"## Cost per round, rounds {args.swap_round + 1}-{args.rounds}", "",
            "| branch | probes sampled | of them re-tested | RM forward passes | seconds |", "|---|---|---|---|---|"]
    for n in names:
        rows = [r["branches"][n] for r in results]
        out.append(f"| {n} | " + " | ".join(_mean([x[k] for x in rows]) for k in (
            "probes_sampled_per_round", "probes_retested_per_round", "rm_forward_per_round",
            "seconds_per_round")) + " |")
    out += ["", "## Picks of the swapped domain per round (seed " + str(first["seed"]) + ")", ""]
    for n in names:
        picks = first["branches"][n]["picks_per_round"]
        out.append(f"- {n}: " + "; ".join(
            f"{args.swap_round + 1 + i}: " + ",".join(f"{k} {v}" for k, v in sorted(p.items()) if v)
            for i, p in enumerate(picks)))
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/demo.yaml")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--swap-round", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--rm", default="rotator", help="the RM that gets worse")
    ap.add_argument("--by", default="verbose", help="whose scores it answers with from the swap on")
    ap.add_argument("--domain", default=None, help="the domain whose picks are followed (default: the swapped RM's "
                    "best-measured one; name one where the router relies on it, e.g. on a world with a generalist)")
    ap.add_argument("--only", nargs="+", choices=list(BRANCHES), help="run only these branches")
    ap.add_argument("--set", nargs="*", default=[], help="config overrides for every run (key=value)")
    ap.add_argument("--runs", type=Path, default=ROOT / "runs" / "drift", help="where the runs are written")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "drift")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results = [run_seed(s, args) for s in args.seeds]
    text = report(results, args)
    (args.out / "drift.json").write_text(json.dumps(results, indent=1) + "\n")
    (args.out / "drift.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
