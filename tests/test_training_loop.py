"""LASeR rounds for real on the reduced world: vLLM sampling, bandit routing, RM scoring, TRL DPO, weight sync."""

from __future__ import annotations

import json
import random
from collections import Counter

import numpy as np
import pytest
import torch
from conftest import hf_greedy_texts
from transformers import AutoModelForCausalLM, AutoTokenizer

from laser.generation import EngineConfig, make_embedder, make_engine
from laser.rewards import load_reward_model
from laser.strategies import make_strategy
from laser.training.dpo import DPOSettings, DPOStep
from laser.training.loop import RoundSettings, Trainer
from laser.training.router_feedback import RerankProbes, RouterFeedback


@pytest.fixture(scope="module")
def world(quick_world):
    assets, _ = quick_world
    engine = make_engine(assets.policy, EngineConfig(engine="vllm", max_model_len=128))
    yield assets, assets.suite(), engine
    engine.close()


def make_trainer(world, strategy: str, run_dir, rounds_per_iteration: int = 2, neighbors: int | None = None,
                 validation_metric: str = "loglik", feedback: str = "validation_gain",
                 min_chosen: float | None = None):
    """A trainer on the quick world's 12 prompts a round. `min_chosen` is off here (its default 0.5 leaves about
    half of these rounds' prompts without a pair, some rounds none): these tests check what a round does with
    its pairs; test_min_chosen_leaves_out_low_prompts_and_a_round_without_pairs_trains_nothing checks the default."""
    assets, suite, engine = world
    policy = AutoModelForCausalLM.from_pretrained(assets.policy)
    engine.sync_weights(policy)  # the shared engine starts from the SFT policy for every trainer
    tok = AutoTokenizer.from_pretrained(assets.policy)
    rms = {name: load_reward_model("hf", str(path)) for name, path in assets.reward_models.items()}
    embedder = make_embedder(policy, tok, engine=engine)
    strat = make_strategy(strategy, list(rms), dim=policy.config.hidden_size, seed=0)
    dpo = DPOStep(policy, tok, DPOSettings(batch_size=8), run_dir / "dpo", seed=0)
    settings = RoundSettings(prompts_per_round=12, n=6, max_new_tokens=12, feedback_examples=32,
                             feedback_neighbors=neighbors, rounds_per_iteration=rounds_per_iteration,
                             validation_metric=validation_metric, feedback=feedback, rerank_prompts=10,
                             rerank_warmup=1, rerank_warmup_prompts=10, min_chosen=min_chosen)
    return Trainer(policy, tok, engine, embedder, rms, strat, dpo, suite.train, suite.validation,
                   suite.test[::8], settings, run_dir, seed=0)


def test_laser_rounds_with_per_group_updates_route_score_train_and_sync(world, tmp_path):
    trainer = make_trainer(world, "laser", tmp_path)
    k = len(trainer.rms)
    before = {n: p.detach().clone() for n, p in trainer.policy.named_parameters()}
    lines = [trainer.run_round() for _ in range(3)]
    ev = trainer.evaluate()
    for line in lines:
        assert line["prompts"] == 12 and sum(line["picks"].values()) == 12
        # One RM per instance: each distinct candidate is scored exactly once (LASeR's cost).
        assert line["rm_forward"] == line["candidates"]["distinct"]
        assert line["pairs"]["pairs"] + line["pairs"]["skipped_no_pair"] == 12 and line["pairs"]["pairs"] > 0
        assert all(d["pairs"] > 0 and np.isfinite(d["reward"]) for d in line["dpo"])
        assert set(line["seconds"]) == {"generate", "embed", "score", "pairs", "train", "feedback", "sync"}
    # The bandit saw one observation per trained instance; the policy moved and vLLM serves it.
    assert len(trainer.strategy.state_dict()["feedback_history"]) == sum(li["pairs"]["pairs"] for li in lines)
    assert any(not np.allclose(before[n], p.detach()) for n, p in trainer.policy.named_parameters())
    prompts = [ex.prompt for ex in trainer.test[:8]]
    hf_texts = hf_greedy_texts(trainer.policy, trainer.tokenizer, prompts, 8)
    assert [g[0].text for g in trainer.engine.greedy(prompts, max_new_tokens=8).samples] == hf_texts
    # Metrics: one line per round and one per eval, written as they happen.
    written = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [w["type"] for w in written] == ["round", "round", "round", "eval"]
    assert set(ev["accuracy"]) == {ex.domain for ex in trainer.test} and 0 <= ev["mean_accuracy"] <= 1
    assert sum(sum(v.values()) for v in ev["picks"].values()) == 36
    assert ev["rm_forward_total"] == sum(line["rm_forward"] for line in lines) and k >= 3


