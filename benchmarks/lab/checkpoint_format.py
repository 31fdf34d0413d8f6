"""Checkpoint trainer state: the pickle format of earlier versions against `laser.statefile`, size and time.

    python benchmarks/lab/checkpoint_format.py RUN_DIR [--repeats 5]

Reads the newest checkpoint's trainer state of a finished run and writes it both ways, side by side.
Measured: `benchmarks/results/2026-12-02-checkpoint-format.md`.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def main() -> None:
    import torch

    from laser.statefile import load_state, save_state
    from laser.training.checkpoints import latest_checkpoint, read_trainer_state

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    ckpt = latest_checkpoint(args.run_dir)
    state = read_trainer_state(ckpt)
    out = Path(tempfile.mkdtemp(prefix="laser-ckpt-"))
    rows = []
    for name, write, read, path in (
            ("pickle (torch.save)", lambda p: torch.save(state, p), lambda p: torch.load(p, weights_only=False),
             out / "trainer.pt"),
            ("laser.statefile", lambda p: save_state(state, p), load_state, out / "trainer_state.safetensors")):
        w, r = [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            write(path)
            w.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            read(path)
            r.append(time.perf_counter() - t0)
        rows.append((name, path.stat().st_size, min(w), min(r)))
    print(f"trainer state of {ckpt} (policy weights aside; best of {args.repeats}):\n")
    print("| format | size | write | read |\n|---|---|---|---|")
    for name, size, w, r in rows:
        print(f"| {name} | {size / 1024:.0f} KiB | {w * 1000:.1f} ms | {r * 1000:.1f} ms |")


if __name__ == "__main__":
    main()
