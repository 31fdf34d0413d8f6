"""From `laser bon`'s options to loaded parts: which policy, which RMs, which strategy (and router state).

Defaults follow the router: with `--router runs/<name>` the policy is that run's trained policy, the
RMs are its RMs and the strategy is its strategy with the bandit's learned state; without a router,
the embedded default's policy and RMs and a fresh LASeR router.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from laser import parts
from laser.config import ConfigError, RewardModelConfig, RunConfig
from laser.placement import resolve_device
from laser.rewards import ScoreNormalizer
from laser.strategies import RewardStrategy, StrategyError, parse_strategy

from .rerank import BonError
from .router import TrainedRouter, load_router


@dataclass
class BonSetup:
    """What a best-of-n run uses, resolved but not loaded."""

    policy: str
    reward_models: dict[str, RewardModelConfig]
    table: dict | None           # per-RM, per-domain accuracy (the oracle's), when known
    config: RunConfig            # the router run's config, or the defaults
    router: TrainedRouter | None = None
    embed_policy: str | None = None  # the model whose hidden states are the contexts (default: `policy`)


def _embedded(kind: str = "judges"):
    from laser.assets import AssetRecipe, build_assets

    assets = build_assets(AssetRecipe())
    return (assets, *parts.embedded_lineup(assets, kind))


def parse_rms(spec: str) -> tuple[dict[str, RewardModelConfig], dict | None]:
    """`--rms`: `embedded[:judges|classifiers]`, a YAML file ({name: {kind, path}}, or a run config's
    `models.reward_models`), or `name=[kind:]path,name=[kind:]path`. Every path must exist."""
    spec = spec.strip()
    table = None
    if spec.split(":")[0] == "embedded":
        _, rms, table = _embedded(spec.partition(":")[2] or "judges")
    elif spec.endswith((".yaml", ".yml")):
        path = Path(spec)
        if not path.is_file():
            raise BonError(f"--rms {spec}: no such file")
        tree = yaml.safe_load(path.read_text()) or {}
        tree = tree.get("models", tree).get("reward_models", tree) if isinstance(tree, dict) else tree
        if not isinstance(tree, dict) or not tree:
            raise BonError(f"--rms {spec}: expected a mapping of reward model names to {{kind, path}}")
        try:
            rms = {n: RewardModelConfig.model_validate(c) for n, c in tree.items()}
        except Exception as e:  # pydantic's message names the field
            raise BonError(f"--rms {spec}: {e}") from None
    else:
        rms = {}
        for item in filter(None, (x.strip() for x in spec.split(","))):
            name, eq, where = item.partition("=")
            if not eq or not name or not where:
                raise BonError(f"--rms: {item!r} is not name=path or name=kind:path (kinds: hf, likelihood)")
            kind, colon, path = where.partition(":")
            if not colon:
                kind, path = "hf", where
            if kind not in ("hf", "likelihood"):
                raise BonError(f"--rms: {item!r}: unknown kind {kind!r} (hf or likelihood here; implicit_dpo needs "
                               "a ref_path: use a YAML file)")
            rms[name] = RewardModelConfig(kind=kind, path=path)
        if not rms:
            raise BonError("--rms names no reward model")
    for name, c in rms.items():
        for p in filter(None, (c.path, c.ref_path)):
            if not Path(p).exists():
                raise BonError(f"--rms: reward model {name!r}: {p} does not exist (a local model directory)")
    return rms, table


def resolve_setup(policy: str | None = None, rms: str | None = None, router: str | None = None) -> BonSetup:
    """The policy, RMs and config a best-of-n run uses (see the module docstring for the defaults)."""
    trained = load_router(router) if router else None
    config = trained.config if trained else RunConfig()
    embed_policy = None
    if rms:
        rm_configs, table = parse_rms(rms)
    elif trained:
        try:
            initial, rm_configs, table, _ = parts.resolve_models(config)
        except ConfigError as e:
            raise BonError(f"--router {router}: {e}") from None
        if config.context.frozen:  # the router was trained on the initial policy's embeddings
            embed_policy = initial
    else:
        rm_configs, table = parse_rms("embedded")
    if policy is None:
        policy = str(trained.policy) if trained else str(_embedded()[0].policy)
    elif not Path(policy).exists():
        raise BonError(f"--policy {policy}: no such model directory")
    return BonSetup(str(policy), rm_configs, table, config, trained, embed_policy)


def load_reward_models(setup: BonSetup) -> dict:
    models = setup.config.models
    return parts.load_reward_models(setup.reward_models, models.device)


def load_embedder(setup: BonSetup, engine=None):
    """The context embedder the router was trained with (the run's pooling, layer and projection)."""
    return parts.load_embedder(setup.embed_policy or setup.policy, setup.config.context, setup.config.seed,
                               engine=engine, device=setup.config.models.device, dtype=setup.config.models.dtype)


def strategy_spec(setup: BonSetup, spec: str | None) -> str:
    """`spec`, or the router run's strategy, or laser."""
    return spec or (setup.router.strategy if setup.router else "laser")


def make_bon_strategy(setup: BonSetup, spec: str | None, embedder=None, normalizer=None) -> RewardStrategy:
    """The strategy `spec` (default: the router's, else laser) over the setup's RMs. When it is the router
    run's own strategy, the learned state (and the score normalizer's statistics) are loaded into it."""
    trained = setup.router
    spec = strategy_spec(setup, spec)
    try:
        if parse_strategy(spec).kind == "laser" and embedder is None:
            raise BonError(f"--strategy {spec} routes by the prompts' contexts: it needs an embedder")
        dim = embedder.dim if embedder is not None else 0
        # Online feedback here (nll, gold) has no fixed scale: the quantile scheme; a loaded router keeps its own.
        strategy = parts.make_run_strategy(setup.config, list(setup.reward_models), dim, setup.table, strategy=spec,
                                     normalize_feedback=True)
        if trained is not None and spec == trained.strategy:
            strategy.load_state_dict(trained.state["strategy"])
            if normalizer is not None:
                normalizer.load_state_dict(trained.state["normalizer"])
    except StrategyError as e:
        raise BonError(f"--strategy {spec}: {e}") from None
    return strategy


def build_runner(settings, policy: str | None = None, rms: str | None = None, strategy: str | None = None,
                 router: str | None = None, engine: str | None = None):
    """Everything `laser bon` needs, loaded: (BonRunner, BonSetup)."""
    from laser.generation import make_engine

    from .runner import BonRunner

    setup = resolve_setup(policy, rms, router)
    spec = strategy_spec(setup, strategy)
    try:
        routed = parse_strategy(spec).kind == "laser"
    except StrategyError as e:
        raise BonError(f"--strategy: {e}") from None
    engine_config = setup.config.engine.model_copy(update={"engine": engine} if engine else {})
    eng = make_engine(setup.policy, engine_config, device=resolve_device(setup.config.models.device))
    try:
        reward_models = load_reward_models(setup)
        embedder = load_embedder(setup, eng) if routed else None
        normalizer = ScoreNormalizer(setup.config.normalizer)
        strat = make_bon_strategy(setup, spec, embedder, normalizer)
    except BaseException:
        eng.close()
        raise
    return BonRunner(eng, strat, reward_models, settings, embedder, normalizer), setup


def learn_bon_prior(runner, setup: BonSetup, rows: int, validation=None) -> dict:
    """`laser bon --prior ROWS`: teach the fresh laser router of `runner` from ROWS held-out rows (`validation`,
    `laser.tasks.Example`s, else the run config's validation split) before it serves (`laser.training.prior`).
    Returns its counts."""
    from laser.training.prior import learn_prior

    if setup.router is not None:
        raise BonError("--prior teaches a fresh router: with --router the trained router is used as it is")
    if runner.embedder is None:
        raise BonError(f"--prior needs a laser router, not --strategy {runner.strategy.name}")
    if validation is None:
        _, _, _, assets = parts.resolve_models(setup.config)
        validation = parts.load_tasks(setup.config, assets)[1]
    r = setup.config.round
    return learn_prior(runner.strategy, runner.rms, runner.normalizer, runner.engine, runner.embedder.embed,
                       validation, rows=rows, n=r.n, temperature=r.temperature, max_new_tokens=r.max_new_tokens,
                       seed=setup.config.seed)
