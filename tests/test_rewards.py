"""Reward-model backends on the embedded reduced world, checked against direct transformers forward passes."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from laser.assets.pairs import correctness_pairs, wrong_answer
from laser.rewards import (
    FunctionRM,
    RewardError,
    ScoreNormalizer,
    aggregate,
    format_agreement,
    load_reward_model,
    preference_agreement,
    score_matrix,
    verifier,
)
from laser.rewards import aggregators as agg
from laser.rewards.hf import HFSequenceClassifierRM, ImplicitDPORM, LikelihoodRM


@pytest.fixture(scope="module")
def candidates(world):
    """Test prompts, each with its gold answer and two wrong ones (as the policy would write them)."""
    _, suite = world
    rng = random.Random(0)
    prompts, completions = [], []
    for ex in suite.test[::4]:
        for text in (ex.target(), wrong_answer(ex, rng), wrong_answer(ex, rng)):
            prompts.append(ex.prompt)
            completions.append(" " + text)
    return prompts, completions


def _direct_classifier_scores(path, prompts, completions):
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    out = []
    with torch.no_grad():
        for p, c in zip(prompts, completions, strict=True):
            ids = tok(p + c + tok.eos_token, return_tensors="pt")
            out.append(model(**ids).logits[0, 0].item())
    return np.array(out)


def test_hf_classifier_matches_a_direct_forward_pass_and_batches(world, candidates):
    assets, _ = world
    path = assets.reward_models["reasoning"]
    prompts, completions = candidates
    rm = HFSequenceClassifierRM(str(path), batch_size=16)
    got = rm.score(prompts, completions)
    assert got.n_unscorable == 0 and got.forward == len(set(zip(prompts, completions, strict=True)))
    np.testing.assert_allclose(got.values, _direct_classifier_scores(path, prompts, completions), atol=1e-5)
    one = HFSequenceClassifierRM(str(path), batch_size=1, cache_size=None).score(prompts, completions)
    np.testing.assert_allclose(one.values, got.values, atol=1e-5)


def test_classifier_reproduces_the_build_report(world):
    """The backend's pairwise accuracy on the held-out pairs is exactly what the build measured."""
    assets, suite = world
    held_out = correctness_pairs(suite.test, random.Random(f"{assets.recipe.seed}-held-out"))
    for name, path in assets.reward_models.items():
        rm = load_reward_model("hf", str(path))
        prompts = [r["prompt"] for r in held_out]
        chosen = rm.score(prompts, [r["chosen"] for r in held_out]).values
        rejected = rm.score(prompts, [r["rejected"] for r in held_out]).values
        domains = np.array([r["domain"] for r in held_out])
        for d, acc in assets.report["reward_models"][name]["held_out_pairwise_accuracy"].items():
            assert float((chosen > rejected)[domains == d].mean()) == pytest.approx(acc), (name, d)


def test_cache_and_in_call_duplicates_are_scored_once(world, candidates):
    assets, _ = world
    prompts, completions = candidates
    rm = HFSequenceClassifierRM(str(assets.reward_models["strings"]))
    unique = len(set(zip(prompts, completions, strict=True)))
    assert unique < len(prompts)          # yes/no prompts carry the same wrong answer twice
    first = rm.score(prompts + prompts[:5], completions + completions[:5])
    assert first.forward == unique and first.cache_hits == len(prompts) + 5 - unique
    again = rm.score(prompts, completions)
    assert again.forward == 0 and again.cache_hits == len(prompts)
    np.testing.assert_array_equal(again.values, first.values[:len(prompts)])
    assert rm.stats.forward == unique and rm.stats.cache_hits == len(prompts) + 5 - unique + len(prompts)


def test_empty_and_overlong_completions_are_scored_and_counted(world):
    assets, _ = world
    rm = HFSequenceClassifierRM(str(assets.reward_models["reasoning"]), max_length=40)
    got = rm.score(["Q: is Bako older than Tiru? A:"] * 3, ["", " yes", " " + "x" * 200])
    assert np.isfinite(got.values).all()
    assert got.truncated == 1 and rm.stats.truncated == 1


