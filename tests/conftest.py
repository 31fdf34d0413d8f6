"""Shared test helpers (importable as plain modules) and fixtures."""

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

# Under pytest-xdist (`make test`: two workers on two cores) each worker computes on one thread, and its vLLM
# engines bind to a core of their own: two workers of two threads each would oversubscribe the cores, and
# OpenMP threads spinning on a busy core cost more than they compute. Processes a test starts inherit this.
_cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
if (_worker := os.environ.get("PYTEST_XDIST_WORKER", "")).startswith("gw"):
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", str(_cores[int(_worker[2:]) % len(_cores)]))


@pytest.fixture(scope="session")
def quick_world(tmp_path_factory):
    """The reduced embedded world (two domains, three reward models), built once per test session for real.

    Returns (assets, seconds it took to build). `LASER_TEST_ASSETS_DIR` names a cache kept across sessions
    (the build is keyed by the recipe's digest, so a changed recipe is rebuilt there).
    """
    import time

    from laser.assets import build_assets, quick_recipe

    cache = os.environ.get("LASER_TEST_ASSETS_DIR")
    if not cache and os.environ.get("PYTEST_XDIST_WORKER"):
        # Under pytest-xdist the workers share one build: the first builds, the others wait on the build's lock.
        cache = tmp_path_factory.getbasetemp().parent / "assets"
    cache = cache or tmp_path_factory.mktemp("assets")
    import torch

    threads = torch.get_num_threads()
    # Every world test waits for this build, while the other worker runs the world-free files: it gets the
    # machine's cores (a worker otherwise computes on one thread, see the top of this file).
    torch.set_num_threads(max(threads, len(_cores)))
    t0 = time.perf_counter()
    try:
        assets = build_assets(quick_recipe(), cache_dir=cache, progress=False)
    finally:
        torch.set_num_threads(threads)
    return assets, time.perf_counter() - t0


@pytest.fixture(scope="module")
def world(quick_world):
    """(assets, task suite) of the reduced world; modules that need more define their own `world`."""
    assets, _ = quick_world
    return assets, assets.suite()


def hf_greedy_texts(model, tokenizer, prompts: list[str], max_new_tokens: int) -> list[str]:
    """Greedy completions by transformers' own `generate` (left padding): the reference engines must match."""
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        enc = tokenizer(prompts, return_tensors="pt", padding=True)
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False)
    finally:
        tokenizer.padding_side = side
    return tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)


# The order of the test files, for `make test`'s two pytest-xdist workers (`--dist loadfile
# --no-loadscope-reorder` keeps it): the file that builds the session's world first; the files that need no
# world next (the other worker runs them while the world builds, instead of waiting on its lock); then the
# longest files first, so that no long file starts last. A plain `pytest` runs in the same order.
_BUILDS_THE_WORLD = "test_assets_build.py"
_LONGEST_FIRST = ["test_stopping.py", "test_distributed.py", "test_bon.py", "test_bench.py",
                  "test_soup.py", "test_demo.py", "test_drift.py", "test_generation.py", "test_train_cli.py",
                  "test_training_loop.py", "test_rewards.py"]


def pytest_collection_modifyitems(session, config, items):
    needs_world: dict[str, bool] = {}
    for item in items:
        needs_world[item.path.name] = needs_world.get(item.path.name, False) or \
            "quick_world" in getattr(item, "fixturenames", ())

    def rank(name: str) -> tuple[int, int]:
        if name == _BUILDS_THE_WORLD:
            return 0, 0
        if not needs_world[name]:
            return 1, 0
        if name in _LONGEST_FIRST:
            return 2, _LONGEST_FIRST.index(name)
        return 3, 0

    items.sort(key=lambda item: rank(item.path.name))  # stable: each file's own order is kept


