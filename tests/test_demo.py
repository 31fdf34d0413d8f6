"""`laser demo` on the reduced world: every strategy x seed trained for real, a comparison, reuse of finished runs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from laser.cli import main
from laser.demo import best_single
from laser.report import RunSummary, StrategyResult, format_comparison, mean_ci
from laser.report.router import router_checks, wall_times


def test_mean_ci_is_the_student_t_interval():
    m, h = mean_ci([0.4, 0.5, 0.6])
    assert m == pytest.approx(0.5) and h == pytest.approx(4.302653 * 0.1 / np.sqrt(3), rel=1e-5)
    assert np.isnan(mean_ci([0.3])[1])


def _run(seed, acc, forward, match=None, initial=0.3, picks=None, elapsed=9):
    rounds = [{"type": "round", "oracle_match": m} for m in (match or [])]
    evals = [{"round": 0, "accuracy": {"a": initial}, "mean_accuracy": initial, "rm_forward_total": 0},
             {"round": 4, "accuracy": {"a": acc}, "mean_accuracy": acc, "rm_forward_total": forward,
              "elapsed_s": elapsed, "picks": picks or {"a": {"x": 10}}}]
    from pathlib import Path

    return RunSummary(Path(f"r{seed}"), rounds, evals, seed=seed)


def test_router_checks_and_the_comparison_table_from_known_numbers():
    results = {"laser": StrategyResult("laser", [
                   _run(0, 0.40, 100, [0.2, 0.4, 0.8, 0.9], picks={"a": {"x": 9, "verbose": 1}}),
                   _run(1, 0.42, 100, [0.5, 0.7], picks={"a": {"x": 10}})]),
               "random": StrategyResult("random", [_run(0, 0.35, 100), _run(1, 0.41, 100)]),
               "ensemble:mean": StrategyResult("ensemble:mean", [_run(0, 0.45, 300, elapsed=8),
                                                                 _run(1, 0.43, 300, elapsed=8)]),
               "oracle": StrategyResult("oracle", [_run(0, 0.41, 100), _run(1, 0.43, 100)]),
               "single:x": StrategyResult("single:x", [_run(0, 0.30, 100), _run(1, 0.33, 100)]),
               "single:y": StrategyResult("single:y", [_run(0, 0.20, 100), _run(1, 0.21, 100)])}
    checks = {c.text.split(",")[0]: c for c in router_checks(results, hacker="verbose")}
    # The best single RM is found among the results (x, 31.5%): +10 and +9 points per seed.
    single = checks["LASeR >= best single RM (single:x) + 5 points"]
    assert single.holds and single.detail.startswith("+9.5 ± ")
    assert checks["LASeR within 2 points of the oracle"].holds                       # -1 point both seeds
    # random - laser per seed: +5 and +1 points; t(0.975, 1) * sd / sqrt(2) = 25.4 > 3: CI includes 0
    assert not checks["LASeR > random"].holds and "+3.0 ± 25.4" in checks["LASeR > random"].detail
    assert not checks["LASeR > ensemble:mean"].holds
    assert checks["LASeR improves on the SFT policy by >= 5 points"].holds           # 30% -> 41%
    match = checks["LASeR picks the oracle's RM on >= 80% of second-half instances"]
    assert not match.holds and match.detail.startswith("78%")                         # mean of 0.85 and 0.7
    hacker = checks["LASeR sends < 5% of instances to the length-hacked verbose"]
    assert not hacker.holds and hacker.detail == "5.0% of all instances"              # 1 of 20
    forward = checks["LASeR's RM forward passes (validation probes included) <= 0.3x ensemble:mean's"]
    assert not forward.holds and "(0.33x)" in forward.detail
    # Wall time is no claim: a figure side by side (9 s vs 8 s here), never a pass or a fail.
    assert not any("wall" in c.text for c in checks.values())
    assert "laser 9 s, random 9 s, ensemble:mean 8 s" in wall_times(results)
    assert router_checks({"random": results["random"]}) == []                         # nothing to check
    table = format_comparison(results, reference="laser")
    assert "| SFT policy (round 0) | 30.0 | 30.0 |" in table
    # random - laser per seed: -5 and -1 points; mean -3.0, t(0.975, 1) * sd / sqrt(2) = 12.706 * 2.83 / 1.41
    assert "| random | " in table and "-3.0 ± 25.4" in table
    assert best_single({"x": {"a": 0.9, "b": 0.5}, "y": {"a": 0.6, "b": 0.7}}) == "single:x"


def test_router_checks_against_the_baselines_with_the_same_labels():
    """No harm: LASeR may trail single:auto / ensemble:val_weighted / static:by_domain by at most 1 point; the
    detail says whether the paired interval includes 0. The RM-pass ratio is checked against each ensemble."""
    laser = StrategyResult("laser", [_run(0, 0.80, 100), _run(1, 0.82, 100), _run(2, 0.81, 100)])
    results = {"laser": laser,
               "single:auto": StrategyResult("single:auto", [_run(0, 0.805, 90), _run(1, 0.83, 90), _run(2, 0.80, 90)]),
               "ensemble:val_weighted": StrategyResult("ensemble:val_weighted", [
                   _run(0, 0.84, 500), _run(1, 0.85, 500), _run(2, 0.86, 500)]),
               "static:by_domain": StrategyResult("static:by_domain", [
                   _run(0, 0.70, 90), _run(1, 0.72, 90), _run(2, 0.71, 90)])}
    checks = {c.text: c for c in router_checks(results)}
    # single:auto chooses its RM: it is no fixed single RM, and not the "best single RM" LASeR must beat by 5 points.
    assert not any(text.startswith("LASeR >= best single RM") for text in checks)
    auto = checks["LASeR >= single:auto - 1 point (no harm)"]
    # laser - single:auto per seed: -0.5, -1.0, +1.0 -> -0.17 points: held, the interval includes 0
    assert auto.holds and auto.detail.startswith("-0.2 ± ") and auto.detail.endswith("CI including 0")
    weighted = checks["LASeR >= ensemble:val_weighted - 1 point (no harm)"]
    # -4, -3, -5 points: lost, and the interval (± 2.5) excludes 0
    assert not weighted.holds and weighted.detail.startswith("-4.0 ± 2.5") and weighted.detail.endswith("excluding 0")
    assert checks["LASeR >= static:by_domain - 1 point (no harm)"].detail.startswith("+10.0 ± ")
    cost = checks["LASeR's RM forward passes (validation probes included) <= 0.3x ensemble:val_weighted's"]
    assert cost.holds and "(0.20x)" in cost.detail
    # Each row says how many validation labels the strategy read and what scoring those probes cost.
    for r in results["single:auto"].runs:
        r.rounds = [{"probes": {"sampled": 12, "rm_forward": 300, "informative": 7}}] * 2 + [{"probes": None}]
    results["laser"].runs[0].rounds = [{"probes": {"sampled": 6, "rm_forward": 40}}]
    table = format_comparison(results, reference="laser")
    assert "| 90 | 24 (600) |" in table and "| 100 | 2 (13) |" in table and "| 90 | 0 (0) |" in table


def test_laser_demo_on_the_quick_world_and_reuse(quick_world, tmp_path, monkeypatch, capsys):
    assets, _ = quick_world
    monkeypatch.setenv("LASER_ASSETS_DIR", str(assets.root.parent))
    out = tmp_path / "demo"
    # The HF engine: this test is about the demo's runs, table and reuse; the runs' vLLM engine (and its start-up,
    # some seconds per run, six runs here) is covered by the bench test's runs and the train tests.
    args = ["demo", "--set", "models.embedded=quick", "--set", "engine.engine=hf", "--set", "rounds=2",
            "--set", "eval_every=2",
            "--set", "round.prompts_per_round=8", "--set", "round.n=4", "--set", "tasks.test_per_domain=16",
            "--set", "round.rerank_prompts=4", "--set", "round.rerank_warmup=0", "--seeds", "0", "1",
            "--strategies", "laser", "ensemble:mean",
            "best-single", "--out", str(out), "--jobs", "1", "--quiet"]  # in this process (workers: test_bench)
    assert main(args) == 0
    printed = capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    single = best_single(assets.lineup()[1])
    assert list(results["strategies"]) == ["laser", "ensemble:mean", single]
    for runs in results["strategies"].values():
        assert [r["seed"] for r in runs] == [0, 1]
        assert all(r["final"]["round"] == 2 for r in runs)
    forward = {s: results["strategies"][s][0]["final"]["rm_forward_total"] for s in ("laser", "ensemble:mean")}
    assert forward["ensemble:mean"] > 2 * forward["laser"] > 0                    # K = 3 RMs score every sample
    assert "| SFT policy (round 0) |" in printed and "Claims:" in printed
    report = (out / "report.md").read_text()
    assert "LASeR > ensemble:mean" in report and (out / "accuracy.png").exists() and (out / "picks.png").exists()
    # Again: every run is found finished and reused, with the same table.
    assert main(args) == 0
    again = capsys.readouterr().out
    assert again.count("finished earlier, reused") == 6

    def table(text):
        return text[text.index("| strategy |"):text.index("Claims:")]

    assert table(again) == table(printed)
    assert main([*args[:-1], "--strategies", "nope", "--quiet"]) == 2