def test_bad_rows_are_isolated_and_counted(world, candidates):
    """A backend that raises on one row (extra unit test: the failure is injected) loses only that row."""
    assets, _ = world
    prompts, completions = candidates
    rm = HFSequenceClassifierRM(str(assets.reward_models["reasoning"]), batch_size=8)
    real = rm._score_batch

    def flaky(p, c):
        if " POISON" in c:
            raise RuntimeError("cannot score this row")
        return real(p, c)

    rm._score_batch = flaky
    bad = list(completions)
    bad[3] = " POISON"
    got = rm.score(prompts, bad)
    assert got.unscorable.tolist() == [i == 3 for i in range(len(bad))]
    ok = np.arange(len(bad)) != 3
    clean = HFSequenceClassifierRM(str(assets.reward_models["reasoning"])).score(prompts, completions)
    np.testing.assert_allclose(got.values[ok], clean.values[ok], atol=1e-5)
    assert rm.stats.unscorable == 1 and len(rm.stats.errors) == 1


def test_input_errors_are_typed(world):
    assets, _ = world
    rm = FunctionRM(lambda prompts, completions: [1.0] * len(prompts), name="ones")
    with pytest.raises(RewardError, match="one prompt per"):
        rm.score(["a", "b"], ["x"])
    with pytest.raises(RewardError, match="not a single string"):
        rm.score("a", "x")
    with pytest.raises(RewardError, match="expected str"):
        rm.score(["a"], [None])
    with pytest.raises(RewardError, match="backend"):
        load_reward_model("nope", "x")
    with pytest.raises(RewardError, match="ref_path"):
        load_reward_model("implicit_dpo", str(assets.policy))
    with pytest.raises(RewardError, match="head"):
        HFSequenceClassifierRM(str(assets.reward_models["reasoning"]), head=3)


def _direct_completion_logprobs(model, tok, prompt, completion):
    p = tok(prompt)["input_ids"]
    c = tok(completion, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    ids = torch.tensor([p + c])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0, :-1].float(), -1)
    return np.array([logp[len(p) - 1 + k, t].item() for k, t in enumerate(c)])


def test_likelihood_rm_is_the_mean_completion_log_likelihood(world, candidates):
    assets, _ = world
    prompts, completions = candidates
    rm = LikelihoodRM(str(assets.policy), batch_size=7)
    got = rm.score(prompts, completions)
    tok = AutoTokenizer.from_pretrained(assets.policy)
    model = AutoModelForCausalLM.from_pretrained(assets.policy).eval()
    want = [_direct_completion_logprobs(model, tok, p, c).mean() for p, c in zip(prompts, completions, strict=True)]
    np.testing.assert_allclose(got.values, want, atol=1e-5)


def test_implicit_dpo_rm_is_beta_times_the_log_ratio(world, candidates, tmp_path):
    assets, _ = world
    prompts, completions = candidates
    same = ImplicitDPORM(str(assets.policy), ref_path=str(assets.policy), beta=0.1)
    np.testing.assert_allclose(same.score(prompts, completions).values, 0.0, atol=1e-6)
    # A "trained" policy: the reference with perturbed weights, saved as a standard directory.
    tok = AutoTokenizer.from_pretrained(assets.policy)
    moved = AutoModelForCausalLM.from_pretrained(assets.policy)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in moved.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=gen))
    moved.save_pretrained(tmp_path / "dpo")
    tok.save_pretrained(tmp_path / "dpo")
    rm = ImplicitDPORM(str(tmp_path / "dpo"), ref_path=str(assets.policy), beta=0.5, batch_size=5)
    got = rm.score(prompts, completions).values
    ref = AutoModelForCausalLM.from_pretrained(assets.policy).eval()
    moved.eval()
    want = [0.5 * (_direct_completion_logprobs(moved, tok, p, c).sum()
                   - _direct_completion_logprobs(ref, tok, p, c).sum())
            for p, c in zip(prompts, completions, strict=True)]
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert np.abs(got).max() > 1e-3


