"""A fast selection simulator: every strategy on synthetic instances through the `RewardStrategy` interface.

Each instance has a domain and a context vector (its domain's centroid plus noise, L2-normalized, as
the policy's embeddings are) and `m` candidates with a latent quality q ~ N(0, 1) and a length
l ~ N(0, 1) that has nothing to do with quality. K simulated RMs observe the candidates:

    score_k = gain_k[domain] * q + length_k * l + noise_k[domain] * eps      (eps ~ N(0, 1))

The default lineup has one specialist per domain (gain 1, noise 0.6 at home: 83% pairwise accuracy;
gain 0.2, noise 1 elsewhere: 56%), a length-hacked RM (gain 0.2, length 1: 56%) and an adversarial
one (gain -0.4: 29%). A round
routes a batch of instances (`strategy.assign`), the assigned RMs score its candidates (every RM's
noise is drawn for every candidate, so two strategies on the same seed see the same world), the scores
are normalized per RM and combined (`strategy.combine`), the best and worst candidates become the pair,
and the bandit is rewarded with the chosen candidate's quality above the instance's mean plus feedback
noise (`strategy.observe`: the stand-in for the validation gain of the training loop).

Reported per strategy: the mean quality of the chosen candidates, the selection regret against the
oracle (the best RM of each domain, same draws), pair accuracy (the chosen candidate is truly better
than the rejected one), RM scorings per instance, and the routing time per decision.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from laser.rewards import ScoreNormalizer
from laser.strategies import Batch, OracleStrategy, RewardStrategy, make_strategy


@dataclass
class SimRM:
    """One simulated reward model: per-domain signal gain and noise, and a weight on length."""

    name: str
    gain: np.ndarray
    noise: np.ndarray
    length: float = 0.0


@dataclass
class World:
    """Domains with context centroids, and the RMs that judge them."""

    domains: list[str]
    rms: list[SimRM]
    centroids: np.ndarray               # (D, dim)
    candidates: int = 8
    context_noise: float = 0.5
    feedback_noise: float = 0.5

    @property
    def dim(self) -> int:
        return self.centroids.shape[1]

    @property
    def rm_names(self) -> list[str]:
        return [rm.name for rm in self.rms]

    def drifted(self) -> World:
        """The same world with the specialists' domains rotated by one (the best RM per domain changes)."""
        spec = [i for i, rm in enumerate(self.rms) if rm.name.startswith("specialist")]
        rms = list(self.rms)
        for a, b in zip(spec, spec[1:] + spec[:1], strict=True):
            rms[b] = SimRM(self.rms[b].name, self.rms[a].gain.copy(), self.rms[a].noise.copy(), self.rms[a].length)
        return World(self.domains, rms, self.centroids, self.candidates, self.context_noise, self.feedback_noise)

    def accuracy_table(self, pairs: int = 20_000, seed: int = 12345) -> dict[str, dict[str, float]]:
        """Each RM's pairwise accuracy per domain, measured on fresh pairs (the oracle's table)."""
        rng = np.random.default_rng(seed)
        out: dict[str, dict[str, float]] = {}
        q, ln, eps = rng.standard_normal((3, pairs, 2))
        for rm in self.rms:
            out[rm.name] = {}
            for j, d in enumerate(self.domains):
                s = rm.gain[j] * q + rm.length * ln + rm.noise[j] * eps
                out[rm.name][d] = float(np.mean((s[:, 0] > s[:, 1]) == (q[:, 0] > q[:, 1])))
        return out


def default_world(domains: int = 4, extra_rms: int = 0, dim: int = 16, candidates: int = 8,
                  seed: int = 0) -> World:
    """One specialist per domain, a length-hacked RM, an adversarial RM, and `extra_rms` random generalists."""
    rng = np.random.default_rng(seed)
    names = [f"d{j}" for j in range(domains)]
    rms = []
    for j in range(domains):
        gain, noise = np.full(domains, 0.2), np.full(domains, 1.0)
        gain[j], noise[j] = 1.0, 0.6
        rms.append(SimRM(f"specialist{j}", gain, noise))
    rms.append(SimRM("length_hacked", np.full(domains, 0.2), np.full(domains, 0.5), length=1.0))
    rms.append(SimRM("adversarial", np.full(domains, -0.4), np.full(domains, 0.5)))
    for i in range(extra_rms):
        rms.append(SimRM(f"generalist{i}", rng.uniform(0.1, 0.6, domains), rng.uniform(0.6, 1.2, domains)))
    centroids = rng.standard_normal((domains, dim))
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    return World(names, rms, centroids, candidates)


@dataclass
class SimResult:
    """What one strategy did over a stream of instances (per-instance arrays kept for paired comparisons)."""

    strategy: str
    chosen_quality: np.ndarray
    best_quality: np.ndarray
    pair_correct: np.ndarray
    rm_calls: int
    route_seconds: float
    picks: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.chosen_quality)

    def summary(self, part: slice = slice(None)) -> dict:
        return {"strategy": self.strategy, "instances": int(len(self.chosen_quality[part])),
                "chosen_quality": float(self.chosen_quality[part].mean()),
                "regret_to_best_candidate": float((self.best_quality[part] - self.chosen_quality[part]).mean()),
                "pair_accuracy": float(self.pair_correct[part].mean()),
                "rm_calls_per_instance": self.rm_calls / self.n,
                "us_per_decision": 1e6 * self.route_seconds / self.n}