def test_rerank_feedback_learns_from_validation_probes_and_trains_once_per_round(world, tmp_path):
    """The default reward: each round the router picks an RM for 10 validation probes sampled with the
    training prompts, is rewarded by how that RM orders their right and wrong samples, and the round trains
    once on all its pairs; the training instances use what the router knows (no exploration there)."""
    trainer = make_trainer(world, "laser", tmp_path, feedback="rerank_gain")
    assert isinstance(trainer.feedback, RerankProbes) and not trainer.feedback.explores_training
    lines = [trainer.run_round() for _ in range(3)]
    history = trainer.strategy.state_dict()["feedback_history"]
    # A probe the router is already sure about (rerank_skip_settled) is not even sampled; every sampled probe
    # with a right and a wrong sample is observed: by every RM in the warm-up round, then by one.
    informative = [line["probes"]["informative"] for line in lines]
    assert lines[0]["probes"]["confident"] == 0  # the warm-up samples and scores every probe
    for line in lines:
        probes = line["probes"]
        assert probes["sampled"] == probes["prompts"] - probes["confident"]
        assert probes["informative"] <= probes["sampled"]
    k = len(trainer.rms)
    assert [line["probes"]["every_rm"] for line in lines] == [True, False, False]
    assert len(history) == k * informative[0] + sum(informative[1:]) > 0
    assert all(-1 <= h <= 1 for h in history)  # raw rerank gains, before the router's normalization
    seen = 0
    for line, m in zip(lines, informative, strict=True):
        seen_now = m * (k if line["probes"]["every_rm"] else 1)
        assert sum(line["picks"].values()) == 12 and line["probes"]["prompts"] == 10
        # Only informative probes are routed and scored (each by every RM during the warm-up).
        assert sum(line["probes"]["picks"].values()) == seen_now and m <= line["probes"]["informative"] <= 10
        if line["probes"]["every_rm"]:
            assert set(line["probes"]["picks"].values()) == {m}
        if m:  # what each round reports is what the router was told
            assert np.mean(history[seen:seen + seen_now]) == pytest.approx(line["feedback_mean"])
        seen += seen_now
        assert line["candidates"]["prompts"] == 12  # the probes' samples are not training candidates
        # The RM cost counts the probes' scoring: training candidates once each, plus the probes'.
        assert line["rm_forward"] == line["candidates"]["distinct"] + line["probes"]["rm_forward"]
        assert [(d["arm"], d["pairs"]) for d in line["dpo"]] == [("all", line["pairs"]["pairs"])]
        assert np.isfinite(line["dpo"][0]["loss"])
        assert set(line["feedback_by_domain"]) <= {ex.domain for ex in trainer.validation}
    # Probes are a seeded draw per round: the same round draws the same validation examples again.
    assert [ex.id for ex in trainer.feedback.draw_probes()] == [ex.id for ex in trainer.feedback.draw_probes()]
    trainer.round = 0
    first = [ex.id for ex in trainer.feedback.draw_probes()]
    trainer.round = 1
    assert first != [ex.id for ex in trainer.feedback.draw_probes()]


def test_min_chosen_leaves_out_low_prompts_and_a_round_without_pairs_trains_nothing(world, tmp_path):
    """The default `min_chosen` (0.5) pairs only prompts whose chosen candidate its RM scores high, counted in
    the round's pair stats; a round where no prompt qualifies writes its line, leaves the weights as they were,
    and its router still learns from the probes."""
    assert RoundSettings().min_chosen == 0.5
    trainer = make_trainer(world, "laser", tmp_path / "default", feedback="rerank_gain", min_chosen=0.5)
    lines = [trainer.run_round() for _ in range(2)]
    for line in lines:
        stats = line["pairs"]
        assert stats["pairs"] + stats["skipped_no_pair"] == 12 and 0 <= stats["skipped_low_chosen"]
        assert stats["skipped_low_chosen"] <= stats["skipped_no_pair"]
        assert [(d["arm"], d["pairs"]) for d in line["dpo"]] == [("all", stats["pairs"])]
    assert sum(line["pairs"]["skipped_low_chosen"] for line in lines) > 0
    trainer = make_trainer(world, "laser", tmp_path / "none", feedback="rerank_gain", min_chosen=50.0)
    before = {n: p.detach().clone() for n, p in trainer.policy.named_parameters()}
    line = trainer.run_round()
    assert line["pairs"]["pairs"] == 0 and line["pairs"]["skipped_low_chosen"] > 0
    assert line["dpo"] == [{"arm": "all", "pairs": 0, "loss": None}]
    assert all(torch.equal(before[n], p.detach()) for n, p in trainer.policy.named_parameters())
    assert len(trainer.strategy.state_dict()["feedback_history"]) > 0  # the warm-up's probes were observed
    written = [json.loads(x) for x in (tmp_path / "none" / "metrics.jsonl").read_text().splitlines()]
    assert [w["type"] for w in written] == ["round"] and written[0]["pairs"]["pairs"] == 0


@pytest.mark.parametrize("spec", ["random", "ensemble:mean"])
def test_baselines_train_once_per_round_and_measure_no_reward(world, tmp_path, spec):
    trainer = make_trainer(world, spec, tmp_path)  # validation_gain: only a learning router would pay for it
    assert type(trainer.feedback) is RouterFeedback and trainer.feedback.explores_training
    line = trainer.run_round()
    assert [(d["arm"], d["pairs"]) for d in line["dpo"]] == [("all", line["pairs"]["pairs"])]
    assert "probes" not in line and line["feedback_mean"] is None and line["feedback_by_domain"] == {}
    if spec == "random":  # several RMs in the round, still one update
        assert sum(1 for v in line["picks"].values() if v) > 1


