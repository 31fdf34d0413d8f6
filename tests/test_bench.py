"""`laser bench` and the grid it runs: reuse only on the same config, parallel runs, the results folder."""

import json

import pytest

from laser.cli import main
from laser.config import RunConfig
from laser.grid import GridError, job_config, run_state
from laser.report import StrategyResult, format_comparison, rounds_to_reach
from laser.report.runs import RunSummary


def _summary(accs, rounds=(0, 5, 10), seed=0):
    evals = [{"round": r, "accuracy": {"a": x}, "mean_accuracy": x, "rm_forward_total": 10 * r}
             for r, x in zip(rounds, accs, strict=True)]
    return RunSummary(run_dir=__import__("pathlib").Path("x"), rounds=[], evals=evals, seed=seed)


def test_rounds_to_reach_uses_the_mean_over_seeds():
    res = StrategyResult("s", [_summary([0.1, 0.3, 0.5]), _summary([0.1, 0.5, 0.5], seed=1)])
    assert rounds_to_reach(res, 0.4) == 5           # mean 0.4 at round 5
    assert rounds_to_reach(res, 0.45) == 10
    assert rounds_to_reach(res, 0.6) is None
    table = format_comparison({"ens": StrategyResult("ens", [_summary([0.1, 0.2, 0.4])]), "s": res}, reach="ens")
    assert "rounds to reach ens (40.0)" in table
    assert table.splitlines()[-1].endswith(" 5 |") and table.splitlines()[-2].endswith(" 10 |")


def test_a_run_read_before_its_last_round_is_not_finished(tmp_path):
    """`read_run` knows the rounds a run's config asks for: a run read mid-way (its last evaluation an earlier
    round's) is not `finished`, so a paired comparison cannot take its accuracy for the final one."""
    from laser.report import read_run

    (tmp_path / "config.yaml").write_text("strategy: laser\nseed: 4\nrounds: 40\n")
    evals = [{"type": "eval", "round": r, "accuracy": {"a": 0.5}, "mean_accuracy": 0.5} for r in (0, 5, 10)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in evals))
    run = read_run(tmp_path)
    assert (run.seed, run.planned, run.final["round"], run.finished) == (4, 40, 10, False)
    more = [{"type": "eval", "round": r, "accuracy": {"a": 0.6}, "mean_accuracy": 0.6} for r in range(15, 45, 5)]
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write("".join(json.dumps(e) + "\n" for e in more))
    assert read_run(tmp_path).finished


def test_report_titles_count_in_the_singular_and_plural():
    from laser.report import grid_title

    assert grid_title(1, 2) == "1 strategy x 2 seeds" and grid_title(13, 1) == "13 strategies x 1 seed"


def test_a_run_directory_with_another_config_is_not_reused(tmp_path):
    import yaml

    base = RunConfig()
    c = job_config(base, "random", 3, tmp_path)
    assert c.name == "random-s3" and c.seed == 3 and run_state(c) == "new"
    c.run_dir.mkdir(parents=True)
    other = c.model_copy(update={"rounds": 7})
    (c.run_dir / "config.yaml").write_text(yaml.safe_dump(other.model_dump(mode="json")))
    with pytest.raises(GridError, match="rounds: 7 there, 40 asked"):
        run_state(c)
    # Written by a version without a setting: the run is not taken for one of today's default.
    older = c.model_dump(mode="json")
    del older["round"]["rerank_n"]
    (c.run_dir / "config.yaml").write_text(yaml.safe_dump(older))
    with pytest.raises(GridError, match=r"does not record round\.rerank_n \(written by an older version\)"):
        run_state(c)
    (c.run_dir / "config.yaml").write_text(yaml.safe_dump(c.model_dump(mode="json")))
    (c.run_dir / "metrics.jsonl").write_text("")
    assert run_state(c) == "new" and not (c.run_dir / "metrics.jsonl").exists()  # never checkpointed: redo


def test_a_run_of_other_embedded_assets_is_not_reused_or_resumed(tmp_path):
    import yaml

    from laser.assets import AssetRecipe

    c = job_config(RunConfig(), "random", 0, tmp_path)
    c.run_dir.mkdir(parents=True)
    (c.run_dir / "config.yaml").write_text(yaml.safe_dump(c.model_dump(mode="json")))
    (c.run_dir / "checkpoints").mkdir()
    (c.run_dir / "checkpoints" / "latest").write_text("round-000010")
    with pytest.raises(GridError, match=r"trained on embedded assets unknown \(no assets.json\)"):
        run_state(c)  # written before runs recorded their assets: which world it saw is unknown
    (c.run_dir / "assets.json").write_text(json.dumps({"digest": "0123456789abcdef"}))
    with pytest.raises(GridError, match=f"assets 0123456789abcdef, but this version builds {AssetRecipe().digest()}"):
        run_state(c)
    (c.run_dir / "assets.json").write_text(json.dumps({"digest": AssetRecipe().digest()}))
    assert run_state(c) == "resume"


