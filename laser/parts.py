"""The parts of a run, built from its config: models, tasks, reward models, the strategy, the embedder, the Trainer.

Every command builds its parts here (`laser train`, `laser bon`, `laser bench`, `laser demo` and the
benchmarks), so that one config means the same policy, reward models, data and router everywhere.
Heavy libraries are imported by the functions that need them: resolving a config loads no model.
"""

from __future__ import annotations

from collections.abc import Mapping

from laser.config import ConfigError, ContextConfig, RewardModelConfig, RunConfig, check_launch
from laser.console import torch_dtype
from laser.integrations.routed import RoutedReward
from laser.placement import dtype_name, resolve_device, visible_gpus
from laser.rewards import load_reward_model
from laser.rewards.base import HeldElsewhere, Redeployed
from laser.strategies import OracleStrategy, make_strategy
from laser.streams import Streams
from laser.tasks import load_jsonl
from laser.training.rundir import embedded_recipe
from laser.training.tracking import Tracker


def embedded_lineup(assets, kind: str = "judges") -> tuple[dict[str, RewardModelConfig], dict]:
    """The reward models of a built world as run configs ({name: RewardModelConfig}) and their per-domain
    accuracy table (the oracle's): `judges` (the judge LMs and the length-hacked RM) or `classifiers`."""
    lineup, table = assets.lineup(kind)
    return {name: RewardModelConfig(kind=backend, path=str(p)) for name, (backend, p) in lineup.items()}, table


def resolve_models(config: RunConfig):
    """(policy path, {rm name: RewardModelConfig}, accuracy table or None, assets or None) for the config;
    builds the embedded world on first use."""
    assets = None
    recipe = embedded_recipe(config)
    if recipe is not None:
        from laser.assets import build_assets

        assets = build_assets(recipe)
    if config.models.policy is None and assets is None:
        raise ConfigError("models.policy: set a policy path, or models.embedded: default|quick")
    policy = config.models.policy or str(assets.policy)
    if config.models.reward_models is not None:
        return policy, dict(config.models.reward_models), None, assets
    if assets is None:
        raise ConfigError("models.reward_models: list your reward models, or use models.embedded")
    rms, table = embedded_lineup(assets, config.models.embedded_rms)
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


def rm_owners(configs: Mapping[str, RewardModelConfig], placement: str, processes: int) -> dict[str, int | None]:
    """{rm: the one process that loads and scores it} under `placement: shard` (in-process RM i in process i mod N),
    None where every process holds it (replicate, a single process) or none does (a remote RM)."""
    shard = placement == "shard" and processes > 1
    return {name: i % processes if shard and c.kind != "remote" else None
            for i, (name, c) in enumerate(configs.items())}


def load_reward_models(configs: Mapping[str, RewardModelConfig], device: str = "auto", placement: str = "replicate",
                       rank: int = 0, processes: int = 1) -> dict:
    """{name: RewardModel}, loaded where their configs say: an in-process RM on its `device` (default `device`, the
    policy's) in its `dtype`, or spread by its `device_map`. With `placement: shard` in a launch of several
    processes, RM number i is loaded in process i mod N only, and the others hold a placeholder that receives its
    scores (`HeldElsewhere`)."""
    default = resolve_device(device)
    gpu = resolve_device("auto")
    owners = rm_owners(configs, placement, processes)

    def load(name: str, c: RewardModelConfig):
        if c.kind == "remote":
            return load_reward_model("remote", c.url, name=name, batch_size=c.batch_size, protocol=c.protocol,
                                     model=c.model, tokenizer=c.tokenizer, head=c.head, timeout=c.timeout,
                                     retries=c.retries, backoff=c.backoff)
        owner = owners[name]
        if owner is not None and owner != rank:
            return HeldElsewhere(name, owner, batch_size=c.batch_size)
        where = resolve_device(c.device, default) if c.device_map is None else "cpu"
        rm = load_reward_model(c.kind, c.path, name=name, batch_size=c.batch_size, device=where,
                               dtype=dtype_name(c.dtype, where if c.device_map is None else gpu),
                               device_map=c.device_map, **({"ref_path": c.ref_path} if c.ref_path else {}))
        rm.owner = owner
        return rm

    return {name: load(name, c) for name, c in configs.items()}


