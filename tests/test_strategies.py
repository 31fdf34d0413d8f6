"""Reward strategies behind the one interface: assignments, score combination, learning, state."""

from __future__ import annotations

import numpy as np
import pytest

from laser.rewards import aggregate
from laser.strategies import (
    BanditStrategy,
    Batch,
    EnsembleStrategy,
    OracleStrategy,
    StrategyError,
    make_strategy,
)

RMS = ("math", "commonsense", "knowledge", "verbose")


def contexts(n: int, d: int = 6, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_single_random_sequential_assign_one_rm_per_instance():
    x = contexts(50)
    single = make_strategy("single:knowledge", RMS).assign(x, Batch())
    assert (single.arms == 2).all() and (single.forward_per_instance == 1).all()
    assert single.instances_of("knowledge").tolist() == list(range(50)) and len(single.instances_of("math")) == 0

    rnd = make_strategy("random", RMS, seed=1)
    a = rnd.assign(x, Batch())
    assert set(a.arms.tolist()) == {0, 1, 2, 3} and np.allclose(a.probs, 0.25)
    state = rnd.state_dict()
    b = rnd.assign(x, Batch())
    rnd.load_state_dict(state)
    assert rnd.assign(x, Batch()).arms.tolist() == b.arms.tolist()

    seq = make_strategy("sequential", RMS)
    assert [seq.assign(x, Batch(round=r)).arms[0] for r in range(6)] == [0, 1, 2, 3, 0, 1]


def test_combine_reads_the_assigned_rm():
    s = make_strategy("random", RMS, seed=0)
    a = s.assign(contexts(3), Batch())
    instance = np.array([0, 0, 1, 2, 2])
    scores = {rm: np.full(5, np.nan) for rm in RMS}
    for c, i in enumerate(instance):
        scores[RMS[a.arms[i]]][c] = 10.0 * a.arms[i] + c
    out = s.combine(scores, a, instance)
    assert out.tolist() == [10.0 * a.arms[i] + c for c, i in enumerate(instance)]
    with pytest.raises(StrategyError, match="shape"):
        s.combine({"math": np.zeros(4)}, a, instance)
    with pytest.raises(StrategyError, match="unknown reward models"):
        s.combine({"nope": np.zeros(5)}, a, instance)


def test_ensemble_aggregates_every_rm_and_skips_unscorable_cells():
    s = make_strategy("ensemble:worst_case", RMS)
    a = s.assign(contexts(2), Batch())
    assert a.mask.all() and (a.forward_per_instance == 4).all()
    instance = np.array([0, 0, 1])
    table = np.array([[1.0, 2.0, 3.0, 4.0], [0.5, -1.0, 0.0, 2.0], [3.0, np.nan, 1.0, 2.0]])
    scores = {rm: table[:, k] for k, rm in enumerate(RMS)}
    assert s.combine(scores, a, instance).tolist() == [1.0, -1.0, 1.0]
    mean = EnsembleStrategy(RMS, "mean")
    np.testing.assert_allclose(mean.combine(scores, a, instance)[:2], aggregate("mean", table[:2]))
    assert mean.combine(scores, a, instance)[2] == pytest.approx(2.0)


def test_oracle_uses_the_best_rm_per_domain():
    acc = {"math": {"arithmetic": 0.8, "yes_no": 0.5}, "commonsense": {"arithmetic": 0.5, "yes_no": 0.86},
           "knowledge": {"arithmetic": 0.4, "yes_no": 0.84}, "verbose": {"arithmetic": 0.4, "yes_no": 0.5}}
    s = make_strategy("oracle", RMS, oracle_table=acc)
    assert isinstance(s, OracleStrategy) and s.best_by_domain == {"arithmetic": "math", "yes_no": "commonsense"}
    a = s.assign(contexts(3), Batch(domains=["yes_no", "arithmetic", "yes_no"]))
    assert a.arms.tolist() == [1, 0, 1]
    with pytest.raises(StrategyError, match="domain"):
        s.assign(contexts(2), Batch())
    with pytest.raises(StrategyError, match="strings"):
        s.assign(contexts(1), Batch(domains=["strings"]))


def test_bandit_learns_the_best_rm_per_context_cluster():
    """Two context clusters, a different RM pays off in each: LinUCB's picks converge to them."""
    rng = np.random.default_rng(0)
    centers = np.eye(6)[:2]
    s = BanditStrategy(RMS, dim=6, policy="linucb", alpha=0.5, seed=0)
    best = np.array([1, 2])
    late = []
    for r in range(60):
        cluster = rng.integers(2, size=16)
        x = centers[cluster] + 0.05 * rng.standard_normal((16, 6))
        a = s.assign(x, Batch(round=r))
        reward = (a.arms == best[cluster]).astype(float) + 0.1 * rng.standard_normal(16)
        s.observe(x, a, reward)
        if r >= 40:
            late.append(np.mean(a.arms == best[cluster]))
    assert np.mean(late) > 0.9
    # State round-trips: the restored bandit makes the same choices.
    x = contexts(8)
    restored = BanditStrategy(RMS, dim=6, policy="linucb", alpha=0.5, seed=0)
    restored.load_state_dict(s.state_dict())
    assert restored.assign(x, Batch()).arms.tolist() == s.assign(x, Batch()).arms.tolist()


def test_rewards_observed_together_are_normalized_alike_for_every_rm():
    """The rerank warm-up observes every RM on the same probes. With normalized rewards (laser:exp3, or
    normalize_feedback) the RMs' equal rewards must map alike: observed one RM after the other, the first RM's
    rewards were mapped against a shorter history and the last RM's, here the length hacker's, came out higher."""
    x = contexts(6)
    rewards = np.array([1.0, 1.0, -1.0, 1.0, 0.5, 1.0])
    calls = [(x, make_strategy("random", RMS)._one_per_instance(np.full(6, k)), rewards) for k in range(len(RMS))]
    together = BanditStrategy(RMS, dim=6, policy="epsilon_greedy", epsilon=0.0, seed=0)
    together.observe_all(calls)
    means = together.policy.expected(np.zeros((1, 6)))[0]
    np.testing.assert_allclose(means, means[0])  # every RM earned the same, and is estimated the same
    one_by_one = BanditStrategy(RMS, dim=6, policy="epsilon_greedy", epsilon=0.0, seed=0)
    for call in calls:
        one_by_one.observe(*call)
    ordered = one_by_one.policy.expected(np.zeros((1, 6)))[0]
    assert ordered[-1] > ordered[0]  # what the one-by-one order did to the RM listed last
    assert together.state_dict()["feedback_history"] == one_by_one.state_dict()["feedback_history"]
    # Without normalization `observe_all` is `observe` call by call: the default router learns as before.
    plain, again = (BanditStrategy(RMS, dim=6, normalize_feedback=False, seed=0) for _ in range(2))
    plain.observe_all(calls)
    for call in calls:
        again.observe(*call)
    probe = contexts(5, seed=3)
    assert plain.assign(probe, Batch()).arms.tolist() == again.assign(probe, Batch()).arms.tolist()
    np.testing.assert_allclose(plain.policy.expected(probe), again.policy.expected(probe))


def test_centered_contexts_route_prompts_that_share_one_direction():
    """Contexts that are one common vector plus a small per-cluster part (as a policy's prompt embeddings
    are): with `center`, LinUCB sees the per-cluster part and learns a different RM per cluster."""
    rng = np.random.default_rng(0)
    common = np.eye(8)[0] * 10
    parts = np.eye(8)[1:4] * 0.5
    best = np.array([1, 2, 3])
    s = BanditStrategy(RMS, dim=8, policy="linucb", alpha=0.5, center=True, seed=0)
    late = []
    for r in range(60):
        cluster = rng.integers(3, size=16)
        x = common + parts[cluster] + 0.02 * rng.standard_normal((16, 8))
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        a = s.assign(x, Batch(round=r))
        s.observe(x, a, (a.arms == best[cluster]).astype(float) + 0.1 * rng.standard_normal(16))
        if r >= 40:
            late.append(np.mean(a.arms == best[cluster]))
    assert np.mean(late) > 0.9
    assert s.policy.dim == 9 and s.context_count == 60 * 16  # + the constant feature; every observed context
    restored = BanditStrategy(RMS, dim=8, policy="linucb", alpha=0.5, center=True, seed=0)
    restored.load_state_dict(s.state_dict())
    x = common + parts[[0, 1, 2]]
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    assert restored.assign(x, Batch()).arms.tolist() == s.assign(x, Batch()).arms.tolist() == [1, 2, 3]


def test_instances_without_feedback_get_the_bandits_best_guess_not_its_exploration():
    """Batch(explore=False) (a round's training prompts when the router learns from probes): the bandit
    exploits, so an RM it has never tried (LinUCB's optimism) is not picked there."""
    s = BanditStrategy(RMS, dim=6, policy="linucb", alpha=1.0, seed=0)
    x = contexts(8)
    s.observe(x, s._one_per_instance(np.full(8, 2)), np.full(8, 0.3))  # only RM 2 tried, modest reward
    assert set(s.assign(x, Batch()).arms.tolist()) != {2}              # exploring: untried RMs look better
    assert s.assign(x, Batch(explore=False)).arms.tolist() == [2] * 8   # exploiting: the one known to pay
    assert s.learns and not make_strategy("random", RMS).learns and not make_strategy("single:math", RMS).learns


def test_an_exploring_assignment_says_where_the_router_is_sure_of_its_pick():
    """`separation`: the chosen RM's lower bound (estimate minus exploration bonus) minus the best other
    RM's upper bound. Untrained, every RM's bound is the prior's; once one RM has paid where the others
    did not, often enough, the router is sure there (> 0); an exploiting assignment has none."""
    s = BanditStrategy(RMS, dim=6, policy="kernel_ucb", alpha=1.0, seed=0)
    x = contexts(8)
    first = s.assign(x, Batch())
    np.testing.assert_allclose(first.separation, -2.0)  # 0 - 1 (own lower bound) minus 0 + 1 (others' upper)
    np.testing.assert_allclose(first.lower, -1.0)       # the own lower bound alone
    for _ in range(20):
        for k in range(len(RMS)):
            s.observe(x, s._one_per_instance(np.full(8, k)), np.full(8, 0.9 if k == 2 else -0.5))
    later = s.assign(x, Batch())
    assert later.arms.tolist() == [2] * 8 and (later.separation > 0).all()
    assert later.subset(np.arange(8) < 3).separation.shape == (3,) == later.subset(np.arange(8) < 3).lower.shape
    assert (later.lower > 0.8).all() and (later.lower - later.separation > 0).all()  # others' upper bound > 0
    assert s.assign(x, Batch(explore=False)).separation is None


def test_a_router_ranks_the_rms_it_would_fall_back_to_and_names_the_ones_not_ruled_out():
    """`ranking`: each instance's RMs by the reward the router expects there (who stands in for an RM that cannot
    score); `runners_up`: besides the pick, the RMs whose upper bound still reaches the pick's lower bound."""
    s = BanditStrategy(RMS, dim=6, policy="kernel_ucb", alpha=1.0, seed=0)
    x = contexts(8)
    untrained = s.assign(x, Batch())
    assert len(untrained.runners_up(len(RMS))) == len(RMS) - 1  # nothing ruled out yet: every other RM
    rewards = {0: 0.6, 1: -0.9, 2: 0.9}
    for _ in range(20):
        for k in range(len(RMS)):
            s.observe(x, s._one_per_instance(np.full(8, k)), np.full(8, rewards.get(k, -0.5)))
    assert s.ranking(x)[:, :2].tolist() == [[2, 0]] * 8 and s.ranking(x)[:, -1].tolist() != [2] * 8
    (second, covers), = s.assign(x, Batch()).runners_up(3)  # the bad two are ruled out, the close one is not
    assert second.arms.tolist() == [0] * 8 and covers.all()
    fixed = make_strategy(f"single:{RMS[1]}", RMS)
    assert fixed.ranking(x).tolist() == [list(range(len(RMS)))] * 8


def test_batch_selection_picks_one_rm_from_the_mean_context():
    s = make_strategy("laser", RMS, dim=6, selection="batch")
    x = contexts(10)
    a = s.assign(x, Batch())
    assert len(set(a.arms.tolist())) == 1 and a.probs.shape == (10, 4)
    s.observe(x, a, np.ones(10))
    assert s.state_dict()["feedback_history"] == [1.0]


@pytest.mark.parametrize("spec, match", [
    ("bandit", "unknown strategy"), ("single", "single:<rm>"), ("single:nope", "no reward model"),
    ("ensemble:avg", "unknown aggregator"), ("laser:nope", "unknown policy"), ("oracle", "oracle_table"),
])
def test_bad_specs_are_clear_errors(spec, match):
    with pytest.raises(StrategyError, match=match):
        make_strategy(spec, RMS, dim=6)


def test_a_checkpoint_for_other_rms_is_refused():
    s = make_strategy("random", RMS)
    with pytest.raises(StrategyError, match="checkpoint"):
        make_strategy("random", RMS[:2]).load_state_dict(s.state_dict())


def test_picks_are_counted_once_per_domain_and_rm():
    from laser.strategies import Assignment

    mask = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0], [1, 1, 1]], dtype=bool)  # the last: an ensemble row
    a = Assignment(("x", "y", "z"), mask, np.array([0, 1, 0, -1]))
    got = a.picks_by_domain(["math", "code", "math", "code"])
    assert got == {"code": {"x": 1, "y": 2, "z": 1}, "math": {"x": 2}}
    assert list(got) == ["code", "math"] and sum(sum(r.values()) for r in got.values()) == int(mask.sum())
    with pytest.raises(ValueError, match="3 domains for 4 instances"):
        a.picks_by_domain(["math"] * 3)