def test_function_rm_and_verifier(world):
    _, suite = world
    ex = suite.test[0]
    v = verifier(suite.test)
    got = v.score([ex.prompt, ex.prompt, "Q: unknown A:"], [" " + ex.target(), " " + wrong_answer(ex, random.Random(0)),
                                                             " x"])
    assert got.values[:2].tolist() == [1.0, 0.0] and got.unscorable.tolist() == [False, False, True]

    def broken(prompts, completions):
        raise ValueError("boom")

    f = FunctionRM(broken)
    out = f.score(["a", "b"], ["x", "y"])
    assert out.n_unscorable == 2 and f.stats.unscorable == 2
    nan = FunctionRM(lambda prompts, completions: [float("nan"), float("inf"), 2.0, None])
    assert nan.score(["a"] * 4, ["1", "2", "3", "4"]).unscorable.tolist() == [True, True, False, True]


def test_aggregators_match_their_formulas():
    s = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0], [-1.0, 5.0, 5.0]])
    np.testing.assert_allclose(agg.mean(s), [2.0, 0.0, 3.0])
    np.testing.assert_allclose(agg.weighted(s, [1, 0, 1]), [2.0, 0.0, 2.0])
    np.testing.assert_allclose(agg.worst_case(s), [1.0, 0.0, -1.0])
    np.testing.assert_allclose(agg.uncertainty_weighted(s, lam=0.5), [2 - 0.5 * 2 / 3, 0.0, 3 - 0.5 * 8.0])
    w = np.exp(-s[0]) / np.exp(-s[0]).sum()
    np.testing.assert_allclose(agg.soft_max_min(s)[0], (w * s[0]).sum())
    np.testing.assert_allclose(agg.soft_max_min(s)[1], 0.0)                     # ties: every weight equal
    np.testing.assert_allclose(agg.soft_max_min(s, temperature=1e-3)[2], -1.0, atol=1e-9)
    np.testing.assert_allclose(agg.lower_quantile(s), [1.0, 0.0, -1.0])        # ceil(3/3) = 1 lowest
    np.testing.assert_allclose(agg.lower_quantile(np.array([[4.0, 1.0, 3.0, 2.0]])), [1.5])  # ceil(4/3) = 2
    np.testing.assert_allclose(agg.max_median(s), [2.0, 0.0, 5.0])
    sig = 1 / (1 + np.exp(-s))
    np.testing.assert_allclose(agg.bernoulli_nash(s), np.prod(sig, axis=1) ** (1 / 3))
    one = np.array([[0.7], [-2.0]])
    for name in agg.AGGREGATORS:
        params = {"weights": [3.0]} if name == "weighted" else {}
        got = aggregate(name, one, **params)
        want = 1 / (1 + np.exp(-one[:, 0])) if name == "bernoulli_nash" else one[:, 0]
        np.testing.assert_allclose(got, want, err_msg=name)                      # K = 1
    with pytest.raises(RewardError, match="weights"):
        agg.weighted(s, [1, -1, 1])
    with pytest.raises(RewardError, match="unknown aggregator"):
        aggregate("vote", s)
    with pytest.raises(RewardError, match="shape"):
        agg.mean(np.ones(3))
    assert np.isfinite(agg.bernoulli_nash(np.array([[800.0, -800.0]]))).all()