def load_policy(path: str, device: str = "auto", dtype: str = "auto"):
    """(model, tokenizer) of the policy at `path`, its weights in `dtype` on `device` (config names: auto, cpu,
    cuda, cuda:N; auto, float32, bfloat16, float16)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    where = resolve_device(device)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype(dtype, where)).to(where)
    return model, AutoTokenizer.from_pretrained(path)


def swap_reward_model(rms: dict, swap) -> dict:
    """`rms` with `swap.rm` answering as `swap.by` from round `swap.round` on (`models.rm_swap`)."""
    missing = [n for n in (swap.rm, swap.by) if n not in rms]
    if missing or swap.rm == swap.by:
        raise ConfigError(f"models.rm_swap: rm and by must be two of the run's reward models {list(rms)}, got "
                          f"rm={swap.rm!r}, by={swap.by!r}")
    if rms[swap.rm].owner is not None or rms[swap.by].owner is not None:
        raise ConfigError("models.rm_swap needs models.rm_placement: replicate (every process holds both RMs)")
    return {**rms, swap.rm: Redeployed(rms[swap.rm], rms[swap.by], swap.round)}


def load_embedder(path: str, context: ContextConfig, seed: int, engine=None, model=None, tokenizer=None,
                  device: str = "auto", dtype: str = "auto"):
    """The context embedder over the policy at `path` (or the `model` and `tokenizer` already loaded), on
    `device` in `dtype`; its random projection (`context.dim`) is the run seed's `embedder` stream."""
    from laser.generation import make_embedder

    if model is None:
        model, tokenizer = load_policy(path, device, dtype)
    return make_embedder(model, tokenizer, context, seed=Streams(seed).seed_for("embedder", bits=32), engine=engine)


def make_run_strategy(config: RunConfig, rm_names: list[str], dim: int, table=None, strategy: str | None = None,
                      normalize_feedback: bool | None = None):
    """The reward strategy of a run config (or `strategy`, with the config's bandit and ensemble settings).
    `normalize_feedback`: whether a bandit quantile-normalizes its rewards (default: as the run's reward needs)."""
    spec = strategy or config.strategy
    if spec == "laser":
        spec = f"laser:{config.bandit.policy}"
    params = {}
    if spec.startswith("laser"):
        # bandit.params belong to bandit.policy; another bandit named in the strategy keeps its own defaults
        params = dict(config.bandit.params if spec == f"laser:{config.bandit.policy}" else {},
                      selection=config.bandit.selection, center=config.bandit.center,
                      drift_threshold=config.bandit.drift_threshold, drift_window=config.bandit.drift_window,
                      # rerank gains are on a fixed scale whose 0 means "no better than a tie" (what an
                      # untried RM is assumed to be); the update-based gains need the quantile scheme, and
                      # Exp3 rewards in [0, 1].
                      normalize_feedback=(config.round.feedback != "rerank_gain" or spec == "laser:exp3")
                      if normalize_feedback is None else normalize_feedback)
    elif spec.startswith("ensemble"):
        params = dict(config.ensemble_params)
    return make_strategy(spec, rm_names, dim=dim, seed=Streams(config.seed).seed_for("router"), oracle_table=table,
                         **params)


