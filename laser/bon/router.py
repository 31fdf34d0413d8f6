"""A router trained during `laser train`, reused for best-of-n: the run's config and its newest checkpoint.

The checkpoint holds the bandit's state and the per-RM score normalizer; the run's config says how
contexts were computed (pooling, layer, projection seed) and which RMs the arms are. The router is
frozen unless an online feedback is chosen, in which case it keeps learning from where training left it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from laser.config import ConfigError, RunConfig
from laser.statefile import StateFileError
from laser.training.rundir import load_run_config

from .rerank import BonError


@dataclass
class TrainedRouter:
    """What `laser bon --router RUN_DIR` reads from a run directory."""

    run_dir: Path
    config: RunConfig
    checkpoint: Path
    state: dict                 # the checkpoint's trainer state (`strategy`, `normalizer`, ...)

    @property
    def policy(self) -> Path:
        """The policy as the run left it (the checkpoint's weights)."""
        path = self.checkpoint / "policy"
        if (path / "adapter_config.json").exists():
            raise BonError(f"--router {self.run_dir}: the run trained LoRA adapters ({path}); merge them into the "
                           "base model (peft's merge_and_unload) and pass the merged directory with --policy")
        return path

    @property
    def strategy(self) -> str:
        return self.config.strategy

    @property
    def rm_names(self) -> list[str]:
        return list(self.state["strategy"]["rm_names"])


def load_router(run_dir: str | Path) -> TrainedRouter:
    """Read `run_dir`'s config and newest checkpoint; errors say what is missing."""
    from laser.training.checkpoints import read_trainer_state

    run_dir = Path(run_dir)
    try:
        config = load_run_config(run_dir)
    except ConfigError as e:
        raise BonError(f"--router {run_dir}: {e}") from None
    latest = run_dir / "checkpoints" / "latest"
    if not latest.is_file():
        raise BonError(f"--router {run_dir}: the run has no checkpoint yet (no checkpoints/latest); train it first")
    ckpt = run_dir / "checkpoints" / latest.read_text().strip()
    try:
        state = read_trainer_state(ckpt)
    except StateFileError as e:
        raise BonError(f"--router {run_dir}: {e}") from None
    return TrainedRouter(run_dir, config, ckpt, state)
