"""SIGINT / SIGTERM inside rounds: a run stops after the round in progress (checkpointed) or, on a second signal, at
once (the last checkpoint untouched); a crash while a checkpoint is written leaves the previous one loadable. A run
stopped at seeded random points of every stage and resumed each time, or killed with SIGKILL at a random point and
resumed, ends with the uninterrupted run's metrics."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from laser.config import load_config
from laser.generation.base import GenerationEngine
from laser.training import checkpoints, loop
from laser.training.dpo import DPOStep
from laser.training.run import train
from laser.training.stopping import RunStopped

ROOT = Path(__file__).resolve().parents[1]
TIMING = {"seconds", "sync_s", "elapsed_s"}
SETTINGS = ["rounds=8", "eval_every=4", "checkpoint_every=2", "round.rounds_per_iteration=3"]


def _config(out: Path, name: str):
    return load_config(ROOT / "configs" / "quick.yaml", [f"output_dir={out}", f"name={name}", *SETTINGS])


def _newest(run_dir: Path) -> Path | None:
    return loop.latest_checkpoint(run_dir) if (run_dir / "checkpoints" / "latest").exists() else None


def _metrics(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(x).items() if k not in TIMING}
            for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


class _Fault:
    """At the `at`-th call (from 1) of a stage, before the call runs or after it returns (`after`): `signals` SIGINTs
    to this process (one: stop after the round; two: stop at once), or an OSError (a crash)."""

    def __init__(self, stage: str, at: int, signals: int = 0, after: bool = False):
        self.stage, self.at, self.signals, self.after, self.calls, self.fired = stage, at, signals, after, 0, False

    def __call__(self) -> None:
        self.calls += 1
        if self.calls != self.at:
            return
        self.fired = True
        if not self.signals:
            raise OSError(28, "No space left on device (a test's crash)")
        for _ in range(self.signals):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)  # the handler runs here, between bytecodes


def _hook(monkeypatch, fault: _Fault) -> None:
    """Fire `fault` in its stage: sampling (the engine), scoring (the RMs), the DPO update, the checkpoint write."""
    targets = {"sampling": (GenerationEngine, "sample"), "scoring": (loop, "route_and_score"),
               "update": (DPOStep, "update"), "checkpoint write": (checkpoints, "save_state")}
    owner, name = targets[fault.stage]
    original = getattr(owner, name)

    def wrapped(*args, **kwargs):
        if not fault.after:
            fault()
        out = original(*args, **kwargs)
        if fault.after:
            fault()
        return out

    monkeypatch.setattr(owner, name, wrapped)


@pytest.fixture(scope="module")
def uninterrupted(quick_world, tmp_path_factory) -> Path:
    """The run every interrupted one is compared with (in this process: the CLI's runs take the same path)."""
    assets, _ = quick_world
    out = tmp_path_factory.mktemp("uninterrupted")
    with pytest.MonkeyPatch.context() as m:
        m.setenv("LASER_ASSETS_DIR", str(assets.root.parent))
        train(_config(out, "full"), progress=False)
    return out / "full"


def test_signals_at_random_points_of_every_stage_then_resume_match_an_uninterrupted_run(quick_world, uninterrupted,
                                                                                        tmp_path, monkeypatch):
    assets, _ = quick_world
    monkeypatch.setenv("LASER_ASSETS_DIR", str(assets.root.parent))
    reference = _metrics(uninterrupted)
    assert [x["type"] for x in reference] == ["eval", *["round"] * 4, "eval", *["round"] * 4, "eval"]

    config = _config(tmp_path, "stopped")
    run_dir = config.run_dir
    rng = random.Random(40)
    # Each stage once with one signal and once with two, in a seeded order (so at seeded rounds); the run resumes
    # after each and goes on to the next fault. Calls per round: 1-2 samplings (the evaluation's
    # too), 1 scoring, 1 update; a checkpoint every second round. Iterations of 3 rounds: the full fine-tuning
    # reference is written beside checkpoints that fall inside one, and read back on resume.
    # A fault in a segment's first call of its stage, before the call or after it: the run has 8 rounds for 9 faults.
    faults = [_Fault(stage, 1, signals, after=rng.random() < 0.5) for stage in
              ("sampling", "scoring", "update", "checkpoint write") for signals in (1, 2)]
    rng.shuffle(faults)
    faults.append(_Fault("checkpoint write", 1))  # a crash while writing a checkpoint
    resume, outcomes = False, []
    for fault in faults:
        before = _newest(run_dir)
        with monkeypatch.context() as m:
            _hook(m, fault)
            try:
                train(config, progress=False, resume=resume)
                outcomes.append((fault.stage, fault.signals, "finished"))
                break
            except RunStopped as e:  # one signal: the round in progress completed and checkpointed
                assert fault.fired and fault.signals == 1
                assert e.checkpoint == loop.latest_checkpoint(run_dir) == run_dir / "checkpoints" / \
                    f"round-{e.round:06d}"
                assert loop.read_trainer_state(e.checkpoint)["round"] == e.round
                outcomes.append((fault.stage, 1, e.round))
            except KeyboardInterrupt:  # two signals: at once, the last checkpoint as it was
                assert fault.fired and fault.signals == 2
                outcomes.append((fault.stage, 2, "at once"))
                assert _newest(run_dir) == before
            except OSError as e:
                assert fault.fired and not fault.signals and "test's crash" in str(e)
                outcomes.append((fault.stage, 0, "crash"))
                assert _newest(run_dir) == before
        # Whatever stopped it, the newest checkpoint loads (a run stopped before its first checkpoint starts over on
        # --resume), and nothing half-written is left beside it.
        if (run_dir / "checkpoints" / "latest").exists():
            loop.read_trainer_state(loop.latest_checkpoint(run_dir))
        assert not [p.name for p in (run_dir / "checkpoints").glob("*") if ".tmp-" in p.name or ".old-" in p.name]
        resume = True
    else:
        train(config, progress=False, resume=True)
    assert _metrics(run_dir) == reference, outcomes
    assert [o[2] for o in outcomes].count("finished") <= 1, outcomes  # every fault hit a running run


def _launch(out: Path, name: str, env: dict) -> subprocess.Popen:
    args = ["train", "--config", str(ROOT / "configs" / "quick.yaml"), "--name", name, "--quiet",
            "--set", f"output_dir={out}", *[x for setting in SETTINGS for x in ("--set", setting)]]
    return subprocess.Popen([sys.executable, "-m", "laser.cli", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def test_sigkill_then_resume_matches_an_uninterrupted_run(quick_world, uninterrupted, tmp_path, monkeypatch):
    """The CLI's run killed at a random point after its first checkpoint (no handler runs), then `--resume`d."""
    assets, _ = quick_world
    env = dict(os.environ, LASER_ASSETS_DIR=str(assets.root.parent))
    victim = _launch(tmp_path, "killed", env)
    latest = tmp_path / "killed" / "checkpoints" / "latest"
    deadline = time.time() + 600
    while not latest.exists() and victim.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(random.Random().uniform(0.0, 2.0))  # somewhere in rounds 3-8
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=60)
    assert victim.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    killed_at = latest.read_text().strip()
    # A killed run leaves its lock behind; the next run takes it over (its process is gone). Resumed in this process,
    # which has imported what a run needs (the CLI's `--resume` is run by tests/test_distributed.py).
    monkeypatch.setenv("LASER_ASSETS_DIR", str(assets.root.parent))
    train(_config(tmp_path, "killed"), progress=False, resume=True)
    assert _metrics(tmp_path / "killed") == _metrics(uninterrupted), f"killed after {killed_at}"
    assert (tmp_path / "killed" / "checkpoints" / "round-000008" / "policy" / "model.safetensors").exists()
    # The DPO reference (a copy of the policy: full fine-tuning) is written once per iteration of 3 rounds that a
    # checkpoint (every 2 rounds) falls in the middle of (rounds 2, 4 and 8: iterations from rounds 0, 3 and 6), not
    # into each checkpoint; the resumed run above read it back.
    refs = sorted(p.name for p in (tmp_path / "killed" / "checkpoints").glob("reference-*"))
    assert refs == ["reference-000000", "reference-000003", "reference-000006"], refs
    assert not any("ref" in p.name for p in (tmp_path / "killed" / "checkpoints" / "round-000004").rglob("*"))
    # Resuming a run that already ended changes nothing.
    train(_config(tmp_path, "killed"), progress=False, resume=True)
    assert _metrics(tmp_path / "killed") == _metrics(uninterrupted)


def test_a_signal_before_the_first_round_leaves_a_resumable_round_0(quick_world, tmp_path, monkeypatch):
    assets, _ = quick_world
    monkeypatch.setenv("LASER_ASSETS_DIR", str(assets.root.parent))
    config = _config(tmp_path, "early")
    with monkeypatch.context() as m:
        _hook(m, _Fault("sampling", 1, signals=1))  # the first sampling: round 0's evaluation
        with pytest.raises(RunStopped) as stopped:
            train(config, progress=False)
    assert stopped.value.round == 0 and stopped.value.signum == signal.SIGINT and stopped.value.exit_code == 130
    assert [x["type"] for x in _metrics(config.run_dir)] == ["eval"]
    assert loop.read_trainer_state(loop.latest_checkpoint(config.run_dir))["round"] == 0


def test_laser_stop_stops_one_run_after_its_round_and_it_resumes(quick_world, tmp_path):
    """`laser stop RUN_DIR` against a run started in the background of a non-interactive shell (where SIGINT is
    ignored): the run checkpoints its round and exits 143, and only it is signalled: the shell that started it, in
    its process group, lives on to report its status (a signal to the group would have ended the shell too)."""
    assets, _ = quick_world
    env = dict(os.environ, LASER_ASSETS_DIR=str(assets.root.parent))

    def launch(name: str) -> subprocess.Popen:
        args = " ".join(["--set " + x for x in [f"output_dir={tmp_path}", "rounds=40", "checkpoint_every=20",
                                                 "eval_every=20"]])
        cmd = f"{sys.executable} -m laser.cli train --config {ROOT / 'configs' / 'quick.yaml'} --name {name} " \
              f"--quiet {args}"
        # `&` in a non-interactive shell: the run inherits SIGINT ignored, as from a script or a Makefile
        return subprocess.Popen(["bash", "-c", f"{cmd} & wait $!"], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)

    victim = launch("victim")
    try:
        metrics = tmp_path / "victim" / "metrics.jsonl"
        deadline = time.time() + 300
        while time.time() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < 3):
            time.sleep(0.1)  # round 2 written
        stop = subprocess.run([sys.executable, "-m", "laser.cli", "stop", str(tmp_path / "victim")], env=env,
                              capture_output=True, text=True, timeout=300)
        assert stop.returncode == 0 and "stopped after its round in progress" in stop.stdout, stop.stderr
        out, _ = victim.communicate(timeout=60)
        assert victim.returncode == 143, out  # bash's `wait`: its child's status; bash itself was not signalled
        assert "stopped after round" in out and "laser train --resume" in out
        rounds = [x for x in _metrics(tmp_path / "victim") if x["type"] == "round"]
        assert 2 <= len(rounds) < 40
        assert loop.latest_checkpoint(tmp_path / "victim").name == f"round-{len(rounds):06d}"
        again = subprocess.run([sys.executable, "-m", "laser.cli", "stop", str(tmp_path / "victim")], env=env,
                               capture_output=True, text=True, timeout=60)
        assert again.returncode == 1 and "no run is writing" in again.stderr
    finally:
        if victim.poll() is None:
            os.killpg(victim.pid, signal.SIGKILL)
            victim.communicate(timeout=60)