def test_normalizers_put_rms_on_one_scale_and_round_trip():
    rng = np.random.default_rng(0)
    norm = ScoreNormalizer("zscore")
    big = rng.normal(100, 10, 500)
    out = norm("big", big)
    np.testing.assert_allclose(out, (big - big.mean()) / big.std(), atol=1e-9)
    small = norm("small", np.array([0.1, np.nan, 0.3]))
    assert np.isnan(small[1]) and norm.per_rm["small"].count == 2
    again = ScoreNormalizer()
    again.load_state_dict(norm.state_dict())
    np.testing.assert_allclose(again("big", [110.0], update=False), norm("big", [110.0], update=False))
    rank = ScoreNormalizer("rank")
    np.testing.assert_allclose(rank("r", [1.0, 2.0, 2.0, 3.0]), [0.125, 0.5, 0.5, 0.875])
    q = ScoreNormalizer("quantile")   # history 0..9: 20th percentile 1.8 -> 0, 80th 7.2 -> 1, linear
    np.testing.assert_allclose(q("q", np.arange(10.0))[[0, 1, 2, 9]], [-1.8 / 5.4, -0.8 / 5.4, 0.2 / 5.4, 7.2 / 5.4])
    np.testing.assert_allclose(q("q", [4.5], update=False), [0.5])
    # Not clipped: several candidates above the 80th percentile keep their order (a pair needs the best one).
    top = q("q", [8.0, 9.5, 8.5], update=False)
    assert top[1] > top[2] > top[0] > 1.0
    one = ScoreNormalizer("quantile")
    np.testing.assert_allclose(one("q", [3.0]), [0.5])                       # coinciding quantiles
    assert np.all(np.diff(one("q", [2.0, 3.0, 4.0], update=False)) > 0)
    with pytest.raises(RewardError, match="unknown normalizer"):
        ScoreNormalizer("minmax")


def test_agreement_by_hand_and_on_the_embedded_rms(world, candidates):
    scores = {"a": np.array([1.0, 2.0, 3.0, 0.0, 1.0]), "b": np.array([3.0, 2.0, 1.0, 0.0, 1.0]),
              "c": np.array([1.0, 2.0, 3.0, 1.0, 1.0])}
    groups = [0, 0, 0, 1, 1]
    t = preference_agreement(scores, groups, domains=["x", "x", "x", "y", "y"])
    assert t[("a", "b")]["x"] == (0.0, 3) and t[("a", "b")]["y"] == (1.0, 1) and t[("a", "b")]["all"] == (0.25, 4)
    assert t[("a", "c")]["x"] == (1.0, 3) and t[("a", "c")]["y"][1] == 0   # c ties on prompt 1: not counted
    assert "0.00 (3)" in format_agreement(t)
    assets, suite = world
    prompts, completions = candidates
    models = {n: load_reward_model("hf", str(p)) for n, p in assets.reward_models.items()}
    models["verifier"] = verifier(suite.test)
    names, m = score_matrix(models, prompts, completions)
    assert m.shape == (len(prompts), len(models)) and not np.isnan(m).any()
    domain_of = {ex.prompt: ex.domain for ex in suite.test}
    table = preference_agreement(dict(zip(names, m.T, strict=True)), prompts, [domain_of[p] for p in prompts])
    # Agreement with the verifier (ground truth) recovers each specialist's domains.
    assert table[("reasoning", "verifier")]["yes_no"][0] >= 0.7
    assert table[("strings", "verifier")]["strings"][0] >= 0.7
    assert 0.25 <= table[("reasoning", "verifier")]["strings"][0] <= 0.75
    # Per yes/no prompt: gold vs each wrong answer counts; the two identical wrong answers tie and do not.
    n_yes_no = len({p for p in prompts if domain_of[p] == "yes_no"})
    assert table[("reasoning", "verifier")]["yes_no"][1] == 2 * n_yes_no


def test_dtype_is_configurable_and_checked(world, candidates):
    assets, _ = world
    prompts, completions = candidates
    path = str(assets.reward_models["reasoning"])
    fp32 = load_reward_model("hf", path).score(prompts, completions).values
    bf16 = load_reward_model("hf", path, dtype="bfloat16").score(prompts, completions).values
    assert np.isfinite(bf16).all() and np.abs(bf16 - fp32).max() < 0.1
    assert np.corrcoef(bf16, fp32)[0, 1] > 0.99
    with pytest.raises(RewardError, match="dtype"):
        load_reward_model("hf", path, dtype="int8")


