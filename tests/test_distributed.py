"""Two processes (gloo on CPU): the round's decisions are taken on rank 0 and every rank gets them, the round's
sampling and scoring are shared between the ranks, and `laser train` under torchrun trains one run as one process
would."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import free_port

from laser.config import load_config
from laser.strategies import Batch, make_strategy
from laser.training.distributed import broadcast_from_main, is_main_process, main_first, map_shards, world
from laser.training.run import train
from laser.training.rundir import process_alive, stop_run

ROOT = Path(__file__).resolve().parents[1]


def _worker(rank: int, size: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=size)
    try:
        strategy = make_strategy("random", ["a", "b", "c"], dim=4, seed=100 + rank)  # differs per rank
        contexts = np.random.default_rng(rank).normal(size=(32, 4))
        mine = strategy.assign(contexts, Batch(round=0))
        shared = broadcast_from_main(mine)
        feedback = broadcast_from_main(np.full(3, float(rank)))
        ran = []
        got = main_first(lambda: ran.append(rank) or rank * 10 + 7)  # runs on rank 0 only

        def refuse():
            raise ValueError(f"rank {rank} refuses")

        try:
            main_first(refuse)
            refused = None
        except ValueError as e:
            refused = str(e)
        # Work in shares: each rank maps its contiguous share, every rank gets every result in order.
        mapped = map_shards(lambda xs: [10 * x + rank for x in xs], range(5))
        shares = []
        empty = map_shards(lambda xs: shares.append(len(xs)) or [x for x in xs], [7])  # one item: rank 1 idle

        def fail_on_1(xs):
            if rank == 1:
                raise RuntimeError("rank 1's engine died")
            return xs

        try:
            map_shards(fail_on_1, range(4))
            failed = None
        except RuntimeError as e:
            failed = str(e)
        with open(f"{out}.{rank}", "w") as f:
            json.dump({"world": list(world()), "main": is_main_process(), "mine": mine.arms.tolist(),
                       "shared": shared.arms.tolist(), "feedback": feedback.tolist(), "ran": ran, "got": got,
                       "refused": refused, "mapped": mapped, "empty": empty, "shares": shares, "failed": failed}, f)
    finally:
        dist.destroy_process_group()


def test_assignments_and_feedback_come_from_rank_0(tmp_path):
    port = free_port()
    out = str(tmp_path / "r")
    mp.spawn(_worker, args=(2, port, out), nprocs=2, join=True)
    r0, r1 = (json.load(open(f"{out}.{r}")) for r in (0, 1))
    assert r0["world"] == [0, 2] and r1["world"] == [1, 2] and r0["main"] and not r1["main"]
    assert r0["mine"] != r1["mine"]                               # the ranks would have disagreed
    assert r0["shared"] == r1["shared"] == r0["mine"]             # both use rank 0's assignment
    assert r0["feedback"] == r1["feedback"] == [0.0, 0.0, 0.0]
    assert (r0["ran"], r1["ran"]) == ([0], []) and r0["got"] == r1["got"] == 7  # rank 0's result everywhere
    assert r0["refused"] == r1["refused"] == "rank 0 refuses"                    # and rank 0's error
    assert r0["mapped"] == r1["mapped"] == [0, 10, 21, 31, 41]  # items 0-1 mapped by rank 0, 2-4 by rank 1
    assert r0["empty"] == r1["empty"] == [7] and (r0["shares"], r1["shares"]) == ([], [1])
    assert r0["failed"] == r1["failed"] == "rank 1's engine died"  # raised on both: rank 0 is not left waiting


def test_a_single_process_returns_its_input():
    x = {"a": 1}
    assert broadcast_from_main(x) is x and is_main_process() and world() == (0, 1)
    assert map_shards(lambda xs: [2 * v for v in xs], [1, 2]) == [2, 4]


def _settings(tmp_path, name: str, *more: str) -> list[str]:
    """The overrides of the quick config (4 rounds, vLLM engine) every run of this test starts with; `more`: further
    ones."""
    # DPO's sigmoid loss alone: a mean over pairs, which DDP's mean of the ranks' gradients reproduces. TRL's `sft`
    # term of the default loss is a mean over each rank's chosen tokens, so that two ranks whose halves hold
    # different numbers of tokens weigh the pairs otherwise than one process does.
    return [f"output_dir={tmp_path}", f"name={name}", "rounds=4", "eval_every=2", "checkpoint_every=2",
            "engine.engine=vllm", "dpo.loss_type=[sigmoid]", "dpo.loss_weights=[1.0]",
            # Two full-information warm-up rounds: every RM scores every probe, so the routing of both rounds rests
            # on the same observations on any number of ranks. After round 0's update the ranks' weights differ
            # from one process's by float summation order, and an exploring round's near-ties may flip.
            "round.rerank_warmup=2", "round.rerank_warmup_prompts=12",
            # Every prompt with two distinct scores gives a pair (min_chosen would leave out the prompts whose best
            # candidate scores low; at some seeds all of round 0's): round 0 always has an update to compare.
            "round.min_chosen=null", *more]


def _train_cmd(tmp_path, name: str, processes: int, resume: bool = False, *more: str) -> list[str]:
    """`laser train` of the quick config (`_settings`) in one process, or under torchrun; `more`: further --set
    overrides of a new run."""
    import shutil

    args = ["-m", "laser.cli", "train", "--quiet"]
    if resume:
        args += ["--resume", str(tmp_path / name)]
    else:
        args += ["--config", str(ROOT / "configs" / "quick.yaml")]
        for item in _settings(tmp_path, name, *more):
            args += ["--set", item]
    if processes > 1:
        torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
        return [torchrun, "--nproc_per_node", str(processes), "--master_port", str(free_port()), *args]
    return [sys.executable, *args]


def _train(tmp_path, name: str, env: dict, processes: int, resume: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run(_train_cmd(tmp_path, name, processes, resume), env=env, capture_output=True, text=True,
                          timeout=600)


def _descendants(pid: int) -> set[int]:
    """Every process below `pid`, from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    out, todo = set(), [pid]
    while todo:
        todo += [c for c in children.get(todo.pop(), []) if c not in out]
        out.update(todo)
    return out


