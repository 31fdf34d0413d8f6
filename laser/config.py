"""Run configuration: one pydantic model per section, YAML in, clear errors out.

`load_config(path, overrides=["round.n=16", "strategy=random"])` reads a YAML file, applies dotted
`key=value` overrides (values parsed as YAML scalars), and validates everything: an unknown key or a
bad value is a `ConfigError` that names the key and says what is allowed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from laser.generation import ContextConfig, EngineConfig
from laser.training.dpo import DPOSettings
from laser.training.loop import RoundSettings


class ConfigError(ValueError):
    """A run config that cannot be used; the message names the key and what to change."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RewardModelConfig(_Section):
    """One reward model of the run: a backend and where its weights are."""

    kind: Literal["hf", "implicit_dpo", "likelihood"] = "hf"
    path: str
    ref_path: str | None = None  # implicit_dpo: the model it was DPO-trained from
    batch_size: int = Field(64, gt=0)


class ModelsConfig(_Section):
    """The policy and the reward models: `embedded` (built by `laser build-assets`) or your own."""

    embedded: Literal["default", "quick"] | None = "default"
    # A world recipe (YAML of `laser.assets.AssetRecipe`, e.g. configs/worlds/alt.yaml) to build and use
    # instead of the `embedded` one.
    embedded_recipe: str | None = None
    # Which embedded reward models: judge LMs (likelihood backend) + the length-hacked classifier, or the
    # sequence classifiers alone.
    embedded_rms: Literal["judges", "classifiers"] = "judges"
    policy: str | None = None  # a local directory or hub id; default: the embedded policy
    reward_models: dict[str, RewardModelConfig] | None = None  # default: the embedded reward models


class TasksConfig(_Section):
    """Prompts with checkable answers: the embedded suite, or JSONL files (`prompt`, `answer`, `domain`)."""

    source: Literal["embedded", "jsonl"] = "embedded"
    train: str | None = None
    validation: str | None = None
    test: str | None = None
    answer_format: str = "exact"
    skip_bad_rows: bool = False
    test_per_domain: int | None = Field(None, gt=0)  # evaluate on at most this many test examples per domain


class BanditConfig(_Section):
    """The router of `strategy: laser`: a `bandits` policy and its parameters."""

    policy: str = "kernel_ucb"
    params: dict[str, Any] = {"alpha": 1.0}
    selection: Literal["instance", "batch"] = "instance"
    # Contexts minus their running mean, renormalized, plus a constant feature (see `BanditStrategy`).
    center: bool = True


class RunConfig(_Section):
    """A training run: `laser train --config this.yaml`."""

    name: str = Field("run", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    output_dir: str = "runs"
    seed: int = 0
    strategy: str = "laser"
    rounds: int = Field(40, gt=0)
    eval_every: int = Field(10, gt=0)
    checkpoint_every: int = Field(10, gt=0)  # and at the end, and on Ctrl-C
    normalizer: Literal["zscore", "quantile", "rank", "none"] = "zscore"
    ensemble_params: dict[str, Any] = {}
    report_to: list[Literal["tensorboard", "wandb"]] = []  # besides metrics.jsonl (wandb runs offline)
    models: ModelsConfig = ModelsConfig()
    tasks: TasksConfig = TasksConfig()
    bandit: BanditConfig = BanditConfig()
    round: RoundSettings = RoundSettings()
    dpo: DPOSettings = DPOSettings()
    engine: EngineConfig = EngineConfig()
    context: ContextConfig = ContextConfig()

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, v: str) -> str:
        from laser.strategies import StrategyError, parse_strategy

        try:
            parse_strategy(v)
        except StrategyError as e:
            raise ValueError(str(e)) from e
        return v

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name


def _set(tree: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for k in keys[:-1]:
        if not isinstance(node.get(k, {}), dict):
            raise ConfigError(f"--set {dotted}: {k!r} is not a section")
        node = node.setdefault(k, {})
    node[keys[-1]] = value


def apply_overrides(tree: dict, overrides: list[str]) -> dict:
    """`key.sub=value` strings applied to a config dict (values parsed as YAML: 3, 0.5, true, [a, b])."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        _set(tree, key.strip(), yaml.safe_load(raw) if raw.strip() else "")
    return tree


def parse_config(tree: dict, source: str = "config") -> RunConfig:
    """Validate a config dict; errors name each bad key and what is expected."""
    from laser.validation import problems

    try:
        return RunConfig.model_validate(tree)
    except ValidationError as e:
        lines = problems(e, "configs/demo.yaml")
        raise ConfigError(f"{source} has {len(lines)} problem(s):\n  " + "\n  ".join(lines)) from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML run config (or the defaults when `path` is None), apply overrides, validate."""
    from laser.validation import read_mapping

    tree = read_mapping(path, ConfigError, f"config file {path} does not exist") if path is not None else {}
    return parse_config(apply_overrides(tree, overrides or []), str(path or "config"))