def build_trainer(config: RunConfig, loaded=None):
    """Every part of a training run, built from the config (models loaded, engine started). `loaded(part)`, if
    given, is called once each part is in memory: "policy weights", "LoRA adapters", "engine", "reward models"
    (benchmarks/gpu_check.py measures each one's memory so)."""
    loaded = loaded or (lambda part: None)
    from laser.generation import make_engine
    from laser.training.distributed import is_main_process, shard_work, world
    from laser.training.dpo import DPOStep
    from laser.training.loop import Trainer

    rank, processes = world()
    check_launch(config, processes, visible_gpus())
    policy_path, rm_configs, table, assets = resolve_models(config)
    train, validation, test = load_tasks(config, assets)
    device = resolve_device(config.models.device)
    # The policy is on its device from the start: round 0's contexts and evaluation run there, not on the CPU.
    policy, tokenizer = load_policy(policy_path, device, config.models.dtype)
    loaded("policy weights")
    if config.dpo.lora is not None:
        from laser.training.dpo import apply_lora

        policy = apply_lora(policy, config.dpo.lora)
        loaded("LoRA adapters")
    engine = make_engine(policy_path, config.engine, device=device)
    loaded("engine")
    rms = load_reward_models(rm_configs, device, config.models.rm_placement, rank, processes)
    if config.models.rm_swap is not None:
        rms = swap_reward_model(rms, config.models.rm_swap)
    loaded("reward models")
    embedder = load_embedder(policy_path, config.context, config.seed, engine=engine, model=policy,
                             tokenizer=tokenizer)
    strategy = make_run_strategy(config, list(rms), embedder.dim, table)
    engine, embedder = shard_work(engine, embedder)  # several processes: each samples and embeds its share
    tracker = None
    if config.report_to and is_main_process():  # one set of logs per run

        tracker = Tracker(config.run_dir, config.report_to, name=config.name, config=config.model_dump(mode="json"))
    dpo = DPOStep(policy, tokenizer, config.dpo, config.run_dir / ".dpo", seed=config.seed,
                  report_to=config.report_to, renderer=engine.renderer)
    oracle = OracleStrategy.from_accuracy(list(rms), table).best_by_domain if table else None
    return Trainer(policy, tokenizer, engine, embedder, rms, strategy, dpo, train, validation, test, config.round,
                   config.run_dir, seed=config.seed, normalizer=config.normalizer, oracle=oracle, tracker=tracker,
                   evaluation=config.eval, data_sources=config.tasks.data_sources)


def build_routing_service(config: RunConfig, validation_path: str | None = None, state_path: str | None = None,
                          init_from: str | None = None, save_every: int = 100, prior: int = 0):
    """`laser serve-router`'s service: the config's reward models and router over its policy's contexts; held-out
    rows from `validation_path` (JSONL) or the config's validation split; a warm start from a run's checkpoint, or
    an offline prior from `prior` of the held-out rows (`laser.training.prior`, sampled with transformers from the
    policy the contexts come from) when the router starts fresh (no state file yet)."""
    from laser.integrations.endpoint import RoutingService
    from laser.training.checkpoints import read_trainer_state

    policy_path, rm_configs, table, assets = resolve_models(config)
    validation = load_jsonl(validation_path)[0] if validation_path else load_tasks(config, assets)[1]
    device = resolve_device(config.models.device)
    rms = load_reward_models(rm_configs, device, config.models.rm_placement)
    embedder = load_embedder(policy_path, config.context, config.seed, device=device, dtype=config.models.dtype)
    router = make_run_strategy(config, list(rms), embedder.dim, table)
    if init_from is not None:  # the router a trained run ended with: it starts where that run left it
        router.load_state_dict(read_trainer_state(init_from)["strategy"])
    reward = RoutedReward(rms, router, embedder, normalizer=config.normalizer)
    service = RoutingService(reward, validation, state_path, save_every)
    if prior and init_from is None and not service.resumed:
        from laser.generation.hf_engine import HFEngine
        from laser.training.prior import learn_prior

        r = config.round
        service.prior = learn_prior(router, rms, reward.normalizer, HFEngine.wrap(embedder.model, embedder.tokenizer),
                                    embedder.embed, validation, rows=prior, n=r.n, temperature=r.temperature,
                                    max_new_tokens=r.max_new_tokens, seed=config.seed)
        reward.rm_forward += service.prior["rm_forward"]
        service.save()  # a restart resumes from the prior instead of learning it again
    return service