def test_context_local_feedback_differs_per_instance(world, tmp_path):
    trainer = make_trainer(world, "laser", tmp_path, neighbors=4)
    assert len({ex.domain for ex in trainer.feedback.batch}) == 2  # sampled across the split's domains
    import random

    from laser.assets.pairs import correctness_pairs

    examples = [ex for ex in trainer.train if ex.domain == "yes_no"][:4] + \
        [ex for ex in trainer.train if ex.domain != "yes_no"][:4]
    rows = correctness_pairs(examples, random.Random(0))
    for i, r in enumerate(rows):
        r["instance"] = i
    contexts = trainer.embedder.embed([ex.prompt for ex in examples])
    arms = np.zeros(len(examples), dtype=np.int64)  # one group: one update
    trainer.dpo.start_iteration()
    feedback, trained, metrics = trainer.feedback.update_groups(rows, arms, contexts)
    assert trained.all() and len(metrics) == 1
    # One update, but each instance is credited with the change on the validation examples like it.
    assert len(set(np.round(feedback, 9))) > 1
    assert metrics[0]["reward"] == pytest.approx(feedback.mean())


def test_accuracy_feedback_is_the_change_in_greedy_correctness(world, tmp_path):
    import random

    from laser.assets.pairs import correctness_pairs
    from laser.training.feedback import greedy_correct

    trainer = make_trainer(world, "laser", tmp_path, validation_metric="accuracy")
    batch = trainer.feedback.batch
    before = greedy_correct(trainer.policy, trainer.tokenizer, batch)
    # The per-example metric is what transformers' own greedy decoding gets right.
    texts = hf_greedy_texts(trainer.policy, trainer.tokenizer, [ex.prompt for ex in batch],
                            max(len(ex.target()) for ex in batch) + 4)
    from laser.tasks import check

    assert before.tolist() == [float(check(ex, t)) for ex, t in zip(batch, texts, strict=True)]
    rows = correctness_pairs(trainer.train[:16], random.Random(0))
    for i, r in enumerate(rows):
        r["instance"] = i
    contexts = trainer.embedder.embed([r["prompt"] for r in rows])
    trainer.dpo.settings = trainer.dpo.settings.model_copy(update={"learning_rate": 5e-2})  # a step that flips answers
    for group in trainer.dpo.optimizer.param_groups:
        group["lr"] = 5e-2
    trainer.dpo.start_iteration()
    feedback, trained, _ = trainer.feedback.update_groups(rows, np.zeros(len(rows), dtype=np.int64), contexts)
    after = greedy_correct(trainer.policy, trainer.tokenizer, batch)
    assert trained.all() and feedback == pytest.approx(np.full(len(rows), (after - before).mean()))
    assert not np.array_equal(after, before)  # the update changed some answers: the reward is not trivially zero


def test_margin_feedback_is_the_change_in_gold_minus_wrong_log_likelihood(world, tmp_path):
    from laser.assets.pairs import correctness_pairs
    from laser.tasks import check
    from laser.training.feedback import gold_margin_per_example

    trainer = make_trainer(world, "laser", tmp_path, validation_metric="margin")
    batch, wrong = trainer.feedback.batch, trainer.feedback.wrong
    assert len(wrong) == len(batch) and all(not check(ex, " " + w) for ex, w in zip(batch, wrong, strict=True))
    assert wrong == make_trainer(world, "laser", tmp_path / "again", validation_metric="margin").feedback.wrong
    before = gold_margin_per_example(trainer.policy, trainer.tokenizer, batch, wrong)
    rows = correctness_pairs(trainer.train[:16], random.Random(0))
    for i, r in enumerate(rows):
        r["instance"] = i
    contexts = trainer.embedder.embed([r["prompt"] for r in rows])
    trainer.dpo.start_iteration()
    feedback, trained, _ = trainer.feedback.update_groups(rows, np.zeros(len(rows), dtype=np.int64), contexts)
    after = gold_margin_per_example(trainer.policy, trainer.tokenizer, batch, wrong)
    assert trained.all() and feedback == pytest.approx(np.full(len(rows), (after - before).mean()), abs=1e-5)
    assert abs(feedback[0]) > 0


def test_the_ensemble_pays_k_forward_passes_per_candidate(world, tmp_path):
    trainer = make_trainer(world, "ensemble:mean", tmp_path)
    line = trainer.run_round()
    assert line["rm_forward"] == len(trainer.rms) * line["candidates"]["distinct"]
    assert all(v == 12 for v in line["picks"].values())
    # Its combined scores are normalized again before pairs are built (`pair_scores`), and kept for a resume;
    # a strategy with one RM per instance pairs on that RM's normalized scores as they are.
    assert trainer.pair_normalizer.state_dict()["per_rm"].keys() == {"combined"}
    assert trainer.state_dict()["pair_normalizer"] == trainer.pair_normalizer.state_dict()
    single = make_trainer(world, "random", tmp_path / "random")
    single.run_round()
    assert single.pair_normalizer.state_dict()["per_rm"] == {}


