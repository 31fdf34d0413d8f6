"""`laser train`: a run config -> the parts of a Trainer -> rounds, evaluations and a metrics file in runs/<name>/.

The parts are built by `laser.parts`; the run directory itself (its lock, its config and assets records) is
`laser.training.rundir`.
"""

from __future__ import annotations

import gc
import json
import logging
from contextlib import ExitStack
from pathlib import Path

import yaml
from tqdm.auto import tqdm

from laser.config import ConfigError, RunConfig, check_launch
from laser.console import say
from laser.parts import build_trainer
from laser.placement import visible_gpus
from laser.report import write_run_report

from .checkpoints import latest_checkpoint
from .distributed import init_distributed, is_main_process, main_first, world
from .rundir import ASSETS_RECORD, check_assets, embedded_recipe, run_lock
from .stopping import RunStopped, stop_on_signals

log = logging.getLogger(__name__)


def train(config: RunConfig, progress: bool = True, resume: bool = False) -> dict:
    """Run rounds until `config.rounds`, evaluating every `eval_every` rounds and checkpointing every
    `checkpoint_every` (and at the end, and after the round in progress on SIGINT / SIGTERM: see
    `laser.training.stopping`); with `resume`, continue from the newest checkpoint."""
    from .dpo import per_device_batch_size

    init_distributed()
    # A launch the config or the DPO step cannot run under stops here, before any work, with every reason.
    check_launch(config, world()[1], visible_gpus())
    per_device_batch_size(config.dpo)
    progress = progress and is_main_process()
    run_dir = config.run_dir
    with ExitStack() as held:
        # Rank 0 owns the run directory; the other ranks stop with its error if it cannot start the run.
        main_first(lambda: held.enter_context(run_lock(run_dir)))
        if main_first(lambda: _prepare_run_dir(config, resume)) == "start over":
            _say(f"{run_dir} stopped before its first checkpoint: starting it over from round 0", progress)
            resume = False
        recipe = embedded_recipe(config)
        if recipe is not None and world()[1] > 1:  # rank 0 builds the assets; the others then find them cached
            from laser.assets import build_assets

            main_first(lambda: build_assets(recipe) and None)

        trainer = build_trainer(config)
        # accelerate runs a full gc.collect() at the start of every TRL train() call (every DPO update), over every
        # object of the loaded engine, RMs and policy (docs/development.md). Frozen, the loaded parts are left out
        # of every collection (they live as long as the run); what the run creates is collected as before.
        gc.collect()
        gc.freeze()
        try:
            # Said by rank 0 alone (under torchrun every rank stops, and a Ctrl-C reaches every rank through torchrun).
            with stop_on_signals(lambda m: _say(m, is_main_process())) as stop:
                last = _rounds(trainer, config, resume, stop, progress)
        finally:
            gc.unfreeze()  # a later run in this process may collect what this one loaded
            trainer.engine.close()
            if trainer.tracker is not None:
                trainer.tracker.close()
        if trainer.round >= config.rounds and is_main_process():
            report = write_run_report(run_dir)
            _say(f"report: {report}", progress)
    return last


def _rounds(trainer, config: RunConfig, resume: bool, stop, progress: bool) -> dict | None:
    """Evaluate round 0 (or resume), then run rounds until `config.rounds`, evaluating and checkpointing on schedule;
    a stop request (`laser.training.stopping`) ends the loop at the next round boundary with a checkpoint."""
    run_dir = config.run_dir
    if resume:
        path = trainer.load_checkpoint()
        _say(f"resumed from {path} at round {trainer.round}", progress)
        last = _last_eval(trainer.metrics_path)  # a run killed after its final checkpoint is complete
        saved = trainer.round  # the round of the newest checkpoint
    else:
        last = trainer.evaluate()
        _say(f"round 0: {_summary(last)}", progress)
        saved = None
    bar = tqdm(total=config.rounds, initial=trainer.round, desc=f"{config.name} ({config.strategy})",
               disable=not progress)
    try:
        while trainer.round < config.rounds:
            signum = stop.agreed()  # every rank stops after the same round
            if signum is not None:
                path = trainer.save_checkpoint() if saved != trainer.round else latest_checkpoint(run_dir)
                raise RunStopped(signum, trainer.round, path)
            trainer.run_round()
            bar.update(1)
            r = trainer.round
            if r % config.eval_every == 0 or r == config.rounds:
                last = trainer.evaluate()
                _say(f"round {r}: {_summary(last)}", progress)
            if r % config.checkpoint_every == 0 or r == config.rounds:
                trainer.save_checkpoint()
                saved = r
    except RunStopped as e:
        _say(f"stopped after round {e.round}: checkpoint {e.checkpoint}; continue with laser train --resume "
             f"{run_dir}", is_main_process())
        raise
    except KeyboardInterrupt:
        kept = _newest_checkpoint(run_dir)
        _say(f"stopped at once in round {trainer.round + 1}, which is dropped; " + (
            f"the last checkpoint is {kept}; continue with laser train --resume {run_dir}" if kept else
            "no checkpoint was written yet"), is_main_process())
        raise
    finally:
        bar.close()
    return last


def _newest_checkpoint(run_dir: Path) -> Path | None:
    try:
        return latest_checkpoint(run_dir)
    except FileNotFoundError:
        return None


def _prepare_run_dir(config: RunConfig, resume: bool) -> str:
    """Check that the run directory can take this run (new) or continue it (resume); write its config. Returns
    "resume", "new", or "start over" (a run to resume that stopped before its first checkpoint: its metrics are
    cleared, and it starts again from round 0, which its config alone determines)."""
    from .checkpoints import read_trainer_state

    run_dir = config.run_dir
    metrics = run_dir / "metrics.jsonl"
    if not resume and metrics.exists():
        raise ConfigError(f"{run_dir} already holds a run (metrics.jsonl); resume it with --resume {run_dir}, "
                          "or choose another name=")
    if resume:
        check_assets(config)
        try:
            checkpoint = latest_checkpoint(run_dir)
        except FileNotFoundError:
            if not metrics.exists():
                raise
            metrics.write_text("")
            return "start over"
        read_trainer_state(checkpoint)  # an unsafe checkpoint stops before any model loads
        return "resume"
    else:
        (run_dir / "config.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
        recipe = embedded_recipe(config)
        (run_dir / ASSETS_RECORD).write_text(json.dumps({"digest": recipe.digest() if recipe else None}) + "\n")
    return "new"


def _last_eval(metrics_path: Path) -> dict | None:
    """The newest evaluation line of a metrics file."""
    lines = [json.loads(x) for x in metrics_path.read_text().splitlines()] if metrics_path.exists() else []
    evals = [x for x in lines if x.get("type") == "eval"]
    return evals[-1] if evals else None


def _summary(ev: dict) -> str:
    acc = ", ".join(f"{d} {a:.0%}" for d, a in ev["accuracy"].items())
    return f"test accuracy {ev['mean_accuracy']:.1%} ({acc}); RM forward passes {ev['rm_forward_total']}"


def _say(msg: str, progress: bool) -> None:
    say("train", msg, progress)
