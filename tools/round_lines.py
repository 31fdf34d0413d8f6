"""The metrics lines of a few rounds of the demo config, one run per way the router learns, without timings.

A change to the round that should not change what it does (a refactor) must leave these lines as they were:

    python tools/round_lines.py --out before.json         # on the old code
    python tools/round_lines.py --compare before.json     # on the new: exit 1 and the first difference if any

Each run: the demo config (the embedded default world) for `--rounds` rounds with one `round.feedback` mode,
and `laser:linucb` for the modes that need an update per RM group. Lines keep every key but wall times.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

MODES = {  # name: overrides of the demo config
    "rerank_gain": [],
    "rerank_gain+second_opinions": ["round.rerank_rms=3"],
    "gradient_gain": ["round.feedback=gradient_gain"],
    "validation_gain": ["round.feedback=validation_gain"],
    "train_loss": ["round.feedback=train_loss"],
    "single": ["strategy=single:cipher"],
    "ensemble": ["strategy=ensemble:mean"],
    "static_by_domain": ["strategy=static:by_domain"],
}
TIMING_KEYS = {"seconds", "sync_s", "elapsed_s"}


def _strip(line: dict) -> dict:
    return {k: v for k, v in line.items() if k not in TIMING_KEYS}


def run_mode(overrides: list[str], rounds: int, root: Path) -> list[dict]:
    from laser.config import load_config
    from laser.training.run import train

    config = load_config("configs/demo.yaml", [f"rounds={rounds}", f"eval_every={rounds}", "checkpoint_every=100",
                                               "name=lines", f"output_dir={root}", *overrides])
    train(config, progress=False)
    return [_strip(json.loads(x)) for x in (config.run_dir / "metrics.jsonl").read_text().splitlines()]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    group = ap.add_mutually_exclusive_group(required=True)
    group.add_argument("--out", type=Path, help="write the lines here")
    group.add_argument("--compare", type=Path, help="compare with lines written by --out")
    args = ap.parse_args()
    lines = {}
    for mode in args.modes:
        root = Path(tempfile.mkdtemp(prefix="round-lines-"))
        try:
            lines[mode] = run_mode(MODES[mode], args.rounds, root)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        print(f"{mode}: {len(lines[mode])} lines", flush=True)
    if args.out:
        args.out.write_text(json.dumps(lines, indent=1, sort_keys=True))
        return 0
    before = json.loads(args.compare.read_text())
    differ = 0
    for mode, now in lines.items():
        was = before.get(mode)
        if was is None:
            print(f"{mode}: not in {args.compare}")
            continue
        for i, (a, b) in enumerate(zip(was, now, strict=False)):
            if a != b:
                keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
                print(f"{mode}: line {i} differs in {keys}: {[(a.get(k), b.get(k)) for k in keys][:3]}")
                differ += 1
                break
        else:
            same = len(was) == len(now)
            print(f"{mode}: {len(now)} lines, {'the same' if same else f'{len(was)} before'}")
            differ += not same
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