def test_prompts_follow_a_seeded_order_without_repeats_within_an_epoch(world, tmp_path):
    trainer = make_trainer(world, "random", tmp_path)
    seen = []
    while trainer.epoch == 0:
        seen += [ex.prompt for ex in trainer.next_prompts()]
    n = len(trainer.train)
    assert len(set(seen[:n])) == len({ex.prompt for ex in trainer.train})
    again = make_trainer(world, "random", tmp_path / "again")
    assert [ex.prompt for ex in again.next_prompts()] == seen[:12]
    # Pairs have their own per-round stream: a max_random round leaves the data order's generator untouched.
    rule = make_trainer(world, "random", tmp_path / "rule")
    rule.settings = rule.settings.model_copy(update={"pair_rule": "max_random"})
    state = rule.data.rng.bit_generator.state
    line = rule.run_round()
    assert line["pairs"]["pairs"] > 0 and rule.data.rng.bit_generator.state == state
    assert rule._pair_rng().random() == rule._pair_rng().random()  # a function of (seed, round) only


def test_score_noise_adds_seeded_gaussian_noise_to_every_normalized_score(world, tmp_path):
    """`round.score_noise` (the paper's robustness test) perturbs each normalized RM score by N(0, sigma^2),
    drawn from the run's seed and the round, so that a resumed run draws the same noise."""
    trainer = make_trainer(world, "laser", tmp_path, feedback="rerank_gain")
    assert trainer._normalizer() is trainer.normalizer  # no noise by default: the run's own normalizer
    trainer.settings = trainer.settings.model_copy(update={"score_noise": 0.3})
    raw = np.random.default_rng(0).normal(size=4000)
    clean = trainer.normalizer("rm", raw)
    noisy = trainer._normalizer()("rm", raw, update=False)
    again = trainer._normalizer()("rm", raw, update=False)
    np.testing.assert_array_equal(noisy, again)  # same seed and round: the same draws
    assert np.std(noisy - clean) == pytest.approx(0.3, rel=0.05) and abs(np.mean(noisy - clean)) < 0.03
    assert np.isnan(trainer._normalizer()("rm", [np.nan, 1.0])[0])  # a failed score stays failed
    trainer.round = 1
    assert not np.allclose(trainer._normalizer()("rm", raw, update=False), noisy)


def test_score_noise_on_raw_scores_is_scaled_by_the_normalizer(world, tmp_path):
    """`score_noise_on: raw` adds the noise to the score the RM returns, before the normalizer (the paper's
    placement): on an RM whose raw scores spread 4 times wider, sigma 0.3 moves the normalized score by 0.3 / 4."""
    trainer = make_trainer(world, "laser", tmp_path, feedback="rerank_gain")
    trainer.settings = trainer.settings.model_copy(update={"score_noise": 0.3, "score_noise_on": "raw"})
    raw = 4.0 * np.random.default_rng(0).normal(size=4000)
    clean = trainer.normalizer("rm", raw)
    noisy = trainer._normalizer()("rm", raw, update=False)
    np.testing.assert_array_equal(noisy, trainer._normalizer()("rm", raw, update=False))  # seeded
    assert np.std(noisy - clean) == pytest.approx(0.3 / 4.0, rel=0.05)
    assert np.isnan(trainer._normalizer()("rm", [np.nan, 1.0])[0])  # a failed score stays failed
    with pytest.raises(ValueError):
        RoundSettings(score_noise_on="scores")


def test_probes_the_router_is_sure_about_cost_no_rm_pass(world, tmp_path):
    """After the warm-up, a probe where the router is sure of its pick (`rerank_skip_settled`) is not scored.
    A router told on every validation prompt that one RM is right and the others wrong is sure everywhere,
    so a later round's probes are all counted as settled and cost nothing; with the rule off they are scored."""
    for skip in (True, False):
        trainer = make_trainer(world, "laser", tmp_path / str(skip), feedback="rerank_gain")
        trainer.settings = trainer.settings.model_copy(update={"rerank_skip_settled": skip, "rerank_prompts": 40,
                                                               "rerank_good_enough": None, "retest": 0})  # the rule
        val = trainer.validation
        contexts = trainer.embedder.embed(trainer.engine.sample([ex.prompt for ex in val], n=1, max_new_tokens=1,
                                                                seed=0).prompts)
        for _ in range(3):  # what a long warm-up could have taught it
            for k in range(trainer.strategy.k):
                trainer.strategy.observe(contexts, trainer.strategy._one_per_instance(np.full(len(val), k)),
                                         np.full(len(val), 1.0 if k == 0 else -1.0))
        trainer.round = trainer.settings.rerank_warmup  # past the warm-up
        asked = trainer.engine.stats.prompts
        line = trainer.run_round()
        probes = line["probes"]
        sampled = trainer.engine.stats.prompts - asked - line["prompts"]  # what the engine sampled beyond training
        if skip:  # settled probes are decided from their contexts: not sampled, not scored
            assert probes["confident"] == probes["prompts"] == 40 and probes["sampled"] == sampled == 0
            assert probes["informative"] == 0 and probes["rm_forward"] == 0
            assert line["rm_forward"] == line["candidates"]["distinct"]  # the training candidates only
        else:
            assert probes["confident"] == 0 and probes["sampled"] == sampled == 40
            assert probes["informative"] > 0 and probes["rm_forward"] > 0