def simulate(strategy: RewardStrategy, world: World, instances: int = 100_000, batch: int = 256, seed: int = 0,
             score_noise: float = 0.0, drift_at: float | None = None, normalizer: str = "zscore") -> SimResult:
    """Run `strategy` on `instances` simulated instances in rounds of `batch` (see the module docstring).

    `score_noise`: extra Gaussian noise (std) on every RM score; `drift_at`: the fraction of the stream
    after which the world's specialists rotate domains.
    """
    if list(strategy.rm_names) != world.rm_names:
        raise ValueError(f"the strategy routes between {list(strategy.rm_names)}, the world has {world.rm_names}")
    rng = np.random.default_rng(seed)
    norm = ScoreNormalizer(normalizer)
    m, k = world.candidates, len(world.rms)
    gain = np.stack([rm.gain for rm in world.rms])            # (K, D)
    noise = np.stack([rm.noise for rm in world.rms])
    length = np.array([rm.length for rm in world.rms])
    drifted = world.drifted() if drift_at is not None else None
    drifted_gain = np.stack([rm.gain for rm in drifted.rms]) if drifted is not None else None
    chosen_q, best_q, correct = [], [], []
    calls, route_s = 0, 0.0
    picks: dict[str, dict[str, int]] = {d: dict.fromkeys(world.rm_names, 0) for d in world.domains}
    instance = np.repeat(np.arange(batch), m)
    done, rnd = 0, 0
    while done < instances:
        n = min(batch, instances - done)
        if drifted is not None and done >= drift_at * instances and gain is not drifted_gain:
            gain, noise = drifted_gain, np.stack([rm.noise for rm in drifted.rms])
            if isinstance(strategy, OracleStrategy):  # the oracle knows the world, before and after the drift
                strategy.best_by_domain = OracleStrategy.from_accuracy(world.rm_names,
                                                                       drifted.accuracy_table()).best_by_domain
        dom = rng.integers(len(world.domains), size=n)
        x = world.centroids[dom] + world.context_noise * rng.standard_normal((n, world.dim)) / np.sqrt(world.dim)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        q, ln = rng.standard_normal((2, n, m))
        eps = rng.standard_normal((k, n, m))
        raw = gain[:, dom, None] * q + length[:, None, None] * ln + noise[:, dom, None] * eps
        if score_noise:
            raw = raw + score_noise * rng.standard_normal(raw.shape)
        fb_noise = world.feedback_noise * rng.standard_normal(n)
        names = [world.domains[j] for j in dom]
        t0 = time.perf_counter()
        assignment = strategy.assign(x, Batch(round=rnd, domains=names))
        route_s += time.perf_counter() - t0
        inst = instance[:n * m]
        scores = {}
        for j, rm in enumerate(world.rm_names):
            who = assignment.mask[:, j]
            if who.any():
                v = np.full(n * m, np.nan)
                rows = np.repeat(who, m)
                v[rows] = norm(rm, raw[j][who].reshape(-1))
                scores[rm] = v
                calls += int(rows.sum())
        combined = strategy.combine(scores, assignment, inst).reshape(n, m)
        combined = np.where(np.isfinite(combined), combined, -np.inf)
        best, worst = combined.argmax(axis=1), np.where(np.isfinite(combined), combined, np.inf).argmin(axis=1)
        rows = np.arange(n)
        cq = q[rows, best]
        chosen_q.append(cq)
        best_q.append(q.max(axis=1))
        correct.append(q[rows, best] > q[rows, worst])
        t0 = time.perf_counter()
        strategy.observe(x, assignment, cq - q.mean(axis=1) + fb_noise)
        route_s += time.perf_counter() - t0
        for i in range(n):
            for j in np.flatnonzero(assignment.mask[i]):
                picks[names[i]][world.rm_names[j]] += 1
        done += n
        rnd += 1
    return SimResult(strategy.name, np.concatenate(chosen_q), np.concatenate(best_q), np.concatenate(correct), calls,
                     route_s, picks)


def run_strategies(world: World, specs: Sequence[str], instances: int = 100_000, seed: int = 0,
                   **kwargs) -> dict[str, SimResult]:
    """Every strategy spec on the same stream (same seed); LASeR's bandit parameters via `bandit_params`."""
    bandit_params = kwargs.pop("bandit_params", {})
    table = world.accuracy_table()
    out = {}
    for spec in specs:
        params = bandit_params.get(spec, {}) if spec.startswith("laser") else {}
        strategy = make_strategy(spec, world.rm_names, dim=world.dim, seed=seed, oracle_table=table, **params)
        out[spec] = simulate(strategy, world, instances=instances, seed=seed, **kwargs)
        out[spec].strategy = spec
    return out