def test_thompson_routers_are_sure_where_their_posterior_is_narrow_not_where_a_draw_fell():
    """LinTS: the bounds come from the posterior's mean and spread. Where every RM has been observed often (cluster
    A) the pick is settled and the bounds are the same on every call; where they have not (cluster B) it is not,
    whatever a draw says. Bounds from a posterior draw (2 * mean - draw) made both sides a coin toss."""
    s = BanditStrategy(RMS, dim=6, policy="lints", alpha=0.25, seed=0)
    a, b = contexts(4, seed=1), -contexts(4, seed=1)  # two opposite clusters
    for _ in range(40):
        for k in range(len(RMS)):
            s.observe(a, s._one_per_instance(np.full(4, k)), np.full(4, 0.9 if k == 2 else -0.5))
    calls = [s.assign(np.vstack([a, b]), Batch()) for _ in range(20)]
    sep = np.stack([c.separation for c in calls])
    assert (sep[:, :4] > 0).all() and (sep[:, 4:] <= 0).all()
    # Of the posterior alone where the pick is settled (in B it moves with the drawn pick, never above 0)
    np.testing.assert_allclose(sep[:, :4], np.broadcast_to(sep[0, :4], (20, 4)))
    assert {int(c.arms[i]) for c in calls for i in range(4)} == {2}
    assert len({int(c.arms[i]) for c in calls for i in range(4, 8)}) > 1  # cluster B: still sampled at random


