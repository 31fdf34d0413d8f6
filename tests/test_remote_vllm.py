"""Reward models behind real vLLM pooling servers (started here, by `laser.serve`): the same scores as in-process,
`laser train` with every RM remote surviving a killed server and resuming, `laser serve-rms` start and stop.
Each server takes about a minute to start on 2 cores: these tests are `slow` (`make test-all`)."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from conftest import free_port

from laser.cli import main
from laser.rewards import load_reward_model
from laser.rewards.remote import RemoteRM
from laser.serve import start_servers, stop_servers

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
PORT = 18400 + (os.getpid() % 200) * 4  # two xdist workers never share ports


@pytest.fixture(scope="module")
def served(quick_world, tmp_path_factory):
    """The quick world's three sequence classifiers, each behind its own vLLM pooling server."""
    assets, _ = quick_world
    lineup, _ = assets.lineup("classifiers")
    models = {name: str(path) for name, (_, path) in lineup.items()}
    servers = start_servers(models, port=PORT, log_dir=tmp_path_factory.mktemp("serve"), timeout=900)
    yield assets, models, {s.name: s for s in servers}
    stop_servers(servers)


def test_remote_scores_equal_the_in_process_ones(served):
    assets, models, servers = served
    suite = assets.suite()
    prompts = [ex.prompt for ex in suite.test[:6]]
    completions = [" " + ex.answer for ex in suite.test[:6]]
    prompts += [prompts[0], prompts[1]]
    completions += [" no", " x" * 90]  # the last is longer than the RM's context: both keep its end
    for name, model in models.items():
        local = load_reward_model("hf", model, name=name).score(prompts, completions)
        remote = RemoteRM(servers[name].url, name=name, tokenizer=model).score(prompts, completions)
        assert remote.n_unscorable == 0
        np.testing.assert_allclose(remote.values, local.values, atol=1e-4)
    assert local.truncated == 1


def _run_config(servers, models, retries=1) -> list[str]:
    sets = []
    for name, s in servers.items():
        for k, v in {"kind": "remote", "url": s.url, "tokenizer": models[name], "retries": retries,
                     "backoff": 0.05, "timeout": 30}.items():
            sets += ["--set", f"models.reward_models.{name}.{k}={v}"]
    return sets


def test_two_ranks_with_every_rm_remote_ask_the_servers_for_half_each(served, tmp_path):
    """Under torchrun each rank asks the RM servers for its share of the candidates only; the run's first round
    equals one process's (same samples, forward passes, picks and pairs). Before the killed-server test below,
    which leaves the module's `strings` server stopped."""
    import shutil

    assets, models, servers = served
    env = {**os.environ, "LASER_ASSETS_DIR": str(assets.root.parent), "OMP_NUM_THREADS": "1"}
    args = ["-m", "laser.cli", "train", "--quiet", "--config", str(ROOT / "configs" / "quick.yaml"),
            "--set", f"output_dir={tmp_path}", "--set", "rounds=2", "--set", "eval_every=2",
            "--set", "checkpoint_every=2"] + _run_config(servers, models)
    port = free_port()
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    two = subprocess.run([torchrun, "--nproc_per_node", "2", "--master_port", str(port), *args, "--name", "two"],
                         env=env, capture_output=True, text=True, timeout=900)
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run([sys.executable, *args, "--name", "one"], env=env, capture_output=True, text=True,
                         timeout=900)
    assert one.returncode == 0, one.stderr[-3000:]
    a, b = ([x for x in map(json.loads, (tmp_path / n / "metrics.jsonl").read_text().splitlines())
             if x["type"] == "round"] for n in ("two", "one"))
    assert len(a) == len(b) == 2
    for r in a:
        forward = [w["rm_forward"] for w in r["ranks"]]
        assert sum(forward) == r["rm_forward"] and min(forward) >= 0.3 * r["rm_forward"], r["ranks"]
    # Round 0 (before any DPO update) is the one process's in every way; after the first DDP update (gradients
    # summed in another order) a sample can differ, and with it a forward pass or a pick.
    for key in ("candidates", "rm_forward", "picks", "probes", "pairs"):
        assert a[0][key] == b[0][key], key
    assert sum(abs(a[1]["picks"][k] - b[1]["picks"][k]) for k in a[1]["picks"]) <= 2, (a[1]["picks"], b[1]["picks"])


