"""The package contract: bandits/ stands alone (no torch), the `laser` CLI runs, the benchmark is sound."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def test_bandits_imports_no_torch():
    sources = list((ROOT / "bandits").glob("*.py"))
    assert sources
    for f in sources:
        assert not re.search(r"^\s*(import|from)\s+torch", f.read_text(), re.M), f
    out = subprocess.run([sys.executable, "-c", "import sys, bandits; print('torch' in sys.modules)"],
                         capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "False"


def test_laser_cli_version_and_policies():
    out = subprocess.run([sys.executable, "-m", "laser.cli", "policies"], capture_output=True, text=True,
                         check=True, cwd=ROOT)
    for name in ("kernel_ucb", "linucb", "lints", "ucb1", "gaussian_thompson", "exp3", "epsilon_greedy", "uniform"):
        assert re.search(rf"^{name}\s", out.stdout, re.M), name
    assert "alpha=1.0" in out.stdout and "discount=1.0" in out.stdout
    ver = subprocess.run([sys.executable, "-m", "laser.cli", "--version"], capture_output=True, text=True,
                         cwd=ROOT)
    assert ver.returncode == 0 and ver.stdout.startswith("laser ")
    bare = subprocess.run([sys.executable, "-m", "laser.cli"], capture_output=True, text=True, cwd=ROOT)
    assert bare.returncode == 2 and "policies" in bare.stdout


def test_benchmark_implementations_agree_on_a_tiny_stream():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_bandits as bb

    k, d, steps = 3, 8, 300
    stream = bb.Stream(k, d, steps, seed=0)
    rows = {impl: bb.run(impl, make, stream, k, d, "one", steps, steps, repeats=1)
            for impl, make, _ in bb.implementations(k, d, "one")}
    # mabwiser's LinUCB and the LASeR code's step are the same algorithm with the same tie rule:
    # identical arm sequences, hence identical regret.
    assert rows["mabwiser LinUCB"].regret == rows["LASeR code LinUCB"].regret
    assert np.isfinite([r.regret for r in rows.values()]).all()
    assert all(r.instances == steps and r.per_second > 0 for r in rows.values())
    ratios = bb.ratios(list(rows.values()))
    assert {r["peer"] for r in ratios} == {"mabwiser LinUCB", "mabwiser LinTS", "LASeR code LinUCB"}


def test_feedback_by_domain_averages_rewards_and_counts_second_half_picks(tmp_path):
    import json

    sys.path.insert(0, str(ROOT / "benchmarks" / "lab"))
    import feedback_by_domain as fb

    lines = [{"type": "eval", "round": 0}]
    for r, (gain, picks) in enumerate([(0.001, {"a": 3}), (0.003, {"a": 1, "b": 1}), (0.002, {"b": 2}),
                                       (0.004, {"a": 1, "b": 3})]):
        lines.append({"type": "round", "round": r, "feedback_by_domain": {"x": {"a": gain}},
                      "picks_by_domain": {"x": picks}})
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    rows = fb.summarize([tmp_path]).splitlines()
    # a's reward: mean of 1, 3, 2, 4 (x1e-3) = 2.5, s.e. std/sqrt(4); rounds 2-3 are the second half: a 1 of 6.
    assert rows[2] == f"| x | a | 4 | +2.50 | {np.std([1, 3, 2, 4]) / 2:.2f} | 17% |"
    assert len(rows) == 3  # b picked but never rewarded: no row


def test_feedback_ceiling_is_the_share_of_resampled_means_that_rank_the_oracle_first():
    sys.path.insert(0, str(ROOT / "benchmarks" / "lab"))
    import feedback_by_domain as fb

    # a's rewards are 0 or 2 (mean 1), b's always 0.9: the mean of n draws of a beats b when more than
    # 0.45 n of them are 2: 1/2 for n = 1, 3/4 for n = 2, 11/16 for n = 4.
    gains = {("x", "a"): [0.0, 2.0], ("x", "b"): [0.9], ("y", "a"): [1.0], ("y", "b"): [3.0],
             ("z", "b"): [1.0]}
    oracle = {"x": "a", "y": "a", "z": "a"}
    for n, expected in [(1, 0.5), (2, 0.75), (4, 11 / 16)]:
        c = fb.ceiling(gains, oracle, n, draws=20_000)
        assert abs(c["x"] - expected) < 0.015, (n, c)
        assert c["y"] == 0.0  # another RM always scores higher
        assert c["z"] == 0.0  # the oracle's RM was never rewarded there
    assert abs(fb.ceiling(gains, {"x": "b"}, 2, draws=20_000)["x"] - 0.25) < 0.015  # b wins when a drew 0, 0
    rows = fb.ceiling_table(gains, {"x": "a", "y": "a"}, ns=(2,)).splitlines()
    assert rows[0] == "| rewards per (domain, RM) | x | y | mean |"
    assert re.fullmatch(r"\| 2 \| 7\d% \| 0% \| \*\*3\d%\*\* \|", rows[2]), rows[2]


def test_the_config_layer_imports_no_framework():
    """`laser.config` is the bottom layer: reading and validating a run config imports no torch, transformers,
    TRL or vLLM (the parts that use a section import it from there, never the other way round)."""
    import subprocess
    import sys

    code = ("import sys; from laser.config import load_config; load_config('configs/demo.yaml', ['round.n=4']); "
            "print(sorted(m for m in ('torch', 'transformers', 'trl', 'vllm') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_house_survey_finds_no_import_cycle_and_detects_one(tmp_path):
    """`tools/house.py --check`: no module-level import cycle in laser/ or bandits/, bandits/ on numpy/scipy only;
    and the survey does see a cycle and a stray dependency when a tree has them."""
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "house.py"), "--check"], capture_output=True,
                         text=True, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "module-level import cycles: 0" in out.stdout and "README.md: " in out.stdout
    assert ", 0 for none of these reasons" in out.stdout  # every function-local import has its reason
    sys.path.insert(0, str(ROOT / "tools"))
    import house

    assert house.cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert house.cycles({"a": {"b"}, "b": set()}) == []
    pkg = tmp_path / "laser"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from .sub import thing\n")
    (pkg / "sub" / "__init__.py").write_text("from laser import other\nimport torch\n\ndef f():\n    import json\n")
    (pkg / "other.py").write_text("from .sub import thing\nfrom typing import TYPE_CHECKING\n"
                                  "if TYPE_CHECKING:\n    from laser import sub\n")
    modules = {"laser", "laser.sub", "laser.other"}
    house.ROOT = tmp_path
    try:
        got = {m: house.imports(p, modules) for m, p in [("laser", pkg / "__init__.py"),
                                                          ("laser.sub", pkg / "sub" / "__init__.py"),
                                                          ("laser.other", pkg / "other.py")]}
    finally:
        house.ROOT = ROOT
    assert got["laser"][0] == {"laser.sub"} and got["laser.sub"][0] == {"laser.other"}
    assert got["laser.sub"][1] == 1 and "torch" in got["laser.sub"][2]  # one local import; torch seen
    assert got["laser.other"][0] == {"laser.sub"}  # the TYPE_CHECKING import is not a run-time edge
    assert house.cycles({m: g[0] for m, g in got.items()}) == [["laser.other", "laser.sub"]]  # not laser
    graph = {"laser.a": {"laser.b"}, "laser.b": set(), "laser.c": {"laser.a"}, "laser.d": set()}
    external = {"laser.a": set(), "laser.b": {"torch"}, "laser.c": set(), "laser.d": set()}
    # laser.d defers a project module that loads torch through another (heavy), json (no reason) and
    # scipy.stats (heavy, named by its submodule); then one that imports laser.d back (a cycle)
    why = house.classify_local("laser.d", [["laser.a"], ["json"], ["scipy.stats"]], graph, external)
    assert why == {"dispatch": 0, "heavy": 2, "cycle": 0, "upward": 0, "other": 1}
    graph["laser.c"] = {"laser.d"}
    assert house.classify_local("laser.d", [["laser.c"]], graph, external)["cycle"] == 1
