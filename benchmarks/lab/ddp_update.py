"""One DPO update of the same pairs in one process and in two ranks (DDP over gloo): loss and weights.

    python benchmarks/lab/ddp_update.py [--pairs 8 16 12] [--out FILE.md]

For each pair count and for two losses (DPO's sigmoid alone, and the default sigmoid + TRL's `sft` term), the
policy of the quick world (built into the cache if missing) takes one `DPOStep.update` (dpo.batch_size 8, the
global batch) in one process and under `torchrun --nproc_per_node 2`; the table gives the update's loss in
each (the two-rank one is the mean over the ranks) and the largest weight difference after it. A pair count
that fills whole global batches must give the one-process update up to float summation order with the sigmoid
loss; the `sft` term is a mean over each rank's own chosen tokens, and a count that does not fill the last
global batch is padded by accelerate with repeated pairs.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

LOSSES = {"sigmoid": {"loss_type": ["sigmoid"], "loss_weights": [1.0]}, "sigmoid + sft (default)": {}}


def _worker(n: int, loss: str, out: Path) -> None:
    import torch.distributed as dist
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from laser.assets import build_assets, quick_recipe
    from laser.assets.pairs import correctness_pairs
    from laser.training.dpo import DPOSettings, DPOStep

    if "RANK" in os.environ:
        dist.init_process_group("gloo")
    rank = int(os.environ.get("RANK", "0"))
    assets = build_assets(quick_recipe(), progress=False)
    model = AutoModelForCausalLM.from_pretrained(assets.policy)
    tok = AutoTokenizer.from_pretrained(assets.policy)
    rows = correctness_pairs(assets.suite().train[:n], random.Random(0))[:n]
    step = DPOStep(model, tok, DPOSettings(**LOSSES[loss]), out / f"work-{rank}", seed=0)
    metrics = step.update(rows)
    if rank == 0:
        from safetensors.torch import save_file

        save_file({k: v.detach().clone() for k, v in model.state_dict().items()}, str(out / "weights.safetensors"))
        (out / "metrics.json").write_text(json.dumps(metrics))


def _run(n: int, loss: str, out: Path, processes: int) -> dict:
    out.mkdir(parents=True)
    me = [str(Path(__file__).resolve()), "--worker", str(n), loss, str(out)]
    if processes == 1:
        cmd = [sys.executable, *me]
    else:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
        cmd = [torchrun, "--nproc_per_node", str(processes), "--master_port", str(port), *me]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return json.loads((out / "metrics.json").read_text())


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        _worker(int(sys.argv[2]), sys.argv[3], Path(sys.argv[4]))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, nargs="+", default=[8, 16, 12])
    ap.add_argument("--out", type=Path, default=None, help="also write the table to this Markdown file")
    args = ap.parse_args()
    from safetensors.torch import load_file

    from laser.assets import build_assets, quick_recipe

    build_assets(quick_recipe())  # once, before the ranks look for it
    lines = ["| loss | pairs | steps | loss, 1 process | loss, 2 ranks | max weight difference |",
             "|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        for i, loss in enumerate(LOSSES):
            for n in args.pairs:
                base = Path(tmp) / f"{i}-{n}"
                one, two = _run(n, loss, base / "one", 1), _run(n, loss, base / "two", 2)
                a, b = (load_file(str(base / k / "weights.safetensors")) for k in ("one", "two"))
                diff = max((a[k] - b[k]).abs().max().item() for k in a)
                lines.append(f"| {loss} | {n} | {one['steps']} | {one['loss']:.7f} | {two['loss']:.7f} | {diff:.1e} |")
                print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    if args.out:
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
