"""Preference pair rules: which candidates become (chosen, rejected), and what is skipped and counted."""

from __future__ import annotations

import numpy as np
import pytest

from laser.rewards import ScoreNormalizer
from laser.strategies.scoring import CandidateTable
from laser.training import build_pairs, pair_scores

NAN = float("nan")


def pairs_of(prompts, texts, scores, **kwargs):
    """build_pairs on the flat table of per-prompt candidate lists and their scores."""
    return build_pairs(CandidateTable.of(prompts, texts), np.concatenate(scores), **kwargs)


def test_max_min_pairs_best_with_worst():
    rows, stats = pairs_of(["p0", "p1"], [["a", "b", "c"], ["x", "y"]],
                              [np.array([0.2, 0.9, -0.5]), np.array([1.0, 3.0])])
    assert [(r["prompt"], r["chosen"], r["rejected"]) for r in rows] == [("p0", "b", "c"), ("p1", "y", "x")]
    assert rows[0]["margin"] == pytest.approx(1.4) and rows[1]["instance"] == 1
    assert stats.as_dict() == {"prompts": 2, "pairs": 2, "skipped_no_pair": 0, "skipped_low_chosen": 0,
                               "unscorable": 0}


def test_min_chosen_skips_prompts_whose_best_candidate_scores_low():
    texts = [["a", "b"], ["c", "d"], ["e", "f"], ["g"]]
    scores = [np.array([0.2, -1.0]), np.array([0.5, -1.0]), np.array([1.5, 0.9]), np.array([-2.0])]
    rows, stats = pairs_of(["low", "edge", "high", "one"], texts, scores, min_chosen=0.5)
    assert [(r["prompt"], r["chosen"], r["rejected"]) for r in rows] == [("edge", "c", "d"), ("high", "e", "f")]
    # "low" is skipped for its chosen score, "one" for having no second candidate (not a low chosen one)
    assert stats.skipped_no_pair == 2 and stats.skipped_prompts == [0, 3] and stats.skipped_low_chosen == 1
    assert len(pairs_of(["low", "edge", "high", "one"], texts, scores)[0]) == 3          # off by default
    rows, stats = pairs_of(["all"], [["a", "b"]], [np.array([0.4, 0.1])], min_chosen=0.5, rule="top_vs_rest")
    assert rows == [] and stats.skipped_low_chosen == 1


def test_pair_scores_normalize_a_combination_of_several_rms_again():
    """A mean of several normalized scores spreads less than each: pairs are built on it normalized again, so
    what min_chosen keeps does not depend on the combination's scale; one RM's score is used as it is."""
    texts = [["a", "b"], ["c", "d"], ["e", "f"], ["g", "h"]]
    combined = np.array([0.1, -0.2, 0.6, -0.5, 0.3, 0.2, -0.1, -0.6])
    one = ScoreNormalizer("zscore")
    assert np.array_equal(pair_scores(combined, False, one), combined) and one.per_rm == {}
    wide = pair_scores(combined, True, ScoreNormalizer("zscore"))
    narrow = pair_scores(0.4 * combined + 0.1, True, ScoreNormalizer("zscore"))
    np.testing.assert_allclose(narrow, wide)
    assert np.array_equal(np.argsort(wide), np.argsort(combined))  # the order within the round is kept
    kept = [pairs_of(list("pqrs"), texts, np.split(x, 4), min_chosen=0.5)[1] for x in (wide, 0.4 * combined + 0.1)]
    assert kept[0].pairs == 2 and kept[1].pairs == 0  # the narrow mean, as it was, would reach 0.5 nowhere
    assert kept[1].skipped_low_chosen == 4
    # The running statistics carry over rounds: a later round is mapped against every round so far.
    norm = ScoreNormalizer("zscore")
    pair_scores(combined, True, norm)
    later = pair_scores(combined + 1.0, True, norm)
    assert later.mean() > 0.5 and "combined" in norm.per_rm


def test_top_vs_rest_pairs_best_with_the_next_ranks():
    rows, _ = pairs_of(["p"], [["a", "b", "c", "d"]], [np.array([4.0, 3.0, 2.0, 1.0])], rule="top_vs_rest",
                          num_pairs=2)
    assert [(r["chosen"], r["rejected"]) for r in rows] == [("a", "b"), ("a", "c")]


def test_max_random_is_seeded_and_never_pairs_the_best_with_itself():
    s = [np.array([5.0, 1.0, 2.0, 3.0, 4.0])]
    picks = {pairs_of(["p"], [list("abcde")], s, rule="max_random", rng=np.random.default_rng(k))[0][0]["rejected"]
             for k in range(40)}
    assert picks == set("bcde")
    a = pairs_of(["p"], [list("abcde")], s, rule="max_random", rng=np.random.default_rng(3))[0]
    b = pairs_of(["p"], [list("abcde")], s, rule="max_random", rng=np.random.default_rng(3))[0]
    assert a == b


