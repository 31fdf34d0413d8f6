"""What a LoRA run keeps: the size of each checkpoint and the peak host memory of the process.

    python benchmarks/lora_footprint.py [--config configs/quick.yaml] [--rounds 4] [--out runs/lora-footprint]

Runs `laser train` with LoRA adapters (r=16, alpha=32 on q/v, the paper's) in a child process and prints one JSON:
the child's peak resident memory (ru_maxrss), and for each checkpoint its size in bytes, split by file. A full copy
of the policy in a checkpoint shows up as a file the size of the model's weights. The quick world builds on first
use (about two minutes), which the peak memory then includes: build it beforehand (`laser build-assets --quick`).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
from pathlib import Path


def sizes(root: Path) -> dict:
    """{checkpoint: {"bytes": total, "files": {relative path: bytes}}} under root/checkpoints."""
    out = {}
    for ckpt in sorted((root / "checkpoints").glob("*")):
        if not ckpt.is_dir():
            continue
        files = {str(p.relative_to(ckpt)): p.stat().st_size for p in sorted(ckpt.rglob("*")) if p.is_file()}
        out[ckpt.name] = {"bytes": sum(files.values()), "files": files}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/quick.yaml")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--out", type=Path, default=Path("runs/lora-footprint"))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="more overrides")
    args = ap.parse_args()
    name = "lora"
    shutil.rmtree(args.out / name, ignore_errors=True)
    overrides = [f"name={name}", f"output_dir={args.out}", f"rounds={args.rounds}", "checkpoint_every=2",
                 "dpo.lora={r: 16, alpha: 32, dropout: 0.1, target_modules: [q_proj, v_proj]}", *args.set]
    cmd = [sys.executable, "-m", "laser.cli", "train", "--quiet", "--config", args.config]
    for o in overrides:
        cmd += ["--set", o]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"laser train failed:\n{done.stderr[-3000:]}")
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    ckpts = sizes(args.out / name)
    print(json.dumps({"command": " ".join(cmd), "peak_rss_mib": round(peak_kib / 1024, 1),
                      "checkpoints": ckpts}, indent=2))


if __name__ == "__main__":
    main()
