"""Rewarded soups (`laser soup`, `soup:uniform` in `laser bench`): real single-RM runs on the quick world, their
final policies interpolated exactly, evaluated as the runs evaluate, and mismatched runs refused."""

import json
import shutil

import pytest
import torch
import yaml

from laser.cli import main
from laser.soup import (
    SoupError,
    check_mixable,
    final_weights,
    interpolate,
    load_ingredient,
    parse_weights,
    run_soup,
    simplex_grid,
)


@pytest.fixture(scope="module")
def bench(quick_world, tmp_path_factory):
    """`laser bench` of two single-RM strategies and their uniform soup on the quick world (HF engine)."""
    assets, _ = quick_world
    root = tmp_path_factory.mktemp("soup")
    out, runs = root / "results", root / "runs"
    mp = pytest.MonkeyPatch()
    mp.setenv("LASER_ASSETS_DIR", str(assets.root.parent))
    # 12 prompts of 6 samples (the quick config's): with 8 of 4 the quick world's policy sampled one answer only
    # on most prompts, and the two RMs happened to order the 6 pairs left alike, so both runs trained the same.
    args = ["bench", "--quick", "--set", "models.embedded=quick", "--set", "rounds=2", "--set", "eval_every=2",
            "--set", "checkpoint_every=2", "--set", "round.prompts_per_round=12", "--set", "round.n=6",
            "--set", "tasks.test_per_domain=16", "--set", "engine.engine=hf",
            "--strategies", "single:reasoning", "single:strings", "soup:uniform", "--seeds", "0", "--jobs", "2",
            "--runs", str(runs), "--out", str(out), "--quiet"]
    try:
        assert main(args) == 0
        yield out, runs
    finally:
        mp.undo()


