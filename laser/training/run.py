"""`laser train`: a run config -> the parts of a Trainer -> rounds, evaluations and a metrics file in runs/<name>/.

The run directory itself (its lock, its config and assets records) is `laser.training.rundir`.
"""

from __future__ import annotations

import gc
import json
import logging
from contextlib import ExitStack
from pathlib import Path

import yaml

from laser.config import ConfigError, RunConfig
from laser.console import say

from .distributed import init_distributed, is_main_process, main_first, world
from .rundir import ASSETS_RECORD, check_assets, embedded_recipe, run_lock

log = logging.getLogger(__name__)


def resolve_models(config: RunConfig):
    """(policy path, {rm name: RewardModelConfig}, accuracy table or None, suite or None) for the config."""
    from laser.config import RewardModelConfig

    assets = None
    recipe = embedded_recipe(config)
    if recipe is not None:
        from laser.assets import build_assets

        assets = build_assets(recipe)
    if config.models.policy is None and assets is None:
        raise ConfigError("models.policy: set a policy path, or models.embedded: default|quick")
    policy = config.models.policy or str(assets.policy)
    if config.models.reward_models is not None:
        rms = dict(config.models.reward_models)
        table = None
    else:
        if assets is None:
            raise ConfigError("models.reward_models: list your reward models, or use models.embedded")
        lineup, table = assets.lineup(config.models.embedded_rms)
        rms = {name: RewardModelConfig(kind=kind, path=str(p)) for name, (kind, p) in lineup.items()}
    return policy, rms, table, assets


def load_tasks(config: RunConfig, assets):
    """(train, validation, test) examples of the run."""
    t = config.tasks
    if t.source == "embedded":
        if assets is None:
            raise ConfigError("tasks.source: embedded needs models.embedded: default|quick")
        suite = assets.suite()
        train, validation, test = list(suite.train), list(suite.validation), list(suite.test)
    else:
        from laser.tasks import load_jsonl

        missing = [k for k in ("train", "validation", "test") if getattr(t, k) is None]
        if missing:
            raise ConfigError(f"tasks.source: jsonl needs tasks.{', tasks.'.join(missing)} (paths to JSONL files)")
        train, validation, test = (load_jsonl(getattr(t, k), answer_format=t.answer_format,
                                              skip_bad_rows=t.skip_bad_rows)[0]
                                   for k in ("train", "validation", "test"))
    if t.test_per_domain:
        per_domain: dict[str, list] = {}
        for ex in test:
            per_domain.setdefault(ex.domain, [])
            if len(per_domain[ex.domain]) < t.test_per_domain:
                per_domain[ex.domain].append(ex)
        test = [ex for exs in per_domain.values() for ex in exs]
    return train, validation, test


def make_run_strategy(config: RunConfig, rm_names: list[str], dim: int, table=None, strategy: str | None = None,
                      normalize_feedback: bool | None = None):
    """The reward strategy of a run config (or `strategy`, with the config's bandit and ensemble settings).
    `normalize_feedback`: whether a bandit quantile-normalizes its rewards (default: as the run's reward needs)."""
    from laser.strategies import make_strategy

    spec = strategy or config.strategy
    if spec == "laser":
        spec = f"laser:{config.bandit.policy}"
    params = {}
    if spec.startswith("laser"):
        # bandit.params belong to bandit.policy; another bandit named in the strategy keeps its own defaults
        params = dict(config.bandit.params if spec == f"laser:{config.bandit.policy}" else {},
                      selection=config.bandit.selection, center=config.bandit.center,
                      # rerank gains are on a fixed scale whose 0 means "no better than a tie" (what an
                      # untried RM is assumed to be); the update-based gains need the quantile scheme, and
                      # Exp3 rewards in [0, 1].
                      normalize_feedback=(config.round.feedback != "rerank_gain" or spec == "laser:exp3")
                      if normalize_feedback is None else normalize_feedback)
    elif spec.startswith("ensemble"):
        params = dict(config.ensemble_params)
    return make_strategy(spec, rm_names, dim=dim, seed=config.seed, oracle_table=table, **params)


