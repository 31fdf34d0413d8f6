"""Run configs (YAML, overrides, errors) and `laser train` end to end on the reduced world."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from laser.cli import main
from laser.config import ConfigError, RunConfig, load_config
from laser.training.run import RunLockedError, run_lock

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["demo.yaml", "quick.yaml"])
def test_shipped_configs_validate(name):
    c = load_config(ROOT / "configs" / name)
    assert isinstance(c, RunConfig) and c.dpo.loss_type == ["sigmoid", "sft"]


def test_overrides_and_resolved_values():
    c = load_config(ROOT / "configs" / "demo.yaml", ["round.n=16", "strategy=ensemble:worst_case",
                                                     "bandit.params={alpha: 0.3}", "dpo.loss_weights=[1.0, 0.5]"])
    assert c.round.n == 16 and c.strategy == "ensemble:worst_case" and c.bandit.params == {"alpha": 0.3}
    assert c.dpo.loss_weights == [1.0, 0.5] and c.run_dir == Path("runs/demo")


def test_bad_configs_name_the_key_and_what_is_allowed(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(ROOT / "configs" / "demo.yaml", ["round.nn=3", "round.pair_rule=best", "strategy=foo",
                                                     "dpo.beta=-1"])
    msg = str(e.value)
    assert "4 problem(s)" in msg and "round.nn: unknown key" in msg and "max_min" in msg
    assert "strategy" in msg and "single:<rm>" in msg and "dpo.beta" in msg
    bad = tmp_path / "bad.yaml"
    bad.write_text("rounds: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["rounds"])
    assert main(["train", "--config", str(bad)]) == 2


def test_a_locked_run_directory_is_refused(tmp_path):
    with run_lock(tmp_path / "r"):
        with pytest.raises(RunLockedError, match="being written by process"):
            with run_lock(tmp_path / "r"):
                pass
    assert not (tmp_path / "r" / ".lock").exists()
    # A lock left by a dead process is taken over.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / "r" / ".lock").write_text(dead.stdout.strip())
    with run_lock(tmp_path / "r"):
        assert (tmp_path / "r" / ".lock").read_text() == str(os.getpid())


def test_laser_train_runs_the_quick_config(quick_world, tmp_path, capsys, monkeypatch):
    assets, _ = quick_world
    monkeypatch.setenv("LASER_ASSETS_DIR", str(assets.root.parent))
    args = ["train", "--config", str(ROOT / "configs" / "quick.yaml"), "--name", "t", "--quiet",
            "--set", f"output_dir={tmp_path}", "--set", "rounds=2", "--set", "eval_every=1"]
    assert main(args) == 0
    lines = [json.loads(x) for x in (tmp_path / "t" / "metrics.jsonl").read_text().splitlines()]
    assert [x["type"] for x in lines] == ["eval", "round", "eval", "round", "eval"]
    assert all(len(x["accuracy"]) == 2 for x in lines if x["type"] == "eval")
    assert (tmp_path / "t" / "config.yaml").exists() and not (tmp_path / "t" / ".lock").exists()
    assert "final test accuracy" in capsys.readouterr().out
    # The same run name again: refused, the metrics already written are kept.
    assert main(args) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert len((tmp_path / "t" / "metrics.jsonl").read_text().splitlines()) == 5