def test_probes_whose_pick_is_good_enough_are_not_sampled(world, tmp_path):
    """`rerank_good_enough`: a probe whose picked RM's lower bound reaches that rerank gain is skipped even where
    the router is not sure the pick is the best (RMs as good keep it from being settled)."""
    for good in (0.4, None):  # every pick's lower bound is about 0.45 after these observations
        trainer = make_trainer(world, "laser", tmp_path / str(good), feedback="rerank_gain")
        trainer.settings = trainer.settings.model_copy(update={"rerank_good_enough": good, "rerank_prompts": 40,
                                                               "retest": 0})  # no re-tests (tests/test_drift.py)
        val = trainer.validation
        contexts = trainer.embedder.embed([ex.prompt for ex in val])
        for _ in range(30):  # every RM always right: each good enough, none proven the best
            for k in range(trainer.strategy.k):
                trainer.strategy.observe(contexts, trainer.strategy._one_per_instance(np.full(len(val), k)),
                                         np.ones(len(val)))
        trainer.round = trainer.settings.rerank_warmup
        line = trainer.run_round()
        probes = line["probes"]
        if good is None:
            assert probes["confident"] == 0 and probes["sampled"] == 40  # not settled: the others are as good
        else:
            assert probes["confident"] == 40 and probes["sampled"] == 0 and probes["rm_forward"] == 0


def test_rerank_rms_scores_each_probe_with_the_rms_not_ruled_out(world, tmp_path):
    """`rerank_rms`: after the warm-up every sampled probe is also scored by the RMs the router has not ruled out
    there, up to that many in all. A router that knows nothing rules none out: every RM scores every informative
    probe. One told many times that RM 0 is right and the others wrong rules them all out: its pick alone."""
    for taught in (False, True):
        trainer = make_trainer(world, "laser", tmp_path / str(taught), feedback="rerank_gain")
        k = trainer.strategy.k
        trainer.settings = trainer.settings.model_copy(update={"rerank_rms": k, "rerank_prompts": 40,
                                                               "rerank_skip_settled": False,
                                                               "rerank_good_enough": None, "retest": 0})
        if taught:
            val = trainer.validation
            contexts = trainer.embedder.embed(trainer.engine.sample([ex.prompt for ex in val], n=1,
                                                                    max_new_tokens=1, seed=0).prompts)
            for _ in range(3):
                for arm in range(k):
                    trainer.strategy.observe(contexts, trainer.strategy._one_per_instance(np.full(len(val), arm)),
                                             np.full(len(val), 1.0 if arm == 0 else -1.0))
        trainer.round = trainer.settings.rerank_warmup  # past the warm-up
        probes = trainer.run_round()["probes"]
        informative = probes["informative"]
        assert informative > 0 and not probes["every_rm"]
        if taught:
            assert probes["second_opinions"] == 0 and probes["picks"][trainer.strategy.rm_names[0]] == informative
        else:
            assert probes["second_opinions"] == (k - 1) * informative
            assert all(n == informative for n in probes["picks"].values())


def test_the_router_learns_each_domains_rm_from_held_out_preferences_alone(world, tmp_path):
    """Validation rows that are preferences (the gold answer over a plausible wrong one, no checker needed): the
    probes are not sampled, an RM's reward is whether it prefers the preferred completion, and after the warm-up
    (40 probes) and three rounds (24) the router sends each domain's prompts to the RM that agrees with most of its
    preferences."""
    from laser.assets.pairs import correctness_pairs
    from laser.strategies import Batch
    from laser.tasks import load_jsonl

    _, suite, _ = world
    trainer = make_trainer(world, "laser", tmp_path, feedback="rerank_gain")
    # The world's right and wrong answers as held-out preferences, in the policy's completion format, from a file.
    path = tmp_path / "preferences.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in correctness_pairs(suite.validation, random.Random(0))))
    prefs, _ = load_jsonl(path)
    assert all(ex.is_preference for ex in prefs) and len(prefs) == len(suite.validation)
    trainer.validation = prefs
    trainer.settings = trainer.settings.model_copy(update={"rerank_prompts": 24, "rerank_warmup_prompts": 40})
    # The router as a run makes it for rerank gains (`laser.parts.make_run_strategy`): centred contexts, raw rewards.
    trainer.strategy = make_strategy("laser", list(trainer.rms), dim=trainer.policy.config.hidden_size, seed=0,
                                     center=True, normalize_feedback=False)
    asked = trainer.engine.stats.prompts
    lines = [trainer.run_round() for _ in range(4)]
    assert trainer.engine.stats.prompts - asked == sum(line["prompts"] for line in lines)  # training prompts only
    warmup = lines[0]["probes"]
    assert warmup["every_rm"] and warmup["informative"] == warmup["sampled"] > 0  # every pair: one right, one wrong
    assert all(abs(g) <= 1 for row in lines[0]["feedback_by_domain"].values() for g in row.values())
    # Each RM's agreement with the preferences per domain, measured here on every row: the RM to learn.
    agree = {}
    for name, rm in trainer.rms.items():
        good = rm.score([ex.prompt for ex in prefs], [ex.answer for ex in prefs]).values
        bad = rm.score([ex.prompt for ex in prefs], [ex.rejected for ex in prefs]).values
        agree[name] = {d: float(np.mean([g > b for g, b, ex in zip(good, bad, prefs, strict=True) if ex.domain == d]))
                       for d in {ex.domain for ex in prefs}}
    best = {d: max(agree, key=lambda rm: agree[rm][d]) for d in {ex.domain for ex in prefs}}
    assert len(set(best.values())) == 2  # a different RM per domain: routing has something to learn
    contexts = trainer.embedder.embed([ex.prompt for ex in prefs])
    arms = trainer.strategy.assign(contexts, Batch(round=4, domains=[ex.domain for ex in prefs], explore=False)).arms
    for d, rm in best.items():
        picked = [trainer.strategy.rm_names[a] for a, ex in zip(arms, prefs, strict=True) if ex.domain == d]
        assert picked.count(rm) / len(picked) >= 0.8, (d, rm, agree, Counter(picked))
    with pytest.raises(ValueError, match="belong in the validation split"):
        Trainer(trainer.policy, trainer.tokenizer, trainer.engine, trainer.embedder, trainer.rms, trainer.strategy,
                trainer.dpo, suite.train, suite.validation, prefs[:4], trainer.settings, tmp_path / "bad")


