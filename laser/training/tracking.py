"""Round and evaluation metrics sent to TensorBoard and/or Weights & Biases (offline), beside metrics.jsonl."""

from __future__ import annotations

import os
from pathlib import Path

TRACKERS = ("tensorboard", "wandb")


def flatten(line: dict, prefix: str = "") -> dict[str, float]:
    """The numeric leaves of a metrics line as {"a/b/c": value} (lists and strings are left out)."""
    out: dict[str, float] = {}
    for k, v in line.items():
        key = f"{prefix}{k}"
        if isinstance(v, bool):
            out[key] = float(v)
        elif isinstance(v, int | float):
            out[key] = float(v)
        elif isinstance(v, dict):
            out.update(flatten(v, key + "/"))
    return out


SENT = ".tracked"  # in the run directory: how many metrics lines the trackers have been sent


class Tracker:
    """Writes every metrics line's scalars under `<type>/...` at step = round.

    Each metrics line is sent once: the count of lines sent is kept in `<run_dir>/.tracked`, and a resumed run,
    which writes again the lines after its checkpoint (the same lines: a resume is exact), does not send those a
    tracker already has (TensorBoard would show each of those points twice)."""

    def __init__(self, run_dir: str | Path, report_to: list[str], name: str = "run", config: dict | None = None):
        unknown = sorted(set(report_to) - set(TRACKERS))
        if unknown:
            raise ValueError(f"report_to: unknown tracker(s) {unknown}; choose from {list(TRACKERS)}")
        self.writer = self.wandb = None
        run_dir = Path(run_dir)
        self.sent_path = run_dir / SENT
        try:
            self.sent = int(self.sent_path.read_text().strip() or "0")
        except (OSError, ValueError):
            self.sent = 0
        if "tensorboard" in report_to:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:  # torch imports tensorboard lazily
                raise ImportError("report_to: tensorboard needs the tensorboard package: "
                                  "pip install 'laser-engine[tensorboard]'") from e
            self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
        if "wandb" in report_to:
            try:
                import wandb
            except ImportError as e:
                raise ImportError("report_to: wandb needs the wandb package: pip install 'laser-engine[wandb]'") from e
            self.wandb = wandb.init(project="laser", name=name, dir=str(run_dir), mode="offline", config=config,
                                    resume="allow", id=name)

    def log(self, line: dict, index: int | None = None) -> None:
        """Send `line`, the `index`-th line (from 1) of metrics.jsonl, unless a tracker already has it."""
        if index is not None and index <= self.sent:
            return
        self._send(line)
        if index is not None:
            self.sent = index
            tmp = self.sent_path.with_name(SENT + ".tmp")
            tmp.write_text(str(index))
            os.replace(tmp, self.sent_path)

    def _send(self, line: dict) -> None:
        step = int(line.get("round", 0))
        scalars = flatten({k: v for k, v in line.items() if k not in ("type", "round")})
        kind = line.get("type", "round")
        if self.writer is not None:
            for k, v in scalars.items():
                self.writer.add_scalar(f"{kind}/{k}", v, global_step=step)
            self.writer.flush()
        if self.wandb is not None:
            self.wandb.log({f"{kind}/{k}": v for k, v in scalars.items()}, step=step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.wandb is not None:
            self.wandb.finish()
