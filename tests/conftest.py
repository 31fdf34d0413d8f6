"""Shared test helpers (importable as plain modules) and fixtures."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def quick_world(tmp_path_factory):
    """The reduced embedded world (two domains, three reward models), built once per test session for real.

    Returns (assets, seconds it took to build).
    """
    import time

    from laser.assets import build_assets, quick_recipe

    cache = tmp_path_factory.mktemp("assets")
    t0 = time.perf_counter()
    assets = build_assets(quick_recipe(), cache_dir=cache, progress=False)
    return assets, time.perf_counter() - t0
