"""Reward models: one interface over HF classifiers, implicit DPO rewards, LM likelihood and Python functions;
per-RM normalization; aggregators (ensembles and multi-objective scalarizations); RM agreement."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .aggregators import AGGREGATORS, aggregate
from .agreement import format_agreement, preference_agreement
from .base import RewardError, RewardModel, RewardModelFailed, RewardStats, Scores, ScoringUnavailable
from .function import FunctionRM, verifier
from .normalize import ScoreNormalizer

BACKENDS = ("hf", "implicit_dpo", "likelihood", "remote")


def load_reward_model(kind: str, path: str, **kwargs) -> RewardModel:
    """A reward model of backend `kind` ("hf", "implicit_dpo" with ref_path=..., "likelihood") from `path`, or
    ("remote") behind the server at `path` (a URL; `protocol=`, see `laser.rewards.remote`)."""
    from .hf import HFSequenceClassifierRM, ImplicitDPORM, LikelihoodRM

    if kind == "hf":
        return HFSequenceClassifierRM(path, **kwargs)
    if kind == "implicit_dpo":
        if "ref_path" not in kwargs:
            raise RewardError("an implicit_dpo reward model needs ref_path= (the model it was DPO-trained from)")
        return ImplicitDPORM(path, **kwargs)
    if kind == "likelihood":
        return LikelihoodRM(path, **kwargs)
    if kind == "remote":
        from .remote import RemoteRM

        return RemoteRM(path, **kwargs)
    raise RewardError(f"unknown reward model backend {kind!r}; choose one of {list(BACKENDS)}")


def score_matrix(models: Mapping[str, RewardModel] | Sequence[RewardModel], prompts: Sequence[str],
                 completions: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Every RM scores every completion: (names, scores of shape (n, K)), NaN where unscorable."""
    rms = list(models.values()) if isinstance(models, Mapping) else list(models)
    cols = [rm.score(prompts, completions).values for rm in rms]
    return [rm.name for rm in rms], np.stack(cols, axis=1) if cols else np.zeros((len(prompts), 0))


__all__ = [
    "AGGREGATORS", "BACKENDS", "FunctionRM", "RewardError", "RewardModel", "RewardModelFailed", "RewardStats",
    "ScoreNormalizer", "Scores", "ScoringUnavailable", "aggregate", "format_agreement", "load_reward_model",
    "preference_agreement", "score_matrix", "verifier",
]