def test_laser_bench_in_parallel_on_the_quick_world(quick_world, tmp_path, monkeypatch, capsys):
    assets, _ = quick_world
    monkeypatch.setenv("LASER_ASSETS_DIR", str(assets.root.parent))
    out, runs = tmp_path / "results", tmp_path / "runs"
    args = ["bench", "--quick", "--set", "models.embedded=quick", "--set", "rounds=2", "--set", "eval_every=1",
            "--set", "checkpoint_every=2", "--set", "round.prompts_per_round=8", "--set", "round.n=4",
            "--set", "tasks.test_per_domain=16", "--set", "round.rerank_prompts=4", "--set", "round.rerank_warmup=0",
            "--strategies", "laser", "ensemble:mean", "--seeds", "0", "--jobs", "2", "--runs", str(runs),
            "--out", str(out), "--quiet"]
    assert main(args) == 0
    report = (out / "report.md").read_text()
    assert "Command: `laser bench --quick" in report and "Machine: " in report and " cores of " in report
    assert "rounds to reach ensemble:mean" in report and "| laser |" in report and "| ensemble:mean |" in report
    assert "2 strategies x 1 seed\n" in report and "0 of 2 runs finished earlier and reused" in report
    raw = json.loads((out / "results.json").read_text())
    assert set(raw["strategies"]) == {"laser", "ensemble:mean"}
    for name, rs in raw["strategies"].items():
        assert [r["seed"] for r in rs] == [0] and [e["round"] for e in rs[0]["evals"]] == [0, 1, 2]
        assert set(rs[0]["stage_seconds"]) >= {"generate", "score", "train"}
        assert (runs / f"{name.replace(':', '-')}-s0" / "train.log").exists()  # each ran in its own process
    ens, las = (raw["strategies"][s][0]["rm_forward_per_round"] for s in ("ensemble:mean", "laser"))
    assert sum(ens) > 2 * sum(las) > 0
    for png in ("accuracy.png", "picks.png", "stages.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    # Again: both runs are reused, not retrained; a changed setting is refused instead of mixed in.
    capsys.readouterr()
    assert main(args) == 0
    assert capsys.readouterr().err.count("finished earlier, reused") == 2
    assert "2 of 2 runs finished earlier and reused" in (out / "report.md").read_text()
    assert main([*args, "--set", "round.n=3"]) == 2
    assert "holds a run with another config (round.n: 4 there, 3 asked)" in capsys.readouterr().err


def _world_run(initial: dict, final: dict, seed: int) -> RunSummary:
    evals = [{"round": r, "accuracy": acc, "mean_accuracy": sum(acc.values()) / len(acc), "rm_forward_total": 0}
             for r, acc in ((0, initial), (40, final))]
    return RunSummary(run_dir=__import__("pathlib").Path("x"), rounds=[], evals=evals, seed=seed)


def test_world_checks_state_the_headroom_with_paired_intervals():
    from laser.report.world import format_checks, format_facts, home_domains, world_checks

    start = {"a": 0.3, "b": 0.3}
    finals = {"oracle": [{"a": 0.9, "b": 0.8}, {"a": 0.85, "b": 0.9}, {"a": 0.9, "b": 0.85}],
              "single:ja": [{"a": 0.9, "b": 0.1}, {"a": 0.8, "b": 0.0}, {"a": 0.9, "b": 0.05}],
              "single:jb": [{"a": 0.2, "b": 0.4}, {"a": 0.1, "b": 0.42}, {"a": 0.0, "b": 0.38}],
              "single:verbose": [{"a": 0.0, "b": 0.0}] * 3,
              "ensemble:mean": [{"a": 0.5, "b": 0.5}, {"a": 0.4, "b": 0.6}, {"a": 0.5, "b": 0.55}]}
    results = {n: StrategyResult(n, [_world_run(start, f, s) for s, f in enumerate(fs)]) for n, fs in finals.items()}
    table = {"ja": {"a": 0.95, "b": 0.3}, "jb": {"a": 0.4, "b": 0.9}, "verbose": {"a": 0.5, "b": 0.5}}
    assert home_domains(table) == {"ja": ["a"], "jb": ["b"], "verbose": []}
    head = world_checks(results, table)[0]
    # Best single: ja (mean 0.458); paired oracle - ja per seed: 0.35, 0.475, 0.4 -> mean 0.408.
    assert head.holds and head.detail.startswith("+40.8 ± ") and "(ja)" in head.text
    raises = [c for c in world_checks(results, table) if c.text.startswith("single:")]
    assert [(c.text.split(" ")[0], c.holds) for c in raises] == [
        ("single:ja", True), ("single:ja", True), ("single:jb", False), ("single:jb", True)]
    assert raises[2].detail == "b +10.0"                 # jb lifts its home by 10 points only: missed
    assert raises[1].detail == "b -25.0"                 # and pulls the other domain down
    ens = [c for c in world_checks(results, table) if c.text.startswith("ensemble")][0]
    assert ens.holds and ens.detail.startswith("oracle - ensemble:mean +35.8")
    assert format_checks(world_checks(results, table)).count("- [x]") == 5
    # In a bench report they describe the world, answered yes or no, not as requirements.
    facts = format_facts(world_checks(results, table))
    assert facts.count("? yes: ") == 5 and facts.count("? no: ") == 1 and "[" not in facts
    assert world_checks({k: v for k, v in results.items() if k != "oracle"}, table) == []


def test_the_bench_help_names_the_default_strategies(capsys):
    from laser.bench import DEFAULT_STRATEGIES

    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "default: " + " ".join(DEFAULT_STRATEGIES) + " (singles" in text
