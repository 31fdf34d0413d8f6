"""A run directory: its lock, and the records that say what ran there.

The directory is locked while a run writes to it (`.lock` holds the writer's pid; a lock whose process is
gone is taken over), so a second `laser train` on the same directory stops with a message instead of
interleaving metrics. `config.yaml` is the resolved config it was started with; `assets.json` the digest
of the embedded recipe it was trained on (a run of another world is neither resumed nor reused).
"""

from __future__ import annotations

import errno
import json
import os
import signal
import time
from contextlib import contextmanager
from pathlib import Path

import yaml

from laser.config import ConfigError, RunConfig, parse_config


class RunLockedError(RuntimeError):
    """Another process is writing to this run directory."""


@contextmanager
def run_lock(run_dir: Path):
    """Hold `run_dir/.lock` for the duration of the block."""
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = run_dir / ".lock"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            break
        except FileExistsError:
            try:
                pid = int(lock.read_text().strip() or "0")
            except (OSError, ValueError):
                pid = 0
            if pid and process_alive(pid):
                raise RunLockedError(f"{run_dir} is being written by process {pid}; wait for it, stop it, or "
                                     "choose another run name (name=...)") from None
            lock.unlink(missing_ok=True)  # left by a run that died
    else:
        raise RunLockedError(f"could not take the lock {lock}")
    try:
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        yield
    finally:
        lock.unlink(missing_ok=True)


class RunNotRunning(RuntimeError):
    """No live process writes to this run directory."""


def stop_run(run_dir: str | Path, now: bool = False, wait: float = 600.0, poll: float = 0.2) -> tuple[int, str]:
    """Ask the run writing `run_dir` to stop: SIGTERM to the process holding its lock (under torchrun, rank 0: the
    ranks agree at the round boundary, so all of them stop), then with `now` a second SIGTERM (stop at once).
    Only that process is signalled, never its process group, which may hold other runs or the shell that started
    them. Waits up to `wait` seconds for it to exit; returns (pid, "stopped" or "running")."""
    lock = Path(run_dir) / ".lock"
    try:
        pid = int(lock.read_text().strip() or "0")
    except (OSError, ValueError):
        pid = 0
    if not pid or not process_alive(pid):
        raise RunNotRunning(f"no run is writing to {run_dir} (no live process holds {lock})")
    os.kill(pid, signal.SIGTERM)
    if now:
        time.sleep(poll)  # two signals delivered at once may be taken as one
        if process_alive(pid):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + wait
    while process_alive(pid) and time.monotonic() < deadline:
        time.sleep(poll)
    return pid, "running" if process_alive(pid) else "stopped"


def process_alive(pid: int) -> bool:
    """Whether `pid` is a running process (one of another user counts)."""
    try:
        os.kill(pid, 0)
    except OSError as e:
        return e.errno == errno.EPERM
    try:  # a zombie (exited, not yet reaped by its parent) writes nothing more
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def embedded_recipe(config: RunConfig):
    """The `AssetRecipe` of the embedded assets the run uses, or None when it uses none."""
    m = config.models
    if (m.embedded is None and m.embedded_recipe is None) or (m.policy is not None and m.reward_models is not None
                                                              and config.tasks.source != "embedded"):
        return None
    from laser.assets import AssetRecipe, quick_recipe
    from laser.assets.recipe import RecipeError, load_recipe

    if config.models.embedded_recipe is not None:
        try:
            return load_recipe(config.models.embedded_recipe)
        except RecipeError as e:
            raise ConfigError(f"models.embedded_recipe: {e}") from None
    # One world for every seed of a run, as the default world is: a seed varies the training, not the models
    # (and a 3-seed comparison on the quick world builds it once instead of three times).
    return quick_recipe() if config.models.embedded == "quick" else AssetRecipe()


ASSETS_RECORD = "assets.json"


def check_assets(config: RunConfig) -> None:
    """Raise ConfigError if the run directory's models were built from another embedded recipe than the
    one this code builds now (a finished or resumed run would otherwise mix two worlds)."""
    path = config.run_dir / ASSETS_RECORD
    recipe = embedded_recipe(config)
    now = recipe.digest() if recipe is not None else None
    try:
        saved = json.loads(path.read_text()).get("digest")
    except FileNotFoundError:
        saved = "unknown (no assets.json)" if now is not None else None
    if saved != now:
        raise ConfigError(f"{config.run_dir} was trained on embedded assets {saved}, but this version builds "
                          f"{now}: its results belong to another world; move it away or choose another name=")


def load_run_config(run_dir: str | Path) -> RunConfig:
    """The resolved config a run directory was started with, located where the directory now is (a run
    moved or copied elsewhere is resumed there, not where it was first written)."""
    run_dir = Path(run_dir)
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"{run_dir} is not a run directory (no config.yaml)")
    config = parse_config(yaml.safe_load(path.read_text()), str(path))
    return config.model_copy(update={"output_dir": str(run_dir.resolve().parent), "name": run_dir.resolve().name})
