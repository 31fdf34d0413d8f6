"""Shared test helpers (importable as plain modules) and fixtures."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def quick_world(tmp_path_factory):
    """The reduced embedded world (two domains, three reward models), built once per test session for real.

    Returns (assets, seconds it took to build). `LASER_TEST_ASSETS_DIR` names a cache kept across sessions
    (the build is keyed by the recipe's digest, so a changed recipe is rebuilt there).
    """
    import os
    import time

    from laser.assets import build_assets, quick_recipe

    cache = os.environ.get("LASER_TEST_ASSETS_DIR")
    if not cache and os.environ.get("PYTEST_XDIST_WORKER"):
        # Under pytest-xdist the workers share one build: the first builds, the others wait on the build's lock.
        cache = tmp_path_factory.getbasetemp().parent / "assets"
    cache = cache or tmp_path_factory.mktemp("assets")
    t0 = time.perf_counter()
    assets = build_assets(quick_recipe(), cache_dir=cache, progress=False)
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
