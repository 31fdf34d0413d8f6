"""Contextual-bandit throughput and regret: this project's LinUCB/LinTS vs mabwiser vs the LASeR code's step.

Same synthetic linear stream and seeds for every implementation, in one process:
  K arms with unit-norm theta_k, contexts x ~ N(0, I/d), reward x.theta_k + N(0, 0.1^2).
Reports select+update instances per second, one instance at a time and in batches of 256, for
(K, d) in {(4, 64), (8, 64), (4, 1024), (4, 4096)}, plus cumulative regret where every implementation
ran the same number of steps.

Reproduce:  .venv/bin/python benchmarks/bench_bandits.py --json benchmarks/results/bandits.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import bandits  # noqa: E402

NOISE = 0.1
BATCH = 256
# Thompson sampling's posterior scale belongs on the scale of the reward noise (0.1 here): at the
# library default 0.25, made for rewards normalized to [0, 1], it over-explores this stream. Both
# LinTS implementations get the same value.
LINTS_ALPHA = 0.03


@dataclass
class Row:
    impl: str
    K: int
    d: int
    mode: str  # "one" or "batch"
    steps: int  # select+update calls
    instances: int
    seconds: float
    per_second: float
    regret: float | None  # cumulative, over `instances`
    full_stream: bool  # ran the config's whole stream (regret comparable)


class Stream:
    """A seeded synthetic linear bandit."""

    def __init__(self, k: int, d: int, n: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        theta = rng.normal(size=(k, d))
        self.theta = theta / np.linalg.norm(theta, axis=1, keepdims=True)
        self.x = rng.normal(size=(n, d)) / np.sqrt(d)
        self.expected = self.x @ self.theta.T  # (n, K)
        self.rewards = self.expected + NOISE * rng.normal(size=(n, k))

    def regret(self, rows: np.ndarray, arms: np.ndarray) -> float:
        e = self.expected[rows]
        return float((e.max(axis=1) - e[np.arange(len(rows)), arms]).sum())


# ----- implementations: each returns step(x) -> arms, and learns from the stream's rewards ---------
Step = Callable[[np.ndarray, np.ndarray], np.ndarray]


def ours(name: str, k: int, d: int, **params) -> Step:
    policy = bandits.make_policy(name, k, d, seed=0, **params)

    def step(x: np.ndarray, rewards: np.ndarray) -> np.ndarray:
        arms = policy.select(x).arms
        policy.update(x, arms, rewards[np.arange(len(arms)), arms])
        return arms

    return step


def mabwiser(kind: str, k: int, d: int, alpha: float) -> Step:
    from mabwiser.mab import MAB, LearningPolicy

    lp = LearningPolicy.LinUCB(alpha=alpha, l2_lambda=1.0) if kind == "ucb" else \
        LearningPolicy.LinTS(alpha=alpha, l2_lambda=1.0)
    mab = MAB(arms=list(range(k)), learning_policy=lp, seed=0)
    # mabwiser cannot predict before a first fit: give it nothing to learn from (zero rows are not
    # allowed), so fit each arm once on a zero context with reward 0, which leaves A and b unchanged.
    mab.fit(list(range(k)), [0.0] * k, np.zeros((k, d)))

    def step(x: np.ndarray, rewards: np.ndarray) -> np.ndarray:
        pred = mab.predict(x)
        arms = np.atleast_1d(np.asarray(pred))
        mab.partial_fit(arms.tolist(), rewards[np.arange(len(arms)), arms].tolist(), x)
        return arms

    return step


def laser_code_linucb(k: int, d: int, alpha: float) -> Step:
    """The official LASeR code's LinUCB step: a full inverse of every arm's A on every selection."""
    a = [np.eye(d) for _ in range(k)]
    b = [np.zeros(d) for _ in range(k)]

    def step(x: np.ndarray, rewards: np.ndarray) -> np.ndarray:
        arms = np.empty(len(x), dtype=np.int64)
        for i, c in enumerate(x):  # the code handles one query at a time
            ucb = []
            for arm in range(k):
                a_inv = np.linalg.inv(a[arm])
                theta = a_inv @ b[arm]
                ucb.append(theta @ c + alpha * np.sqrt(c @ a_inv @ c))
            arm = int(np.argmax(ucb))
            a[arm] += np.outer(c, c)
            b[arm] += rewards[i, arm] * c
            arms[i] = arm
        return arms

    return step


def run(impl: str, make: Callable[[], Step], stream: Stream, k: int, d: int, mode: str, steps: int,
        full_steps: int, repeats: int = 3, min_seconds: float = 0.0, max_repeats: int = 15) -> Row:
    """Run the stream from a fresh policy `repeats` times, and more (up to `max_repeats`) until
    `min_seconds` were measured; keep the fastest, least disturbed pass (as timeit does).

    Every pass sees the same stream and seeds, so arms and regret are the same in each pass.
    """
    n = 1 if mode == "one" else BATCH
    seconds, total, passes = np.inf, 0.0, 0
    while passes < repeats or (total < min_seconds and passes < max_repeats):
        passes += 1
        step = make()
        arms_all = []
        t0 = time.perf_counter()
        for s in range(steps):
            lo = s * n
            arms_all.append(step(stream.x[lo:lo + n], stream.rewards[lo:lo + n]))
        elapsed = time.perf_counter() - t0
        seconds, total = min(seconds, elapsed), total + elapsed
    arms = np.concatenate(arms_all)
    rows = np.arange(len(arms))
    return Row(impl, k, d, mode, steps, len(arms), seconds, len(arms) / seconds,
               stream.regret(rows, arms), steps == full_steps)


# (K, d) -> steps per mode for fast implementations, and for the slow ones (full inverses per step).
CONFIGS = {
    (4, 64): {"one": (3000, 3000), "batch": (20, 20)},
    (8, 64): {"one": (3000, 3000), "batch": (20, 20)},
    (4, 1024): {"one": (200, 40), "batch": (6, 2)},
    (4, 4096): {"one": (30, 2), "batch": (2, 1)},
}
QUICK = {
    (4, 64): {"one": (500, 500), "batch": (4, 4)},
    (8, 64): {"one": (500, 500), "batch": (4, 4)},
    (4, 1024): {"one": (40, 10), "batch": (2, 1)},
}


def implementations(k: int, d: int, mode: str) -> list[tuple[str, Callable[[], Step], bool]]:
    """(name, factory, slow) for one configuration."""
    alpha = 1.0
    impls = [
        ("ours LinUCB", lambda: ours("linucb", k, d, alpha=alpha), False),
        ("ours LinTS", lambda: ours("lints", k, d, alpha=LINTS_ALPHA), False),
        ("ours LinTS marginal", lambda: ours("lints", k, d, alpha=LINTS_ALPHA, sampler="marginal"), False),
    ]
    if d >= 1024:
        impls.append(("ours LinUCB float32", lambda: ours("linucb", k, d, alpha=alpha, dtype="float32"), False))
    impls += [
        ("mabwiser LinUCB", lambda: mabwiser("ucb", k, d, alpha), True),
        ("mabwiser LinTS", lambda: mabwiser("ts", k, d, LINTS_ALPHA), True),
    ]
    if not (mode == "batch" and d >= 4096):  # 256 full-inverse queries at d=4096: ~15 minutes
        impls.append(("LASeR code LinUCB", lambda: laser_code_linucb(k, d, alpha), True))
    return impls


def float32_error(d: int = 1024, k: int = 1, steps: int = 2000) -> dict:
    """Max relative error of float32 vs float64 LinUCB scores after `steps` one-at-a-time updates."""
    s = Stream(k, d, steps + 64, seed=1)
    p64 = bandits.LinUCB(k, d, dtype="float64")
    p32 = bandits.LinUCB(k, d, dtype="float32")
    for i in range(steps):
        x, r = s.x[i:i + 1], s.rewards[i:i + 1, :1].ravel()
        p64.update(x, [0], r)
        p32.update(x, [0], r)
    test = s.x[steps:]
    a, b = p64.select(test).scores, p32.select(test).scores
    return {"d": d, "updates": steps, "max_abs_err": float(np.abs(a - b).max()),
            "max_rel_err": float((np.abs(a - b) / np.abs(a)).max())}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=Path, help="write every measured number here")
    ap.add_argument("--quick", action="store_true", help="small configs only (about 1 minute)")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    configs = QUICK if args.quick else CONFIGS
    results: list[Row] = []
    for (k, d), modes in configs.items():
        for mode, (fast_steps, slow_steps) in modes.items():
            n = 1 if mode == "one" else BATCH
            stream = Stream(k, d, fast_steps * n, seed=0)
            for impl, make, slow in implementations(k, d, mode):
                steps = slow_steps if slow else fast_steps
                # One pass for the slow peers at large d (minutes each); otherwise the best of at
                # least 3 passes and of 2 s of measuring, so that short passes are not one noisy moment.
                repeats = 1 if slow and d >= 1024 else 3
                row = run(impl, make, stream, k, d, mode, steps, fast_steps, repeats,
                          min_seconds=0.0 if slow and d >= 1024 else 2.0)
                results.append(row)
                print(f"  K={k:<2} d={d:<5} {mode:5} {impl:22} {row.per_second:12,.1f}/s"
                      f"  ({row.instances} instances, {row.seconds:.2f} s)", flush=True)
    out = {"machine": f"{platform.machine()} {platform.processor() or ''} cpus={__import__('os').cpu_count()}",
           "python": platform.python_version(), "numpy": np.__version__,
           "rows": [asdict(r) for r in results], "ratios": ratios(results),
           "float32": float32_error() if not args.quick else None,
           "command": "python benchmarks/bench_bandits.py" + (" --quick" if args.quick else "")}
    print_table(results, out)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1))
        print(f"\nwrote {args.json}")
    return out


def ratios(rows: list[Row]) -> list[dict]:
    """Throughput of ours over each peer and regret relative to mabwiser LinUCB, per (K, d, mode)."""
    out = []
    by = {(r.impl, r.K, r.d, r.mode): r for r in rows}
    for (impl, k, d, mode), r in by.items():
        if not impl.startswith("ours"):
            continue
        for peer in ("mabwiser LinUCB", "mabwiser LinTS", "LASeR code LinUCB"):
            p = by.get((peer, k, d, mode))
            if p is None:
                continue
            entry = {"ours": impl, "peer": peer, "K": k, "d": d, "mode": mode,
                     "speedup": r.per_second / p.per_second}
            if r.full_stream and p.full_stream and p.regret:
                entry["regret_ratio"] = r.regret / p.regret
            out.append(entry)
    return out


def print_table(rows: list[Row], out: dict) -> None:
    print("\n| K | d | mode | implementation | select+update / s | x mabwiser LinUCB | x LASeR code | regret |")
    print("|---|---|---|---|---:|---:|---:|---:|")
    by = {(r.impl, r.K, r.d, r.mode): r for r in rows}
    for r in rows:
        mab = by.get(("mabwiser LinUCB", r.K, r.d, r.mode))
        ref = by.get(("LASeR code LinUCB", r.K, r.d, r.mode))
        x_mab = f"{r.per_second / mab.per_second:.1f}x" if mab else "-"
        x_ref = f"{r.per_second / ref.per_second:.1f}x" if ref else "-"
        reg = f"{r.regret:.1f}" if r.full_stream else f"({r.instances} inst.)"
        print(f"| {r.K} | {r.d} | {r.mode} | {r.impl} | {r.per_second:,.1f} | {x_mab} | {x_ref} | {reg} |")
    print("\nNote: mabwiser's LinTS deep-copies each arm's model with its RNG on fit, so all arms draw the\n"
          "same normal variates (correlated noise, less exploration than Thompson sampling); ours draws\n"
          "independently per arm (tests/test_bandits_linear.py).")
    f32 = out.get("float32")
    if f32:
        print(f"\nfloat32 state at d={f32['d']} after {f32['updates']} updates: max |score error| "
              f"{f32['max_abs_err']:.2e} (relative {f32['max_rel_err']:.2e}) vs float64")


if __name__ == "__main__":
    main()
