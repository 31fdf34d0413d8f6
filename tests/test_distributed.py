"""Two processes (gloo on CPU): the round's decisions are taken on rank 0 and every rank gets them."""

from __future__ import annotations

import json
import os

import numpy as np
import torch.distributed as dist
import torch.multiprocessing as mp

from laser.strategies import Batch, make_strategy
from laser.training.distributed import broadcast_from_main, is_main_process, world


def _worker(rank: int, size: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=size)
    try:
        strategy = make_strategy("random", ["a", "b", "c"], dim=4, seed=100 + rank)  # differs per rank
        contexts = np.random.default_rng(rank).normal(size=(32, 4))
        mine = strategy.assign(contexts, Batch(round=0))
        shared = broadcast_from_main(mine)
        feedback = broadcast_from_main(np.full(3, float(rank)))
        with open(f"{out}.{rank}", "w") as f:
            json.dump({"world": list(world()), "main": is_main_process(), "mine": mine.arms.tolist(),
                       "shared": shared.arms.tolist(), "feedback": feedback.tolist()}, f)
    finally:
        dist.destroy_process_group()


def test_assignments_and_feedback_come_from_rank_0(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = str(tmp_path / "r")
    mp.spawn(_worker, args=(2, port, out), nprocs=2, join=True)
    r0, r1 = (json.load(open(f"{out}.{r}")) for r in (0, 1))
    assert r0["world"] == [0, 2] and r1["world"] == [1, 2] and r0["main"] and not r1["main"]
    assert r0["mine"] != r1["mine"]                               # the ranks would have disagreed
    assert r0["shared"] == r1["shared"] == r0["mine"]             # both use rank 0's assignment
    assert r0["feedback"] == r1["feedback"] == [0.0, 0.0, 0.0]


def test_a_single_process_returns_its_input():
    x = {"a": 1}
    assert broadcast_from_main(x) is x and is_main_process() and world() == (0, 1)