def test_bench_reports_the_uniform_soup_of_its_single_runs_with_their_cost(bench):
    out, runs = bench
    report = (out / "report.md").read_text()
    raw = json.loads((out / "results.json").read_text())
    assert set(raw["strategies"]) == {"single:reasoning", "single:strings", "soup:uniform"}
    singles = [raw["strategies"][s][0] for s in ("single:reasoning", "single:strings")]
    soup = raw["strategies"]["soup:uniform"][0]
    # No training of its own: its cost is the sum of the two trainings it mixes.
    assert soup["evals"][-1]["rm_forward_total"] == sum(s["evals"][-1]["rm_forward_total"] for s in singles) > 0
    assert soup["evals"][-1]["weights"] == [0.5, 0.5] and soup["evals"][0] == singles[0]["evals"][0]
    assert "| soup:uniform |" in report and "(pareto.png)" in report
    saved = json.loads((runs / "soup-uniform-s0" / "soup.json").read_text())
    assert saved["rows"][0]["accuracy"] == soup["evals"][-1]["accuracy"]
    # The front: a grid of weights on the first seed's runs (step 0.25: 5 soups), in the report's Pareto view.
    assert [r["weights"] for r in raw["soup_front"]] == [[1.0, 0.0], [0.75, 0.25], [0.5, 0.5], [0.25, 0.75],
                                                         [0.0, 1.0]]
    for png in ("pareto.png", "accuracy.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    # A one-hot soup is the run itself: the same weights, scored by the same evaluation as the run's last one.
    for row, single in ((raw["soup_front"][0], singles[0]), (raw["soup_front"][-1], singles[1])):
        assert row["accuracy"] == single["evals"][-1]["accuracy"]


def test_interpolation_is_exact(bench):
    _, runs = bench
    a, b = (load_ingredient(runs / f"single-{rm}-s0") for rm in ("reasoning", "strings"))
    wa, wb = final_weights(a), final_weights(b)
    assert any(not torch.equal(wa[k], wb[k]) for k in wa)  # two different fine-tunings
    one_hot = interpolate([wa, wb], (1.0, 0.0))
    for k in wa:  # bit for bit
        assert one_hot[k].dtype == wa[k].dtype and torch.equal(one_hot[k].view(torch.int32), wa[k].view(torch.int32))
    half = interpolate([wa, wb], (0.5, 0.5))
    assert all(torch.equal(half[k], (wa[k] + wb[k]) / 2) for k in wa)
    third = interpolate([wa, wb, wa], (0.25, 0.5, 0.25))
    assert all(torch.allclose(third[k], half[k], atol=1e-7) for k in wa)
    with pytest.raises(SoupError, match="3 weights for 2 runs"):
        interpolate([wa, wb], (0.2, 0.3, 0.5))
    wb["extra.weight"] = torch.zeros(2)
    with pytest.raises(SoupError, match="different parameters"):
        interpolate([wa, wb], (0.5, 0.5))


def test_weights_are_points_of_the_simplex():
    assert parse_weights("uniform", 4) == [(0.25,) * 4]
    assert parse_weights("0.2,0.8", 2) == [(0.2, 0.8)]
    assert simplex_grid(3, 0.5) == [(1.0, 0.0, 0.0), (0.5, 0.5, 0.0), (0.5, 0.0, 0.5), (0.0, 1.0, 0.0),
                                    (0.0, 0.5, 0.5), (0.0, 0.0, 1.0)]
    assert len(parse_weights("grid", 4, step=0.25)) == 35
    assert all(abs(sum(w) - 1) < 1e-12 for w in simplex_grid(4, 0.25))
    for spec, k, msg in (("0.5,0.6", 2, "sum to 1.1"), ("0.5,0.5", 3, "2 weights for 3 runs"),
                         ("-0.5,1.5", 2, "weights >= 0"), ("half,half", 2, "uniform, grid or 2 comma-separated")):
        with pytest.raises(SoupError, match=msg):
            parse_weights(spec, k)
    with pytest.raises(SoupError, match="must divide 1"):
        simplex_grid(3, 0.3)


def _copy(src, dst, edit_config=None):
    shutil.copytree(src, dst)
    if edit_config:
        cfg = yaml.safe_load((dst / "config.yaml").read_text())
        edit_config(cfg)
        (dst / "config.yaml").write_text(yaml.safe_dump(cfg))
    return dst


def test_runs_that_cannot_be_mixed_are_refused_with_the_reason(bench, tmp_path):
    _, runs = bench
    a, b = runs / "single-reasoning-s0", runs / "single-strings-s0"
    check_mixable([load_ingredient(a), load_ingredient(b)])
    with pytest.raises(SoupError, match="at least two runs"):
        check_mixable([load_ingredient(a)])
    with pytest.raises(SoupError, match="listed twice"):
        check_mixable([load_ingredient(a), load_ingredient(a)])
    other_eval = _copy(b, tmp_path / "t", lambda c: c["eval"].update(temperature=0.7))
    with pytest.raises(SoupError, match=r"evaluated differently \(eval.temperature: 0.0 vs 0.7\)"):
        check_mixable([load_ingredient(a), load_ingredient(other_eval)])
    other_start = _copy(b, tmp_path / "s")
    (other_start / "assets.json").write_text(json.dumps({"digest": "0123456789abcdef"}))
    with pytest.raises(SoupError, match="started from different policies .*0123456789abcdef"):
        check_mixable([load_ingredient(a), load_ingredient(other_start)])
    unfinished = _copy(b, tmp_path / "u", lambda c: c.update(rounds=6))
    with pytest.raises(SoupError, match="not finished: its newest checkpoint is round 2 of 6"):
        load_ingredient(unfinished)
    bigger = _copy(b, tmp_path / "h")
    latest = (bigger / "checkpoints" / "latest").read_text().strip()
    cfg_path = bigger / "checkpoints" / latest / "policy" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["hidden_size"] *= 2
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(SoupError, match=r"different architectures \(hidden_size: "):
        check_mixable([load_ingredient(a), load_ingredient(bigger)])
    with pytest.raises(SoupError, match="no checkpoint"):
        shutil.rmtree(other_eval / "checkpoints")
        load_ingredient(other_eval)


def test_laser_soup_command_writes_its_table_and_plot_and_reuses_them(bench, tmp_path, capsys):
    _, runs = bench
    a, b = str(runs / "single-reasoning-s0"), str(runs / "single-strings-s0")
    out = tmp_path / "soup"
    assert main(["soup", a, b, "--weights", "0.25,0.75", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "| 0.25 | 0.75 |" in printed and "Cost: 2 trainings (4 DPO updates" in printed
    assert (out / "soup.png").read_bytes()[:4] == b"\x89PNG"
    assert "| λ single-reasoning-s0 |" in (out / "soup.md").read_text()
    stamp = (out / "soup.json").stat().st_mtime_ns
    again = run_soup([a, b], "0.25,0.75", out=out, progress=False)
    assert (out / "soup.json").stat().st_mtime_ns == stamp and again.rows[0]["weights"] == [0.25, 0.75]  # reused
    assert main(["soup", a, b, "--weights", "0.5,0.6", "--quiet"]) == 2
    assert "a soup is a convex combination" in capsys.readouterr().err
    assert main(["soup", a, str(tmp_path / "nowhere"), "--quiet"]) == 2
    assert "is not a run directory" in capsys.readouterr().err