def free_port() -> int:
    """A TCP port nothing listens on now (for a torch.distributed rendezvous)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def assert_targets_afresh(assets) -> int:
    """Check each target a built world's report claims met against a fresh measurement by other code than the
    builder's: the policy's greedy and sampled answers from vLLM (the builder samples with transformers), its own
    right and wrong samples ordered by each judge through the engine's `likelihood` reward backend (the builder
    scores in memory). Greedy answers are the same (within two examples a domain); the judges' accuracies, on
    other samples, within two standard errors. Returns how many of the claims it checked."""
    from laser.generation import EngineConfig, make_engine
    from laser.rewards import load_reward_model
    from laser.tasks import check

    rep, t = assets.report, assets.recipe.targets
    claims = {c["target"]: c["holds"] for c in rep["targets"]}

    def claimed(start: str) -> bool:
        return next(v for k, v in claims.items() if k.startswith(start))

    test = assets.suite().test
    engine = make_engine(assets.policy, EngineConfig(engine="vllm", max_model_len=128))
    try:
        tokens = max(len(ex.target()) for ex in test) + 4
        greedy = engine.greedy([ex.prompt for ex in test], max_new_tokens=tokens)
        sampled = engine.sample([ex.prompt for ex in test], n=t.k, temperature=0.8, max_new_tokens=tokens, seed=7)
    finally:
        engine.close()
    domains = sorted({ex.domain for ex in test})
    right = {d: [check(ex, greedy.texts(i)[0]) for i, ex in enumerate(test) if ex.domain == d] for d in domains}
    accuracy = {d: sum(v) / len(v) for d, v in right.items()}
    for d in domains:
        assert abs(accuracy[d] - rep["policy"]["test_accuracy"][d]) <= 2 / len(right[d]), (d, accuracy, rep)
    lo, hi = t.accuracy_band
    if claimed("policy greedy"):
        assert all(lo - 2 / len(right[d]) <= a <= hi + 2 / len(right[d]) for d, a in accuracy.items()), accuracy
    checked = int(claimed("policy greedy"))
    if claimed("policy pass@"):
        for d in domains:
            hit = [any(check(ex, x) for x in sampled.texts(i)) for i, ex in enumerate(test) if ex.domain == d]
            assert sum(hit) / len(hit) >= t.pass_at_k - 2 * (0.25 / len(hit)) ** 0.5, (d, sum(hit) / len(hit))
        checked += 1
    pairs = []  # the policy's own (right, wrong) samples, one pair per prompt that has both
    for i, ex in enumerate(test):
        texts = sampled.texts(i)
        good, bad = [x for x in texts if check(ex, x)], [x for x in texts if not check(ex, x)]
        if good and bad:
            pairs.append((ex, good[0], bad[0]))
    assert {ex.domain for ex, _, _ in pairs} == set(domains)
    prompts = [ex.prompt for ex, _, _ in pairs]
    home, off = claimed("every judge >="), claimed("every judge <=")
    lowest_off = 1.0
    for spec in assets.recipe.judges:
        rm = load_reward_model("likelihood", str(assets.judges[spec.name]))
        chosen = rm.score(prompts, [g for _, g, _ in pairs]).values
        rejected = rm.score(prompts, [b for _, _, b in pairs]).values
        for d in domains:
            wins = [c > r for (ex, _, _), c, r in zip(pairs, chosen, rejected, strict=True) if ex.domain == d]
            acc, noise = sum(wins) / len(wins), 2 * (0.25 / len(wins)) ** 0.5
            if d in spec.domains and home:
                assert acc >= t.home_accuracy - noise, (spec.name, d, acc, len(wins))
            if d not in spec.domains and off:
                assert acc <= t.off_accuracy + noise, (spec.name, d, acc, len(wins))
            if d not in spec.domains:
                lowest_off = min(lowest_off, acc)
    if any(k.startswith("at least one judge") for k in claims) and claimed("at least one judge"):
        assert lowest_off < 0.5 + 0.1, lowest_off  # confidently wrong somewhere off its home
        checked += 1
    return checked + home + off