def test_a_router_forgets_an_rm_whose_rewards_fall_and_learns_it_again(tmp_path):
    """The change detector: once RM 2's rewards drop where it was the sure pick, a block of `drift_window`
    rewards below its confidence interval makes the router forget it; what it earns now is learned from scratch, and the
    router moves to the next best RM. Without the detector, the old estimate holds the pick for long. The change is
    dated by the round of the batch it was seen in (`last_change`, which the probe stage reads), and kept in the
    state."""
    x = contexts(4)

    def run(threshold):
        s = BanditStrategy(RMS, dim=6, policy="kernel_ucb", alpha=1.0, seed=0, drift_threshold=threshold,
                           drift_window=4)
        good = {0: 0.3, 1: -0.5, 2: 0.9, 3: -0.5}
        for _ in range(30):
            for k, r in good.items():
                s.observe(x, s._one_per_instance(np.full(4, k)), np.full(4, r))
        assert s.take_forgotten() == [] and s.assign(x, Batch()).arms.tolist() == [2] * 4
        assert s.last_change is None
        for r in (30, 31):  # RM 2 now earns -0.4 where it earned 0.9: two rounds of its picks
            s.observe_all([(x, s._one_per_instance(np.full(4, 2)), np.full(4, -0.4))], Batch(round=r))
        return s

    detecting, blind = run(0.5), run(None)
    assert detecting.take_forgotten() == ["knowledge"]
    assert detecting.assign(x, Batch(explore=False)).arms.tolist() == [0] * 4
    assert blind.assign(x, Batch(explore=False)).arms.tolist() == [2] * 4
    state = detecting.state_dict()
    again = BanditStrategy(RMS, dim=6, policy="kernel_ucb", alpha=1.0, seed=0, drift_threshold=0.5, drift_window=4)
    again.load_state_dict(state)
    assert again.detector.blocks == detecting.detector.blocks
    # the first round's block of 4 rewards already fell below the interval; nothing was forgotten without a detector
    assert (detecting.last_change, again.last_change, blind.last_change) == (30, 30, None)
    # where: the mean context of the rewards that showed it (RM 2's four), through the checkpoint's file format too
    from laser.statefile import load_state, save_state

    again.load_state_dict(load_state(save_state(state, tmp_path / "router.safetensors")))
    np.testing.assert_array_equal(again.change_context, x.mean(axis=0))
    assert again.last_change == 30 and blind.change_context is None


