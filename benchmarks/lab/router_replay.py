"""How fast does each router learn which RM to trust? A replay of the router's first rounds, in seconds.

Collects, once, at the world's SFT policy: the validation prompts' samples (n = round.n, twice, with two
seeds), every RM's rerank gain on every informative one (`laser.training.feedback.rerank_gain`), and the
contexts of the validation prompts and of a random draw of training prompts. Then replays the router's
loop as `Trainer.run_round` runs it, for each bandit policy and seed: each round draws
`round.rerank_prompts` probes (the trainer's seeded draw), the first `round.rerank_warmup` rounds observe
every RM on every informative probe, later rounds observe the RM the policy selects; then 32 training
contexts are routed without exploration, and the share sent to the oracle's RM of their domain is recorded.
A probe where the router is sure of its pick is not observed (`round.rerank_skip_settled`), as in the trainer.

The policy does not train in the replay (its contexts and samples stay the SFT's), so it measures the
router alone, where it matters most: the first rounds, when a misrouted instance trains the policy on
pairs that a wrong judge built.

    python benchmarks/lab/router_replay.py                       # the default world
    python benchmarks/lab/router_replay.py --set models.embedded_recipe=configs/worlds/alt.yaml
    python benchmarks/lab/router_replay.py --probe-rms 1 2 3 5 \
        --set models.embedded_recipe=configs/worlds/noisy-judges.yaml
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from laser.config import RunConfig, load_config
from laser.strategies import Batch, make_strategy

POLICIES = [  # (label, policy, params)
    ("linucb", "linucb", {"alpha": 1.0}),
    ("lints", "lints", {}),
    ("kernel_ucb", "kernel_ucb", {}),
    ("kernel_ucb length_scale=0.25", "kernel_ucb", {"length_scale": 0.25}),
    ("kernel_ucb length_scale=0.5", "kernel_ucb", {"length_scale": 0.5}),
]


def informative(examples, texts) -> list[int]:
    """The indices of the examples whose samples `texts` are partly right: the only ones that tell RMs apart."""
    from laser.tasks.checkers import check

    return [j for j, (ex, t) in enumerate(zip(examples, texts, strict=True))
            if 0 < sum(check(ex, x) for x in t) < len(t)]


def every_rm_gains(tr, probes, cands) -> np.ndarray:
    """Every RM's rerank gain on each probe (its candidates `cands`), as the warm-up measures it: [probes, K]."""
    from laser.strategies.scoring import CandidateTable, route_and_score
    from laser.training.feedback import rerank_gain

    table = CandidateTable.of([ex.prompt for ex in probes], cands)
    batch = Batch(round=0, domains=[ex.domain for ex in probes])
    given = np.zeros((len(probes), 1))  # each RM's assignment is given: no context is read
    out = np.zeros((len(probes), tr.strategy.k))
    for arm in range(tr.strategy.k):
        one = tr.strategy._one_per_instance(np.full(len(probes), arm))
        out[:, arm] = rerank_gain(probes, table, route_and_score(tr.strategy, tr.rms, tr.normalizer, table, given,
                                                                 batch, assignment=one).combined)[0]
    return out


def collect(config: RunConfig, train_draw: int = 800) -> dict:
    """Contexts and every RM's rerank gain per informative validation prompt (two sampling seeds)."""
    from laser.parts import build_trainer

    tr = build_trainer(config)
    s, val, k = tr.settings, tr.validation, tr.strategy.k
    data = {"rms": list(tr.rms), "oracle": tr.oracle, "val_domains": [ex.domain for ex in val], "reps": []}
    for rep in range(2):
        sampled = tr.engine.sample([ex.prompt for ex in val], n=s.n, temperature=s.temperature, top_p=s.top_p,
                                   max_new_tokens=s.max_new_tokens, seed=1000 + rep)
        texts = [sampled.texts(j) for j in range(len(val))]
        ctx = tr.embedder.embed(sampled.prompts)
        mixed = informative(val, texts)
        gains = np.full((len(val), k), np.nan)
        if mixed:
            gains[mixed] = every_rm_gains(tr, [val[j] for j in mixed], [texts[j] for j in mixed])
        data["reps"].append({"contexts": ctx, "gains": gains})
    pick = np.random.default_rng(5).permutation(len(tr.train))[:train_draw]
    train = [tr.train[i] for i in pick]
    prompts = tr.engine.sample([ex.prompt for ex in train], n=1, max_new_tokens=1, seed=1).prompts  # as formatted
    data["train_contexts"], data["train_domains"] = tr.embedder.embed(prompts), [ex.domain for ex in train]
    tr.engine.close()
    return data