def _kill_tree(pid: int) -> set[int]:
    """SIGKILL `pid` and every process below it, as a machine's crash would: torchrun starts each rank in a
    session of its own, so killing torchrun's process group leaves the ranks running. Everything is stopped
    first (until no new process appears), so that none starts another while the others are killed."""
    stopped: set[int] = set()
    while (tree := {pid} | _descendants(pid)) - stopped:
        for p in tree - stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGSTOP)
        stopped |= tree
    for p in stopped:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)
    return stopped


def test_laser_train_under_torchrun_trains_one_run_like_one_process(quick_world, tmp_path):
    """Two ranks (DDP over gloo) train one run: rank 0 alone writes it, and the run is the one-process run."""
    assets, _ = quick_world
    env = {**os.environ, "LASER_ASSETS_DIR": str(assets.root.parent), "OMP_NUM_THREADS": "1"}
    two = _train(tmp_path, "two", env, processes=2)
    assert two.returncode == 0, two.stderr[-3000:]
    # The one-process run in this process (what the CLI calls: tests/test_stopping.py compares the two paths), which
    # has imported what a run needs, instead of a process of its own that would import it all again.
    with pytest.MonkeyPatch.context() as m:
        m.setenv("LASER_ASSETS_DIR", env["LASER_ASSETS_DIR"])
        train(load_config(ROOT / "configs" / "quick.yaml", _settings(tmp_path, "one")), progress=False)
    a, b = ([json.loads(x) for x in (tmp_path / n / "metrics.jsonl").read_text().splitlines()] for n in ("two", "one"))
    kinds = ["eval", "round", "round", "eval", "round", "round", "eval"]
    assert [x["type"] for x in a] == [x["type"] for x in b] == kinds  # each line once: rank 0 alone writes
    assert [x["processes"] for x in a if x["type"] == "eval"] == [2, 2, 2]
    assert [x["processes"] for x in b if x["type"] == "eval"] == [1, 1, 1]
    ra, rb = ([x for x in lines if x["type"] == "round"] for lines in (a, b))
    # The work is shared: each rank sampled half of the round's prompts (training prompts and probes, one call)
    # and ran half of the RM forward passes; together they ran exactly what one process ran.
    for r in ra:
        sampled = r["prompts"] + r.get("probes", {}).get("sampled", 0)
        shares = [w["prompts_sampled"] for w in r["ranks"]]
        assert sum(shares) == sampled and max(shares) - min(shares) <= 1, (sampled, r["ranks"])
        forward = [w["rm_forward"] for w in r["ranks"]]
        assert sum(forward) == r["rm_forward"] and min(forward) >= 0.3 * r["rm_forward"], r["ranks"]
    assert all("ranks" not in r for r in rb)  # one process: nothing to share
    # Same samples and forward passes in round 0 (before any update): a vLLM prompt's samples depend on the seed
    # and the prompt only, so the two ranks' shares are the samples one process draws. Each optimizer step's global
    # batch (dpo.batch_size, 8) is the same rows on any number of ranks; its gradient is the mean over both
    # ranks' halves, and the loss in the metrics the mean of theirs, so the round's one update (rerank_gain) matches
    # the single process's up to float summation order when the pairs fill whole global batches (or are one
    # pair): otherwise accelerate pads the last one with repeated pairs. The routing of the first two rounds is
    # the same; from then on a near-tie of the router may flip: at most one instance a round goes to another RM.
    assert ra[0]["candidates"] == rb[0]["candidates"] and ra[0]["rm_forward"] == rb[0]["rm_forward"]
    assert [r["picks"] for r in ra[:2]] == [r["picks"] for r in rb[:2]]
    assert [r["probes"] for r in ra[:2]] == [r["probes"] for r in rb[:2]]
    for x, y in zip(ra[2:], rb[2:], strict=True):
        assert sum(abs(x["picks"][k] - y["picks"][k]) for k in x["picks"]) <= 2, (x["picks"], y["picks"])
    assert [r["pairs"] for r in ra[:2]] == [r["pairs"] for r in rb[:2]]
    assert [(d["arm"], d["pairs"]) for d in ra[0]["dpo"]] == [(d["arm"], d["pairs"]) for d in rb[0]["dpo"]]
    (d,), (e,) = ra[0]["dpo"], rb[0]["dpo"]  # one update a round
    # Otherwise the last global batch holds repeated pairs (its per-rank halves of 4 are filled from the first
    # pairs, and a rank without a half of its own gets one of them), so the two-rank loss counts `padded` more
    # rows than the single process's: a share of the loss of at most padded / seen.
    n, half = d["pairs"], 4
    seen = -(-n // (2 * half)) * 2 * half
    padded = 0 if n == 1 else seen - n
    assert d["loss"] == pytest.approx(e["loss"], rel=1e-5 if padded == 0 else padded / seen), (d, e)
    for x, y in zip(a, b, strict=True):
        if x["type"] == "eval":
            assert abs(x["mean_accuracy"] - y["mean_accuracy"]) <= 1 / 16, (x, y)
    run = tmp_path / "two"
    assert (run / "checkpoints" / "latest").read_text() == "round-000004" and (run / "report.md").exists()
    assert not (run / ".lock").exists()
    assert two.stdout.count("final test accuracy") == 1  # said once, by rank 0
    # With each RM loaded in one rank only (models.rm_placement: shard: RMs 0 and 2 in rank 0, RM 1 in rank 1),
    # stopped by `laser stop` once its first round is written (rank 0 holds the lock and is signalled; the ranks
    # agree at the round boundary and both exit after the same round, which rank 0 checkpoints), resumed, killed
    # (SIGKILL, every rank) after its next checkpoint and resumed again: the same run as without the stop and the
    # kill, its RMs' forward passes each run by the one rank that holds it.
    log = tmp_path / "killed.log"  # a file, not a pipe: nothing reads a pipe while the test waits
    with log.open("w") as sink:
        killed = subprocess.Popen(_train_cmd(tmp_path, "killed", 2, False, "models.rm_placement=shard",
                                             "checkpoint_every=1"),
                                  env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    metrics, latest = tmp_path / "killed" / "metrics.jsonl", tmp_path / "killed" / "checkpoints" / "latest"
    deadline = time.monotonic() + 300
    while killed.poll() is None and time.monotonic() < deadline and \
            not (metrics.exists() and '"type": "round"' in metrics.read_text()):
        time.sleep(0.05)
    assert killed.poll() is None, log.read_text()[-3000:]
    # What `laser stop` does (tests/test_stopping.py runs the command), at once: a command's start may take a round
    # or more on a busy machine, and the stop must come before the run's last round.
    pid, state = stop_run(tmp_path / "killed", wait=300)
    killed.wait(timeout=60)
    out = log.read_text()
    assert state == "stopped" and pid != killed.pid  # the lock's holder: rank 0, not torchrun
    assert killed.returncode != 0 and out.count("stopped after round") == 1, out[-3000:]  # said by rank 0 alone
    lines = [json.loads(x) for x in metrics.read_text().splitlines()]
    done = sum(x["type"] == "round" for x in lines)
    assert 1 <= done <= 2 and latest.read_text() == f"round-{done:06d}", (done, latest.read_text())
    assert [x["round"] for x in lines if x["type"] == "round"] == list(range(done))  # each round once, in order
    killed = subprocess.Popen(_train_cmd(tmp_path, "killed", 2, True), env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while latest.read_text() == f"round-{done:06d}" and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    victims = _kill_tree(killed.pid)
    killed.wait()
    assert len(victims) >= 3, victims  # torchrun and its two ranks
    gone = time.monotonic() + 120  # reaped by init once torchrun is gone: the resume must not find one alive
    while any(process_alive(p) for p in victims) and time.monotonic() < gone:
        time.sleep(0.1)
    assert latest.read_text() == f"round-{done + 1:06d}"
    resumed = _train(tmp_path, "killed", env, processes=2, resume=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    c = [json.loads(x) for x in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
    timing = {"seconds", "sync_s", "elapsed_s", "ranks"}
    assert [{k: v for k, v in x.items() if k not in timing} for x in c] == \
        [{k: v for k, v in x.items() if k not in timing} for x in a]
    rms = list(c[1]["picks"])
    for r, replicated in zip((x for x in c if x["type"] == "round"), ra, strict=True):
        forward = [w["rm_forward"] for w in r["ranks"]]
        assert sum(forward) == r["rm_forward"] and forward == [sum(w["rm_forward_by_rm"].values()) for w in r["ranks"]]
        for i, name in enumerate(rms):  # every pass of RM i ran in rank i mod 2, as many as both ranks ran above
            passes = [w["rm_forward_by_rm"][name] for w in r["ranks"]]
            assert passes[1 - i % 2] == 0 and passes[i % 2] == sum(w["rm_forward_by_rm"][name]
                                                                   for w in replicated["ranks"]), (name, r["ranks"])
    # Rank 0's refusal stops every rank: a second run into the same directory changes nothing.
    before = (run / "metrics.jsonl").read_text()
    again = _train(tmp_path, "two", env, processes=2)
    assert again.returncode != 0 and "already holds a run" in again.stderr
    assert (run / "metrics.jsonl").read_text() == before