def test_probes_take_rerank_n_samples_each(world, tmp_path):
    """`rerank_n` samples per probe, in a generation call of their own; with `rerank_n` equal to `n` (or None)
    the probes share the training prompts' call and their `n`."""
    for rerank_n in (3, 6, None):
        trainer = make_trainer(world, "laser", tmp_path / str(rerank_n), feedback="rerank_gain")
        trainer.settings = trainer.settings.model_copy(update={"rerank_n": rerank_n})
        n = trainer.settings.n
        assert n == 6
        calls, drawn = trainer.engine.stats.calls, trainer.engine.stats.drawn
        line = trainer.run_round()
        sampled = line["probes"]["sampled"]
        assert sampled == 10  # the warm-up round samples every probe
        assert trainer.engine.stats.drawn - drawn == line["prompts"] * n + sampled * (rerank_n or n)
        assert trainer.engine.stats.calls - calls == (2 if rerank_n == 3 else 1)
        assert line["probes"]["informative"] > 0 and line["probes"]["rm_forward"] > 0


def test_evaluation_follows_the_eval_settings_and_counts_cut_off_answers(world, tmp_path):
    """`eval:` sets the answer length (the round's by default, per domain if asked), greedy or seeded sampling,
    and the checker; answers stopped by the length limit are counted per domain, never silently judged."""
    from laser.config import EvalSettings
    from laser.tasks import check

    trainer = make_trainer(world, "random", tmp_path)
    test = trainer.test
    domains = sorted({ex.domain for ex in test})
    base = trainer.evaluate()
    assert base["truncated"] == dict.fromkeys(domains, 0)  # the round's 12 tokens hold every short answer
    greedy = trainer.engine.greedy([ex.prompt for ex in test], max_new_tokens=12).samples
    for d in domains:
        hits = [check(ex, g[0].text) for ex, g in zip(test, greedy, strict=True) if ex.domain == d]
        assert base["accuracy"][d] == pytest.approx(np.mean(hits))

    # One token for one domain: every answer there is cut off and counted, the other domain is unchanged.
    short, other = domains[0], domains[1]
    trainer.evaluation = EvalSettings(max_new_tokens_by_domain={short: 1})
    cut = trainer.evaluate()
    assert cut["truncated"][short] == sum(ex.domain == short for ex in test) and cut["truncated"][other] == 0
    assert cut["accuracy"][other] == base["accuracy"][other]

    # Seeded sampling is reproducible.
    trainer.evaluation = EvalSettings(temperature=1.5)
    a, b = trainer.evaluate(), trainer.evaluate()
    assert a["accuracy"] == b["accuracy"]

    # Another checker for every example: `exact` on yes/no answers reads the whole first line.
    trainer.evaluation = EvalSettings(checker="exact")
    exact = trainer.evaluate()
    for d in domains:
        hits = [check(ex.model_copy(update={"answer_format": "exact"}), g[0].text)
                for ex, g in zip(test, greedy, strict=True) if ex.domain == d]
        assert exact["accuracy"][d] == pytest.approx(np.mean(hits))