def replay(data: dict, policy: str, params: dict, seed: int, rounds: int, warmup: int, probes: int,
           center: bool, skip_settled: bool = False, probe_rms: int = 1) -> tuple[np.ndarray, int]:
    """Oracle match of the routed training contexts, per round; and the (probe, RM) observations after the
    warm-up (what they cost in RM passes, in probes' worth)."""
    rms, oracle = data["rms"], data["oracle"]
    tctx, tdom = data["train_contexts"], data["train_domains"]
    st = make_strategy(f"laser:{policy}", rms, dim=tctx.shape[1], seed=seed, center=center,
                       normalize_feedback=False, **params)
    rng, match, observed = np.random.default_rng(seed + 99), [], 0
    for rnd in range(rounds):
        rep = data["reps"][(rnd + seed) % 2]
        ctx, gains = rep["contexts"], rep["gains"]
        pick = np.random.default_rng([seed, 7, rnd]).choice(len(ctx), size=probes, replace=False)
        pick = [j for j in sorted(pick) if not np.isnan(gains[j, 0])]
        if pick:
            x, batch = ctx[pick], Batch(round=rnd, domains=[data["val_domains"][j] for j in pick])
            if rnd < warmup:
                for arm in range(len(rms)):
                    st.observe(x, st._one_per_instance(np.full(len(pick), arm)), gains[pick, arm])
            else:
                a = st.assign(x, batch)
                keep = np.ones(len(pick), dtype=bool)
                if skip_settled and a.separation is not None:  # the router is sure of its pick: not scored
                    keep = ~(a.separation > 0)
                if keep.any():
                    a, x, rows = a.subset(keep), x[keep], np.array(pick)[keep]
                    # The pick, and with `probe_rms` > 1 the RMs not ruled out there (`round.rerank_rms`).
                    every = np.ones(len(rows), dtype=bool)
                    st.observe_all([(x[c], b.subset(c), gains[rows[c], b.arms[c]])
                                    for b, c in [(a, every), *a.runners_up(probe_rms - 1)]])
                    observed += len(rows) + sum(int(c.sum()) for _, c in a.runners_up(probe_rms - 1))
        ti = rng.choice(len(tctx), 32, replace=False)
        arms = st.assign(tctx[ti], Batch(round=rnd, explore=False)).arms
        match.append(np.mean([rms[k] == oracle[tdom[i]] for k, i in zip(arms, ti, strict=True)]))
    return np.array(match), observed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="run config overrides")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--cache", type=Path, default=None, help="keep the collected data in this .npz file")
    ap.add_argument("--probe-rms", type=int, nargs="+", default=[1],
                    help="RMs per probe after the warm-up (round.rerank_rms), one table row per value")
    args = ap.parse_args()
    config = load_config(None, ["name=router-replay", "output_dir=runs/router-replay", *args.set])
    if args.cache is not None and args.cache.exists():
        z = np.load(args.cache, allow_pickle=False)
        meta = json.loads(str(z["meta"]))
        data = {**meta, "train_contexts": z["train_contexts"],
                "reps": [{"contexts": z[f"contexts{r}"], "gains": z[f"gains{r}"]} for r in range(2)]}
    else:
        data = collect(config)
        if args.cache is not None:
            meta = {k: data[k] for k in ("rms", "oracle", "val_domains", "train_domains")}
            np.savez(args.cache, meta=json.dumps(meta), train_contexts=data["train_contexts"],
                     **{f"{n}{r}": rep[n] for r, rep in enumerate(data["reps"]) for n in ("contexts", "gains")})
    g = np.vstack([rep["gains"] for rep in data["reps"]])
    doms = np.array(data["val_domains"] * 2)
    print(f"{len(data['val_domains'])} validation prompts; informative: "
          f"{[int((~np.isnan(rep['gains'][:, 0])).sum()) for rep in data['reps']]} (two sampling seeds)")
    print("\nmean rerank gain per (domain, RM) at the SFT policy:\n")
    print("| domain | " + " | ".join(data["rms"]) + " |\n|---|" + "---|" * len(data["rms"]))
    for d in sorted(set(doms)):
        rows = g[(doms == d) & ~np.isnan(g[:, 0])]
        print(f"| {d} | " + " | ".join(f"{v:+.2f}" for v in rows.mean(0)) + " |")
    r, w, p, b = config.round.rerank_prompts, config.round.rerank_warmup, args.rounds, config.round.rerank_skip_settled
    print(f"\noracle match of the routed training prompts, mean of {args.seeds} seeds (probes {r} a round, "
          f"warm-up {w} rounds, settled probes skipped: {b}, centred contexts: {config.bandit.center}):\n")
    print(f"| policy | rounds 0-4 | rounds 5-9 | rounds 10-{p - 1} | round 0 | round 1 | round 2 |")
    print("|---|---|---|---|---|---|---|")
    for (label, policy, params), n in [(pol, n) for pol in POLICIES for n in args.probe_rms]:
        runs = [replay(data, policy, params, s, p, w, r, config.bandit.center, b, n) for s in range(args.seeds)]
        m = np.array([match for match, _ in runs])
        if args.probe_rms != [1]:
            label += f", {n} RMs per probe ({np.mean([o for _, o in runs]):.0f} observations after the warm-up)"
        print(f"| {label} | {m[:, :5].mean():.0%} | {m[:, 5:10].mean():.0%} | {m[:, 10:].mean():.0%} | "
              f"{m[:, 0].mean():.0%} | {m[:, 1].mean():.0%} | {m[:, 2].mean():.0%} |", flush=True)


if __name__ == "__main__":
    main()
