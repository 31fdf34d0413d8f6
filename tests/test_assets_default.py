"""The default embedded world meets the targets it is designed for (slow: builds it if it is not cached)."""

from __future__ import annotations

import time

import pytest

from laser.assets import AssetRecipe, build_assets

pytestmark = pytest.mark.slow


@pytest.mark.xfail(strict=True, reason="known gap: the math RM reaches 81% on arithmetic and the knowledge RM 84% "
                                       "on yes/no (target 85%); near-miss answers (off by one) fool them")
def test_default_world_is_partly_competent_with_specialised_reward_models():
    t0 = time.perf_counter()
    assets = build_assets(AssetRecipe(), progress=False)
    built_in = time.perf_counter() - t0
    report = assets.report
    if "sft_s" in report["timings_s"] and built_in > 60:  # built now rather than found in the cache
        assert built_in < 15 * 60, built_in
    for domain, acc in report["policy"]["test_accuracy"].items():
        assert 0.15 <= acc <= 0.75, (domain, acc)
    for spec in assets.recipe.reward_models:
        rm = report["reward_models"][spec.name]
        acc = rm["held_out_pairwise_accuracy"]
        if spec.kind == "length":
            assert rm["prefers_longer"] >= 0.9
            assert all(0.3 <= a <= 0.7 for a in acc.values()), acc
            continue
        assert rm["prefers_longer"] < 0.7, rm
        for domain, a in acc.items():
            if domain in spec.domains:
                assert a >= 0.85, (spec.name, domain, acc)
            else:
                assert 0.35 <= a <= 0.65, (spec.name, domain, acc)