def test_laser_train_with_every_rm_remote_survives_a_killed_server_and_resumes(served, tmp_path, monkeypatch):
    """The `strings` server is killed after round 0 and the run interrupted (Ctrl-C) in round 1: the failures
    are counted, nothing is lost, and once the server is back `--resume` finishes the run. An ensemble run, so that
    every RM scores every candidate and the dead server is certainly asked (a router may route no prompt to it)."""
    assets, models, servers = served
    monkeypatch.setenv("LASER_ASSETS_DIR", str(assets.root.parent))
    run = tmp_path / "remote"
    metrics = run / "metrics.jsonl"
    victim = servers["strings"]

    def rounds_written() -> int:
        return metrics.read_text().count('"type": "round"') if metrics.exists() else 0

    def kill_then_interrupt():
        deadline = time.monotonic() + 900
        while rounds_written() < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        stop_servers([victim])
        while rounds_written() < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C: the trainer stops after the round in progress, checkpointed

    killer = threading.Thread(target=kill_then_interrupt, daemon=True)
    killer.start()
    code = main(["train", "--config", str(ROOT / "configs" / "quick.yaml"), "--name", "remote", "--quiet",
                 "--set", f"output_dir={tmp_path}", "--set", "rounds=4", "--set", "eval_every=2",
                 "--set", "checkpoint_every=1", "--set", "strategy=ensemble:mean"] + _run_config(servers, models))
    killer.join()
    assert code == 130
    before = [json.loads(x) for x in metrics.read_text().splitlines()]
    rounds = [x for x in before if x["type"] == "round"]
    assert 2 <= len(rounds) < 4 and "rm_unscorable" not in rounds[0]
    assert rounds[1]["rm_unscorable"]["strings"] > 0  # the dead server's candidates, counted, not fatal
    assert all(set(r.get("rm_unscorable", {})) <= {"strings"} for r in rounds)

    (restarted,) = start_servers({"strings": models["strings"]}, port=int(victim.url.rsplit(":", 1)[1]),
                                 log_dir=tmp_path, timeout=900)
    try:
        assert main(["train", "--resume", str(run), "--quiet"]) == 0
    finally:
        stop_servers([restarted])
    lines = [json.loads(x) for x in metrics.read_text().splitlines()]
    assert lines[:len(before)] == before  # nothing written before the interruption was lost or rewritten
    rounds = [x for x in lines if x["type"] == "round"]
    assert [r["round"] for r in rounds] == [0, 1, 2, 3]
    assert all("rm_unscorable" not in r for r in rounds[len([x for x in before if x["type"] == "round"]):])
    assert lines[-1]["type"] == "eval" and lines[-1]["round"] == 4


def test_a_dead_url_at_start_stops_laser_train_with_the_rms_name(quick_world, tmp_path, monkeypatch, capsys):
    assets, _ = quick_world
    monkeypatch.setenv("LASER_ASSETS_DIR", str(assets.root.parent))
    code = main(["train", "--config", str(ROOT / "configs" / "quick.yaml"), "--name", "dead", "--quiet",
                 "--set", f"output_dir={tmp_path}", "--set", "models.reward_models.judge.kind=remote",
                 "--set", "models.reward_models.judge.url=http://127.0.0.1:9", "--set",
                 "models.reward_models.judge.retries=0"])
    assert code == 2
    assert "reward model judge: http://127.0.0.1:9 does not answer" in capsys.readouterr().err


def test_serve_rms_prints_a_block_to_paste_and_stops_every_server_on_sigterm(quick_world, tmp_path):
    assets, _ = quick_world
    _, path = assets.lineup("classifiers")[0]["verbose"]
    port = PORT + 3
    proc = subprocess.Popen([sys.executable, "-m", "laser.cli", "serve-rms", "--rms", f"verbose={path}",
                             "--port", str(port), "--log-dir", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    out = []
    try:
        for line in proc.stdout:
            out.append(line)
            if line.startswith("Serving;"):
                break
        text = "".join(out)
        assert f"verbose: http://127.0.0.1:{port}" in text and "kind: remote" in text, text
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as resp:
            assert resp.status == 200
        children = _children(proc.pid)
        assert children  # the vLLM server, in a process group of its own
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5)
    deadline = time.monotonic() + 30
    while _live(lambda f: int(f[2]) in children) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _live(lambda f: int(f[2]) in children) == []  # no orphan: nothing of the servers' groups runs


def _procs():
    """(pid, fields after the command name) of every process, from /proc: state, ppid, pgrp, ..."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            yield int(stat.parent.name), stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue


def _children(pid: int) -> list[int]:
    """The processes whose parent is `pid`."""
    return [p for p, f in _procs() if int(f[1]) == pid]


def _live(match) -> list[int]:
    """Processes (not zombies) whose stat fields satisfy `match`."""
    return [p for p, f in _procs() if f[0] != "Z" and match(f)]