def test_ties_margins_duplicates_and_unscorable_are_skipped_and_counted():
    rows, stats = pairs_of(
        ["tie", "small", "dup", "nan", "one", "ok"],
        [["a", "b"], ["a", "b"], ["a", "a"], ["a", "b", "c"], ["a"], ["a", "b"]],
        [np.array([1.0, 1.0]), np.array([1.0, 1.05]), np.array([2.0, 0.0]), np.array([NAN, 1.0, NAN]),
         np.array([3.0]), np.array([0.0, 1.0])],
        min_margin=0.1)
    assert [r["prompt"] for r in rows] == ["ok"]
    assert stats.skipped_no_pair == 5 and stats.skipped_prompts == [0, 1, 2, 3, 4] and stats.unscorable == 2


@pytest.mark.parametrize("kwargs, match", [
    (dict(rule="best"), "unknown pair rule"), (dict(min_margin=-1), "min_margin"), (dict(num_pairs=0), "num_pairs"),
])
def test_bad_arguments_are_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        pairs_of(["p"], [["a", "b"]], [np.array([1.0, 0.0])], **kwargs)


def test_mismatched_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="3 values for 2 candidates"):
        build_pairs(CandidateTable.of(["p"], [["a", "b"]]), np.array([1.0, 0.0, 2.0]))
    with pytest.raises(ValueError, match="got 2 prompts and 1 candidate lists"):
        CandidateTable.of(["p", "q"], [["a", "b"]])


def test_the_candidate_table_is_flat_and_cuts_back_per_prompt():
    t = CandidateTable.of(["p", "q", "r"], [["a", "b"], [], ["c"]])
    assert t.texts == ["a", "b", "c"] and t.instance.tolist() == [0, 0, 2] and len(t) == 3
    assert [x.tolist() for x in t.per_instance(np.array([1.0, 2.0, 3.0]))] == [[1.0, 2.0], [], [3.0]]
    rows, stats = build_pairs(t, np.array([1.0, 2.0, 3.0]))
    assert [(r["prompt"], r["chosen"], r["rejected"], r["instance"]) for r in rows] == [("p", "b", "a", 0)]
    assert stats.skipped_prompts == [1, 2]


def test_local_gain_credits_each_instance_with_its_nearest_validation_examples():
    from laser.training.feedback import local_gain

    gain = np.array([1.0, 2.0, -3.0, -5.0])
    val = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    inst = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert local_gain(gain, inst, val, neighbors=2).tolist() == [1.5, -4.0]
    assert local_gain(gain, inst, val, neighbors=1).tolist() == [1.0, -3.0]
    assert local_gain(gain, inst, val, neighbors=10).tolist() == [-1.25, -1.25]  # capped at every example


def test_rerank_gain_is_how_the_rm_orders_right_and_wrong_samples():
    from laser.tasks.base import Example
    from laser.training.feedback import rerank_gain

    exs = [Example(id=f"e{i}", prompt=f"Q: {i} A:", answer="7", answer_format="integer") for i in range(6)]
    texts = [[" 7", " 3", " 5"]] * 6
    scores = [np.array([2.0, 0.0, 1.0]),            # the right one above both wrong ones: +1
              np.array([0.0, 2.0, 1.0]),            # below both: -1
              np.array([1.0, 2.0, 0.0]),            # above one, below the other: 0
              np.array([1.0, 1.0, 1.0]),            # cannot separate them: 0
              np.array([np.nan, np.nan, np.nan]),   # could not score: 0
              np.array([0.0, 2.0, 1.0])]
    texts = texts[:5] + [[" 3", " 4", " 5"]]         # every candidate wrong: nothing to tell, 0 for any RM
    def gain_of(examples, texts, scores):
        return rerank_gain(examples, CandidateTable.of([ex.prompt for ex in examples], texts), np.concatenate(scores))

    gain, nothing = gain_of(exs, texts, scores)
    assert gain.tolist() == [1.0, -1.0, 0.0, 0.0, 0.0, 0.0] and nothing == 1
    gain, _ = gain_of(exs[:1], [[" 7", " 07", " 3"]], [np.array([3.0, 0.0, 1.0])])
    assert gain.tolist() == [0.0]  # right pairs: (7, 3) +1, (07, 3) -1
    with pytest.raises(ValueError, match="3 values for 2 candidates"):
        gain_of(exs[:1], [[" 7", " 3"]], [np.zeros(3)])
    with pytest.raises(ValueError, match="2 examples for 1 prompts"):
        rerank_gain(exs[:2], CandidateTable.of(["Q"], [[" 7"]]), np.zeros(1))