def test_the_change_detector_leaves_an_rm_alone_while_the_router_is_still_learning_it():
    """A fresh router whose RMs earn -0.8 and 0.9 from the start: a bad reward is news while the interval is wide
    (an untried arm's estimate is 0), not a change. Measured from the estimate, every bad RM was 'forgotten' in the
    warm-up round; from the lower bound, none is, and the bad RM is still known to be bad."""
    s = BanditStrategy(RMS, dim=6, policy="kernel_ucb", alpha=1.0, seed=0, drift_threshold=0.5, drift_window=4,
                       normalize_feedback=False)  # rerank gains, as the trainer passes them
    x = contexts(8)
    for _ in range(10):
        for k in range(len(RMS)):
            s.observe(x, s._one_per_instance(np.full(8, k)), np.full(8, 0.9 if k == 1 else -0.8))
    assert s.take_forgotten() == []
    assert s.assign(x, Batch(explore=False)).arms.tolist() == [1] * 8


def test_validation_baselines_choose_from_each_rms_mean_gain_on_the_probes():
    """single:auto, static:by_domain and ensemble:val_weighted from known rerank gains of three RMs on probes of two
    domains: a is best on x, b on y, c is best overall but on neither domain; d is below chance everywhere."""
    from laser.strategies import Batch, make_strategy

    rms = ["a", "b", "c", "d"]
    gains = {"a": ([0.9, 0.7], [-0.2]), "b": ([0.1, 0.0], [1.0]), "c": ([0.6, 0.8], [0.8]), "d": ([-0.5, -0.3], [-0.9])}

    def taught(spec):
        s = make_strategy(spec, rms)
        assert s.learns and s.reads_every_rm
        for k, rm in enumerate(rms):
            x, y = gains[rm]
            a = s._one_per_instance(np.full(3, k))
            s.observe_all([(np.zeros((3, 2)), a, np.array([*x, *y]))], Batch(domains=["x", "x", "y"]))
        return s

    contexts, batch = np.zeros((3, 2)), Batch(domains=["x", "y", "z"])
    # Overall means: a 0.467, b 0.367, c 0.733, d -0.567.
    assert taught("single:auto").assign(contexts, batch).arms.tolist() == [2, 2, 2]
    # Per domain: x -> a (0.8), y -> b (1.0), z has no probes -> the overall best (c).
    by_domain = taught("static:by_domain")
    assert by_domain.assign(contexts, batch).arms.tolist() == [0, 1, 2]
    with pytest.raises(StrategyError, match="needs each instance's domain"):
        by_domain.assign(contexts, Batch())
    # Where x and y are sub-tasks of one data source, a per-source rule sees one group: the overall best, c.
    coarse = Batch(domains=["x", "y", "z"], sources=["s", "s", "t"])
    assert by_domain.assign(contexts, coarse).arms.tolist() == [2, 2, 2]
    merged = make_strategy("static:by_domain", rms)
    for k in range(4):
        merged.observe_all([(np.zeros((3, 2)), merged._one_per_instance(np.full(3, k)), np.array([*gains[rms[k]][0],
                            *gains[rms[k]][1]]))], Batch(domains=["x", "x", "y"], sources=["s", "s", "s"]))
    assert set(merged.validation_means()) == {"*", "s"}
    assert merged.assign(contexts, Batch(domains=["x", "y", "x"], sources=["s", "s", "s"])).arms.tolist() == [2, 2, 2]
    ens = taught("ensemble:val_weighted")
    w = np.array([1.4 / 3, 1.1 / 3, 2.2 / 3, 0.0])
    assert ens.weights() == pytest.approx(w / w.sum())  # d, below chance, gets no weight
    assignment = ens.assign(contexts, batch)
    assert assignment.forward_per_instance.tolist() == [4, 4, 4]
    scores = {"a": np.array([1.0, 0.0]), "b": np.array([0.0, 1.0]), "c": np.array([1.0, 1.0]),
              "d": np.array([5.0, 5.0])}
    combined = ens.combine(scores, assignment, np.array([0, 1]))
    assert combined == pytest.approx([(w[0] + w[2]) / w.sum(), (w[1] + w[2]) / w.sum()])
    # An RM that could not score a candidate is left out of its weighted mean.
    scores["c"] = np.array([np.nan, 1.0])
    assert ens.combine(scores, assignment, np.array([0, 1]))[0] == pytest.approx(w[0] / (w[0] + w[1]))
    # Before any probe: the first RM alone, and equal weights.
    assert make_strategy("single:auto", rms).assign(contexts, batch).arms.tolist() == [0, 0, 0]
    assert make_strategy("ensemble:val_weighted", rms).weights() == pytest.approx([0.25] * 4)
    with pytest.raises(StrategyError, match="static:by_domain"):
        make_strategy("static:by_source", rms)
    with pytest.raises(StrategyError, match="named 'auto'"):
        make_strategy("single:auto", ["auto", "b"])
