"""An offline prior (`laser.training.prior`): a fresh router taught from held-out rows, every RM scoring the policy's
samples of each (or the rows' own preferences), routes each domain's unseen prompts to that domain's RM before it has
served one request."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from laser.assets.pairs import correctness_pairs
from laser.generation import make_embedder
from laser.generation.hf_engine import HFEngine
from laser.rewards import ScoreNormalizer, load_reward_model
from laser.strategies import Batch, make_strategy
from laser.tasks import load_jsonl
from laser.training.prior import learn_prior


def test_an_offline_prior_routes_each_domain_to_its_rm_before_serving(quick_world, tmp_path):
    assets, _ = quick_world
    suite = assets.suite()
    model = AutoModelForCausalLM.from_pretrained(assets.policy).eval()
    tok = AutoTokenizer.from_pretrained(assets.policy)
    lineup, _ = assets.lineup()
    rms = {name: load_reward_model(kind, str(path)) for name, (kind, path) in lineup.items()}
    embedder = make_embedder(model, tok)
    engine = HFEngine.wrap(model, tok)
    test = suite.test[::4]
    contexts = embedder.embed([ex.prompt for ex in test])
    domains = [ex.domain for ex in test]

    def shares(router) -> dict[str, dict[str, float]]:
        arms = router.assign(contexts, Batch(round=1, domains=domains, explore=False)).arms
        return {d: {rm: float(np.mean([router.rm_names[a] == rm for a, dd in zip(arms, domains, strict=True)
                                        if dd == d]))
                    for rm in rms} for d in sorted(set(domains))}

    def fresh():
        return make_strategy("laser", list(rms), dim=embedder.dim, seed=0, center=True, normalize_feedback=False)

    router = fresh()
    before = shares(router)
    stats = learn_prior(router, rms, ScoreNormalizer("zscore"), engine, embedder.embed, suite.validation, rows=96,
                        n=8, temperature=1.0, max_new_tokens=12)
    # One round over 96 held-out rows: every RM scored every informative one (right and wrong samples).
    assert stats["prompts"] == 96 and stats["every_rm"] and 24 <= stats["informative"] <= 96
    assert set(stats["picks"].values()) == {stats["informative"]} and stats["rm_forward"] > 0
    # yes_no's judge orders the policy's samples far better than the others (rerank gain 0.67 vs 0.02 and -0.36
    # here); on strings the quick world's gains are close (0.42 / 0.34 / 0.18), the preferences below separate them.
    assert shares(router)["yes_no"]["reasoning"] >= 0.8 > before["yes_no"]["reasoning"], (before, shares(router))

    # Held-out preferences (the gold answer over a plausible wrong one, from a file): nothing is sampled, and each
    # domain goes to the RM that agrees with most of its preferences, as measured here on every row.
    path = tmp_path / "preferences.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in correctness_pairs(suite.validation, random.Random(0))))
    prefs, _ = load_jsonl(path)
    agree = {name: rm.score([ex.prompt for ex in prefs], [ex.answer for ex in prefs]).values >
             rm.score([ex.prompt for ex in prefs], [ex.rejected for ex in prefs]).values for name, rm in rms.items()}
    best = {d: max(rms, key=lambda n: np.mean([a for a, ex in zip(agree[n], prefs, strict=True) if ex.domain == d]))
            for d in set(domains)}
    assert best == {"yes_no": "reasoning", "strings": "strings"}  # the build's judges, at home
    router = fresh()
    sampled = engine.stats.prompts
    stats = learn_prior(router, rms, ScoreNormalizer("zscore"), engine, embedder.embed, prefs, rows=96)
    assert engine.stats.prompts == sampled and stats["informative"] == 96  # every preference is its own pair
    # Most of each domain's prompts (the rest: where the kernel reaches across the two domains' contexts); a fresh
    # router sends fewer than half of either domain's to its RM.
    after = shares(router)
    assert all(after[d][rm] >= 0.7 > before[d][rm] + 0.2 for d, rm in best.items()), (before, after)

    with pytest.raises(ValueError, match="held-out rows"):
        learn_prior(fresh(), rms, ScoreNormalizer("zscore"), engine, embedder.embed, [], rows=8)
    with pytest.raises(ValueError, match="at least one"):
        learn_prior(fresh(), rms, ScoreNormalizer("zscore"), engine, embedder.embed, suite.validation, rows=0)