def build_trainer(config: RunConfig):
    """Every part of the run, built from the config (models loaded, engine started)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from laser.generation import make_embedder, make_engine
    from laser.rewards import load_reward_model
    from laser.strategies import OracleStrategy

    from .dpo import DPOStep
    from .loop import Trainer

    policy_path, rm_configs, table, assets = resolve_models(config)
    train, validation, test = load_tasks(config, assets)
    tokenizer = AutoTokenizer.from_pretrained(policy_path)
    policy = AutoModelForCausalLM.from_pretrained(policy_path)
    if config.dpo.lora is not None:
        from .dpo import apply_lora

        policy = apply_lora(policy, config.dpo.lora)
    engine = make_engine(policy_path, config.engine)
    rms = {name: load_reward_model(c.kind, c.path, name=name, batch_size=c.batch_size,
                                   **({"ref_path": c.ref_path} if c.ref_path else {}))
           for name, c in rm_configs.items()}
    embedder = make_embedder(policy, tokenizer, config.context, seed=config.seed, engine=engine)
    strategy = make_run_strategy(config, list(rms), embedder.dim, table)
    tracker = None
    if config.report_to and is_main_process():  # one set of logs per run
        from .tracking import Tracker

        tracker = Tracker(config.run_dir, config.report_to, name=config.name, config=config.model_dump(mode="json"))
    dpo = DPOStep(policy, tokenizer, config.dpo, config.run_dir / ".dpo", seed=config.seed,
                  report_to=config.report_to, renderer=engine.renderer)
    oracle = OracleStrategy.from_accuracy(list(rms), table).best_by_domain if table else None
    return Trainer(policy, tokenizer, engine, embedder, rms, strategy, dpo, train, validation, test, config.round,
                   config.run_dir, seed=config.seed, normalizer=config.normalizer, oracle=oracle, tracker=tracker,
                   evaluation=config.eval)


def train(config: RunConfig, progress: bool = True, resume: bool = False) -> dict:
    """Run rounds until `config.rounds`, evaluating every `eval_every` rounds and checkpointing every
    `checkpoint_every` (and at the end, and on Ctrl-C); with `resume`, continue from the newest checkpoint."""
    from tqdm.auto import tqdm

    from .dpo import per_device_batch_size

    init_distributed()
    per_device_batch_size(config.dpo)  # a launch the DPO step cannot run under stops here, before any work
    progress = progress and is_main_process()
    run_dir = config.run_dir
    with ExitStack() as held:
        # Rank 0 owns the run directory; the other ranks stop with its error if it cannot start the run.
        main_first(lambda: held.enter_context(run_lock(run_dir)))
        main_first(lambda: _prepare_run_dir(config, resume))
        recipe = embedded_recipe(config)
        if recipe is not None and world()[1] > 1:  # rank 0 builds the assets; the others then find them cached
            from laser.assets import build_assets

            main_first(lambda: build_assets(recipe) and None)
        trainer = build_trainer(config)
        # accelerate runs a full gc.collect() at the start of every TRL train() call, i.e. of every RM group's
        # DPO update. With the engine, the reward models and the policy loaded the process tracks some 560k
        # objects, and that collection cost 0.3 s, 6x the update itself. Frozen, the loaded parts are left out
        # of every collection (they live as long as the run); what the run creates is collected as before.
        gc.collect()
        gc.freeze()
        try:
            if resume:
                path = trainer.load_checkpoint()
                _say(f"resumed from {path} at round {trainer.round}", progress)
                last = _last_eval(trainer.metrics_path)  # a run killed after its final checkpoint is complete
            else:
                last = trainer.evaluate()
                _say(f"round 0: {_summary(last)}", progress)
            bar = tqdm(total=config.rounds, initial=trainer.round, desc=f"{config.name} ({config.strategy})",
                       disable=not progress)
            try:
                while trainer.round < config.rounds:
                    trainer.run_round()
                    bar.update(1)
                    r = trainer.round
                    if r % config.eval_every == 0 or r == config.rounds:
                        last = trainer.evaluate()
                        _say(f"round {r}: {_summary(last)}", progress)
                    if r % config.checkpoint_every == 0 or r == config.rounds:
                        trainer.save_checkpoint()
            except KeyboardInterrupt:
                path = trainer.save_checkpoint()
                _say(f"interrupted: checkpoint {path}; continue with laser train --resume {run_dir}", True)
                raise
            finally:
                bar.close()
        finally:
            gc.unfreeze()  # a later run in this process may collect what this one loaded
            trainer.engine.close()
            if trainer.tracker is not None:
                trainer.tracker.close()
        if trainer.round >= config.rounds and is_main_process():
            from laser.report import write_run_report

            report = write_run_report(run_dir)
            _say(f"report: {report}", progress)
    return last


def _prepare_run_dir(config: RunConfig, resume: bool) -> None:
    """Check that the run directory can take this run (new) or continue it (resume); write its config."""
    from .loop import latest_checkpoint, read_trainer_state

    run_dir = config.run_dir
    if not resume and (run_dir / "metrics.jsonl").exists():
        raise ConfigError(f"{run_dir} already holds a run (metrics.jsonl); resume it with --resume {run_dir}, "
                          "or choose another name=")
    if resume:
        check_assets(config)
        read_trainer_state(latest_checkpoint(run_dir))  # a missing or unsafe checkpoint stops before any model loads
    else:
        (run_dir / "config.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
        recipe = embedded_recipe(config)
        (run_dir / ASSETS_RECORD).write_text(json.dumps({"digest": recipe.digest() if recipe else None}) + "\n")


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