def test_gradient_gain_is_the_first_order_gain_of_each_group_and_leaves_the_weights_as_they_were(world, tmp_path):
    import torch

    from laser.assets.pairs import correctness_pairs
    from laser.training.feedback import answer_token_logprobs

    trainer = make_trainer(world, "laser", tmp_path, feedback="gradient_gain")
    right = correctness_pairs(trainer.train[:8], random.Random(0))  # chosen: the gold answer
    wrong = [dict(r, chosen=r["rejected"], rejected=r["chosen"]) for r in right]  # the same pairs, turned round
    rows = [dict(r, instance=i) for i, r in enumerate(right + wrong)]
    arms = np.array([0] * len(right) + [1] * len(wrong))
    contexts = trainer.embedder.embed([r["prompt"] for r in rows])
    trainer.dpo.start_iteration()
    before = {n: p.detach().clone() for n, p in trainer.policy.named_parameters()}
    feedback, observed = trainer.feedback.gains(rows, arms, contexts)
    assert all(torch.equal(before[n], p) for n, p in trainer.policy.named_parameters())  # nothing was trained
    assert observed.all()
    # No neighbours: every instance of a group gets the group's gain on the whole feedback batch.
    assert len(set(feedback[arms == 0])) == 1 and len(set(feedback[arms == 1])) == 1
    # Learning the gold answers raises their likelihood more than learning the wrong ones (which still teaches the
    # answers' shared format: " ", EOS, so its gain on the gold log-likelihood need not be negative).
    assert feedback[0] > 0 and feedback[0] > feedback[-1] + 0.1
    # The same inner products by autograd: -<grad of the mean gold log-likelihood, g_k / |g_k|>.
    params = trainer.dpo.trainable()
    batch = trainer.feedback.batch
    logps = answer_token_logprobs(trainer.policy, trainer.tokenizer, [ex.prompt for ex in batch],
                                  [ex.target() for ex in batch])
    metric = torch.stack([t.mean() for t in logps]).mean()
    grad_m = torch.cat([g.reshape(-1) for g in torch.autograd.grad(metric, params)])
    for arm, g in enumerate(trainer.dpo.gradients([right, wrong])):
        expected = -float(grad_m @ g) / float(g.norm())
        assert feedback[arms == arm][0] == pytest.approx(expected, rel=0.01)


def test_gradient_gain_rounds_train_once_and_reward_the_router(world, tmp_path):
    trainer = make_trainer(world, "laser", tmp_path, feedback="gradient_gain", neighbors=4)
    updates = trainer.dpo.updates
    lines = [trainer.run_round() for _ in range(2)]
    assert trainer.dpo.updates == updates + 2  # one DPO update a round, whatever the number of RM groups
    for line in lines:
        assert [d["arm"] for d in line["dpo"]] == ["all"] and line["dpo"][0]["pairs"] == line["pairs"]["pairs"] > 0
        assert line["feedback_mean"] is not None and np.isfinite(line["feedback_mean"])
        assert "probes" not in line and line["seconds"]["feedback"] > 0
    observed = len(trainer.strategy.state_dict()["feedback_history"])
    assert 0 < observed <= sum(line["pairs"]["pairs"] for line in lines)


def test_gradient_gain_refuses_greedy_accuracy():
    with pytest.raises(ValueError, match="differentiable validation_metric"):
        RoundSettings(feedback="gradient_gain", validation_metric="accuracy")


def test_warm_up_rounds_draw_rerank_warmup_prompts_probes(world, tmp_path):
    trainer = make_trainer(world, "laser", tmp_path, feedback="rerank_gain")  # rerank_prompts 10, warm-up 1 round
    trainer.settings = trainer.settings.model_copy(update={"rerank_warmup_prompts": 16})
    warm = trainer.feedback.draw_probes()
    trainer.round = 1
    after = trainer.feedback.draw_probes()
    assert len(warm) == 16 and len({ex.id for ex in warm}) == 16 and len(after) == 10
    trainer.round = 0  # the same draw again: a resumed run probes the same examples
    assert [ex.id for ex in trainer.feedback.draw_probes()] == [ex.id for ex in warm]


@pytest.mark.parametrize("spec", ["single:auto", "static:by_domain", "ensemble:val_weighted"])
def test_validation_baselines_score_every_probe_with_every_rm_and_choose_from_the_gains(world, tmp_path, spec):
    """The baselines with LASeR's validation labels: every round every RM scores every probe (no routing of the
    probes), each RM's mean rerank gain so far is reported, and the training instances go where those gains say."""
    trainer = make_trainer(world, spec, tmp_path, feedback="rerank_gain")
    k = len(trainer.rms)
    lines = [trainer.run_round() for _ in range(2)]
    total: dict[str, dict[str, list[float]]] = {}
    for line in lines:
        probes = line["probes"]
        assert probes["every_rm"] and probes["confident"] == 0 and probes["sampled"] == probes["prompts"] == 10
        assert set(probes["picks"].values()) <= {probes["informative"]} and len(probes["picks"]) in (0, k)
        gains = line["validation_gain"]
        for d, row in line["feedback_by_domain"].items():  # this round's means, per domain and RM
            for rm, g in row.items():
                total.setdefault(d, {}).setdefault(rm, []).append(g)
        if line["round"] == 0:  # after one round, the running means are that round's
            for d, row in line["feedback_by_domain"].items():
                assert gains[d] == pytest.approx(row, abs=1e-4)
        overall = gains["*"]
        best = max(overall, key=lambda rm: (overall[rm], -list(trainer.rms).index(rm)))
        if spec == "single:auto":
            assert line["picks"] == {rm: 12 if rm == best else 0 for rm in trainer.rms}
        elif spec == "static:by_domain":
            for d, row in line["picks_by_domain"].items():
                # a domain none of whose probes told right from wrong yet: the overall best
                own = max(gains[d], key=lambda rm: (gains[d][rm], -list(trainer.rms).index(rm))) if d in gains else best
                assert set(row) == {own}
        else:  # every RM scores every training candidate
            assert line["rm_forward"] == k * line["candidates"]["distinct"] + probes["rm_forward"]
            w = trainer.strategy.weights()
            positive = np.array([max(overall.get(rm, 0.0), 0.0) for rm in trainer.rms])
            assert w == pytest.approx(positive / positive.sum() if positive.sum() > 0 else np.full(k, 1 / k), abs=1e-3)
    assert total  # some probes had a right and a wrong sample
    state = trainer.strategy.state_dict()
    again = make_strategy(spec, list(trainer.rms))
    again.load_state_dict(json.loads(json.dumps(state)))  # the checkpoint's JSON round trip
    assert again.validation_means() == trainer.strategy.validation_means()