def _as_two_ranks(fn):
    """fn(ranks) run by two threads as ranks 0 and 1 of one group whose `gather` is a real exchange between them
    (what torch.distributed's all_gather_object does across processes); returns [rank 0's result, rank 1's]."""
    import threading

    from laser.strategies.scoring import Ranks

    box, results, errors = [None, None], [None, None], [None, None]
    barrier = threading.Barrier(2, timeout=120)

    def gather_of(rank):
        def gather(obj):
            box[rank] = obj
            barrier.wait()
            out = list(box)
            barrier.wait()
            return out
        return gather

    def run(rank):
        try:
            results[rank] = fn(Ranks(rank, 2, gather_of(rank)))
        except Exception as e:  # noqa: BLE001 - reported to the test below
            errors[rank] = e

    threads = [threading.Thread(target=run, args=(r,)) for r in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    return results, errors


def test_ranks_share_the_forward_passes_and_end_with_one_process_scores(world, candidates):
    """Two ranks scoring one request each run about half of the uncached pairs; both get every score, the same
    cache and the same counts as one process (a resumed run and the metrics see one RM, whatever the ranks)."""
    from laser.strategies.scoring import _score_all

    assets, _ = world
    path = str(assets.reward_models["strings"])
    prompts, completions = candidates
    single = HFSequenceClassifierRM(path, batch_size=16)
    want = single.score(prompts, completions)
    per_rank = [{"strings": HFSequenceClassifierRM(path, batch_size=16)} for _ in range(2)]
    ran = [0, 0]
    for rank, rms in enumerate(per_rank):  # a spy on each rank's share of the model's work
        rm = rms["strings"]
        rm.compute = (lambda compute, r: lambda keys: (ran.__setitem__(r, ran[r] + len(keys)), compute(keys))[1])(
            rm.compute, rank)
    requests = {"strings": (prompts, completions)}
    got, errors = _as_two_ranks(lambda ranks: _score_all(per_rank[ranks.rank], requests, ranks))
    assert errors == [None, None], errors
    unique = len(set(zip(prompts, completions, strict=True)))
    assert sum(ran) == unique == want.forward and abs(ran[0] - ran[1]) <= 1  # each rank ran half
    for rank in (0, 1):
        scores, rm = got[rank]["strings"], per_rank[rank]["strings"]
        np.testing.assert_allclose(scores.values, want.values, atol=1e-5)
        assert (scores.forward, scores.cache_hits) == (want.forward, want.cache_hits)
        shared = {k: v for k, v in rm.stats.as_dict().items() if k != "computed"}  # computed: this rank's share
        assert shared == {k: v for k, v in single.stats.as_dict().items() if k != "computed"}
        assert rm.stats.computed == ran[rank] and single.stats.computed == unique
        assert list(rm._cache) == list(single._cache)
    again, errors = _as_two_ranks(lambda ranks: _score_all(per_rank[ranks.rank], requests, ranks))
    assert errors == [None, None] and sum(ran) == unique  # all cached: no rank runs anything
    assert [a["strings"].forward for a in again] == [0, 0]
    np.testing.assert_array_equal(again[0]["strings"].values, got[0]["strings"].values)


def test_a_failing_rank_stops_every_rank_with_its_error():
    from laser.rewards.base import RewardModelFailed
    from laser.strategies.scoring import _score_all

    def fails_on(rank):
        def fn(prompts, completions):
            if rank == 1:
                raise RewardModelFailed("rm b: server answered 401")
            return [1.0] * len(prompts)
        return fn

    per_rank = [{"b": FunctionRM(fails_on(r), name="b")} for r in (0, 1)]
    requests = {"b": (["p"] * 4, ["a", "b", "c", "d"])}
    _, errors = _as_two_ranks(lambda ranks: _score_all(per_rank[ranks.rank], requests, ranks))
    assert [str(e) for e in errors] == ["rm b: server answered 401"] * 2  # rank 0 is not left waiting
