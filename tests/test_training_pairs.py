"""Preference pair rules: which candidates become (chosen, rejected), and what is skipped and counted."""

from __future__ import annotations

import numpy as np
import pytest

from laser.training import build_pairs

NAN = float("nan")


def test_max_min_pairs_best_with_worst():
    rows, stats = build_pairs(["p0", "p1"], [["a", "b", "c"], ["x", "y"]],
                              [np.array([0.2, 0.9, -0.5]), np.array([1.0, 3.0])])
    assert [(r["prompt"], r["chosen"], r["rejected"]) for r in rows] == [("p0", "b", "c"), ("p1", "y", "x")]
    assert rows[0]["margin"] == pytest.approx(1.4) and rows[1]["instance"] == 1
    assert stats.as_dict() == {"prompts": 2, "pairs": 2, "skipped_no_pair": 0, "unscorable": 0}


def test_top_vs_rest_pairs_best_with_the_next_ranks():
    rows, _ = build_pairs(["p"], [["a", "b", "c", "d"]], [np.array([4.0, 3.0, 2.0, 1.0])], rule="top_vs_rest",
                          num_pairs=2)
    assert [(r["chosen"], r["rejected"]) for r in rows] == [("a", "b"), ("a", "c")]


def test_max_random_is_seeded_and_never_pairs_the_best_with_itself():
    s = [np.array([5.0, 1.0, 2.0, 3.0, 4.0])]
    picks = {build_pairs(["p"], [list("abcde")], s, rule="max_random", rng=np.random.default_rng(k))[0][0]["rejected"]
             for k in range(40)}
    assert picks == set("bcde")
    a = build_pairs(["p"], [list("abcde")], s, rule="max_random", rng=np.random.default_rng(3))[0]
    b = build_pairs(["p"], [list("abcde")], s, rule="max_random", rng=np.random.default_rng(3))[0]
    assert a == b


def test_ties_margins_duplicates_and_unscorable_are_skipped_and_counted():
    rows, stats = build_pairs(
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
        build_pairs(["p"], [["a", "b"]], [np.array([1.0, 0.0])], **kwargs)


def test_mismatched_inputs_name_the_prompt():
    with pytest.raises(ValueError, match="prompt 0: 2 candidates but 3 scores"):
        build_pairs(["p"], [["a", "b"]], [np.array([1.0, 0.0, 2.0])])
    with pytest.raises(ValueError, match="differ in length"):
        build_pairs(["p", "q"], [["a", "b"]], [np.array([1.0, 0.0])])


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
    gain, nothing = rerank_gain(exs, texts, scores)
    assert gain.tolist() == [1.0, -1.0, 0.0, 0.0, 0.0, 0.0] and nothing == 1
    gain, _ = rerank_gain(exs[:1], [[" 7", " 07", " 3"]], [np.array([3.0, 0.0, 1.0])])
    assert gain.tolist() == [0.0]  # right pairs: (7, 3) +1, (07, 3) -1
    with pytest.raises(ValueError, match="2 candidates but 3 scores"):
        rerank_gain(exs[:1], [[" 7", " 3"]], [np.zeros(3)])