def test_rerank_draws_score_one_right_and_one_wrong_sample_of_each_spot_checked_probe(world, tmp_path):
    """`round.rerank_draws: 1`: after the warm-up the router's pick scores one right and one wrong sample of each
    informative probe (2 RM passes), not every distinct sample; the same probes are sampled and found informative.
    `round.retest_draws: 1` does the same for re-tested probes."""
    lines = {}
    for draws in (None, 1):
        trainer = make_trainer(world, "laser", tmp_path / str(draws), feedback="rerank_gain")
        trainer.settings = trainer.settings.model_copy(update={"rerank_draws": draws, "rerank_prompts": 40,
                                                               "rerank_skip_settled": False,
                                                               "rerank_good_enough": None})
        trainer.round = trainer.settings.rerank_warmup  # past the warm-up: one RM per probe
        lines[draws] = trainer.run_round()["probes"]
    every, drawn = lines[None], lines[1]
    assert every["sampled"] == drawn["sampled"] == 40 and every["informative"] == drawn["informative"] > 0
    assert drawn["rm_forward"] == 2 * drawn["informative"] < every["rm_forward"], (every, drawn)
    # A re-tested probe (settled, scored anyway) checks a sure pick: `rerank_draws` does not reach it, every sample
    # is scored, unless `retest_draws` says how many. A router told that one RM is right everywhere is sure of every
    # probe; with `retest: 1` all of them are re-tested.
    retests = {}
    for name, update in {"every": {"rerank_draws": 1, "retest_draws": None},
                         "drawn": {"rerank_draws": None, "retest_draws": 1}}.items():
        trainer = make_trainer(world, "laser", tmp_path / f"retest-{name}", feedback="rerank_gain")
        trainer.settings = trainer.settings.model_copy(update={**update, "rerank_prompts": 40, "retest": 1.0,
                                                               "rerank_good_enough": None})
        contexts = trainer.embedder.embed([ex.prompt for ex in trainer.validation])
        for _ in range(3):
            for k in range(trainer.strategy.k):
                trainer.strategy.observe(contexts, trainer.strategy._one_per_instance(np.full(len(contexts), k)),
                                         np.full(len(contexts), 1.0 if k == 0 else -1.0))
        trainer.round = trainer.settings.rerank_warmup
        retests[name] = trainer.run_round()["probes"]
        assert retests[name]["retested"] == retests[name]["sampled"] == 40  # none skipped
        assert retests[name]["confident"] == 0
    every, drawn = retests["every"], retests["drawn"]
    assert every["informative"] == drawn["informative"] > 0
    assert every["rm_forward"] > 2 * every["informative"] == drawn["rm_forward"], retests


def test_draw_scored_keeps_k_of_each_kind_and_estimates_the_full_gain_without_bias():
    from laser.tasks import check
    from laser.tasks.base import Example
    from laser.training.feedback import pairwise_gain
    from laser.training.router_feedback import draw_scored

    ex = Example(id="r", prompt="Q: reverse abc A:", answer="cba", domain="strings")
    cands = ["cba", "cba", "abc", "cab", "cba", "bca"]  # 3 right (one completion sampled 3 times), 3 wrong
    kinds = [np.array([check(ex, c) for c in cands])]  # what the gold answer accepts, as the round computes it
    assert draw_scored(kinds, [cands], [None], np.random.default_rng(0)) == [cands]
    score = {"cba": 2.0, "abc": 3.0, "cab": 1.0, "bca": 0.0}  # orders cba above 2 of the 3 wrong samples
    right = np.array([c == "cba" for c in cands])
    full = pairwise_gain(np.array([score[c] for c in cands]), right)
    rng = np.random.default_rng(0)
    gains = []
    for _ in range(3000):
        (one,) = draw_scored(kinds, [cands], [1], rng)
        assert len(one) == 2 and one[0] == "cba" and one[1] != "cba"  # one right, then one wrong
        gains.append(pairwise_gain(np.array([score[c] for c in one]), np.array([True, False])))
    assert full == pytest.approx(1 / 3) and np.mean(gains) == pytest.approx(full, abs=0.04)
    (two,) = draw_scored(kinds, [cands], [2], rng)
    assert two[:2] == ["cba", "cba"] and len(two) == 4 and "cba" not in two[2:]
    (every,) = draw_scored(kinds, [cands], [5], rng)  # a kind with fewer samples than k: all of them
    assert sorted(every) == sorted(cands)
    with pytest.raises(ValueError):
        RoundSettings(rerank_draws=0)
