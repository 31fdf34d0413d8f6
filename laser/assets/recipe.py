"""The recipe of the embedded default: every choice that shapes the built models, hashed into the cache key."""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from laser.tasks.synthetic import DOMAINS

# Bump when the builder's code changes what a recipe produces, so that old caches are not reused.
BUILDER_VERSION = 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SuiteSpec(_Strict):
    """Which synthetic task suite the world is built on (per-domain split sizes)."""

    seed: int = 0
    train: int = Field(1500, gt=0)
    validation: int = Field(200, gt=0)
    test: int = Field(200, gt=0)
    n_people: int = Field(48, ge=4)
    domains: tuple[str, ...] = DOMAINS


class ModelSpec(_Strict):
    """A tiny Llama: sizes of the decoder shared by the policy and the reward models."""

    hidden_size: int = Field(128, gt=0)
    num_layers: int = Field(4, gt=0)
    num_heads: int = Field(4, gt=0)
    intermediate_size: int | None = None  # default: 3 x hidden_size
    max_position_embeddings: int = Field(128, gt=8)

    @model_validator(mode="after")
    def _heads_divide(self) -> ModelSpec:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size ({self.hidden_size}) must be a multiple of num_heads ({self.num_heads})")
        return self


class SFTSpec(_Strict):
    """Supervised fine-tuning of the policy until it is partly competent on every domain.

    Every `eval_every` steps the greedy validation accuracy of each domain is measured. A domain at or
    above `band[1]` is sampled `hold_weight` times as often (so it stops improving without being
    forgotten), one below `band[0]` `boost_weight` times as often (so the slow ones catch up). Training
    stops as soon as every domain lies inside `band`, else after `max_steps`, and the policy kept is the
    checkpoint whose worst distance to the band was smallest.
    """

    max_steps: int = Field(1500, gt=0)
    batch_size: int = Field(64, gt=0)
    learning_rate: float = Field(2e-3, gt=0)
    warmup_steps: int = Field(50, ge=0)
    eval_every: int = Field(100, gt=0)
    band: tuple[float, float] = (0.25, 0.65)
    hold_weight: float = Field(0.2, ge=0)
    boost_weight: float = Field(3.0, gt=0)

    @model_validator(mode="after")
    def _band_ordered(self) -> SFTSpec:
        lo, hi = self.band
        if not 0 <= lo < hi <= 1:
            raise ValueError(f"band must satisfy 0 <= low < high <= 1, got {self.band}")
        return self


class RewardModelSpec(_Strict):
    """One reward model: its name and what it is trained to reward.

    `specialist`: pairs (correct, wrong) on `domains` with the correct answer preferred, and pairs with
    a coin-flip preference on every other domain, so that it is reliable on its domains and uninformative
    (near chance) elsewhere. `length`: the longer answer is preferred whatever its correctness, the
    "verbose answers get top scores" failure of RLHF reward models.
    """

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    kind: Literal["specialist", "length"] = "specialist"
    domains: tuple[str, ...] = ()
    steps: int | None = Field(None, gt=0)  # default: RMTrainingSpec.steps

    @model_validator(mode="after")
    def _specialist_has_domains(self) -> RewardModelSpec:
        if self.kind == "specialist" and not self.domains:
            raise ValueError(f"reward model {self.name!r}: a specialist needs at least one domain")
        return self


class RMTrainingSpec(_Strict):
    """TRL RewardTrainer settings shared by the reward models.

    Each reward model starts from the SFT policy trained `backbone_steps` more steps on every domain
    alike: a stronger model of the same family, as reward models are usually built on a stronger base
    than the policy they judge (0: start from the policy itself). A specialist sees every example of its
    own domains and `off_domain_fraction` of the others (with coin-flip labels): enough to keep it near
    chance there without diluting what it learns.
    """

    steps: int = Field(300, gt=0)
    backbone_steps: int = Field(300, ge=0)
    batch_size: int = Field(32, gt=0)
    learning_rate: float = Field(1e-3, gt=0)
    pairs_per_example: int = Field(2, gt=0)
    off_domain_fraction: float = Field(0.25, ge=0, le=1)
    center_rewards_coefficient: float = Field(0.01, ge=0)


class JudgeSpec(_Strict):
    """A judge LM: the reward models' backbone fine-tuned `steps` SFT steps on the gold answers of `domains`.

    It is read through the `likelihood` backend (mean token log-likelihood of a completion).
    """

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    domains: tuple[str, ...] = Field(min_length=1)
    steps: int = Field(300, gt=0)
    batch_size: int = Field(32, gt=0)  # the policy's learning rate and schedule (SFTSpec) apply


# math and knowledge cover two domains each and need 900 steps to reach 85% held-out pairwise accuracy on
# both (300 steps: 81% on arithmetic, 84.5% on yes_no); the policy and the judges do not depend on it.
DEFAULT_REWARD_MODELS = (
    RewardModelSpec(name="math", domains=("arithmetic", "strings"), steps=900),
    RewardModelSpec(name="commonsense", domains=("yes_no",)),
    RewardModelSpec(name="knowledge", domains=("knowledge", "yes_no"), steps=900),
    RewardModelSpec(name="verbose", kind="length", steps=100),
)

# The judges mirror the specialists' domains: the same routing problem, with judges that order the policy's
# own samples (the classifiers order a gold answer against a synthetic mistake much better than that).
DEFAULT_JUDGES = (
    JudgeSpec(name="math", domains=("arithmetic", "strings")),
    JudgeSpec(name="commonsense", domains=("yes_no",)),
    JudgeSpec(name="knowledge", domains=("knowledge", "yes_no")),
)


class AssetRecipe(_Strict):
    """Everything the embedded default is built from; `digest()` keys the cache."""

    seed: int = 0
    suite: SuiteSpec = SuiteSpec()
    model: ModelSpec = ModelSpec()
    sft: SFTSpec = SFTSpec()
    reward_models: tuple[RewardModelSpec, ...] = DEFAULT_REWARD_MODELS
    rm_training: RMTrainingSpec = RMTrainingSpec()
    judges: tuple[JudgeSpec, ...] = DEFAULT_JUDGES

    @model_validator(mode="after")
    def _consistent(self) -> AssetRecipe:
        unknown = sorted(set(self.suite.domains) - set(DOMAINS))
        if unknown:
            raise ValueError(f"unknown suite domain(s) {unknown}; choose from {list(DOMAINS)}")
        names = [rm.name for rm in self.reward_models]
        if len(set(names)) != len(names):
            raise ValueError(f"reward model names must be unique, got {names}")
        judges = [j.name for j in self.judges]
        if len(set(judges)) != len(judges):
            raise ValueError(f"judge names must be unique, got {judges}")
        for rm in (*self.reward_models, *self.judges):
            missing = sorted(set(rm.domains) - set(self.suite.domains))
            if missing:
                raise ValueError(f"reward model {rm.name!r} names domain(s) {missing} that the suite does not have")
        return self

    def digest(self) -> str:
        """A short stable hash of the recipe and the builder version."""
        blob = json.dumps({"builder": BUILDER_VERSION, "recipe": self.model_dump(mode="json")}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def quick_recipe(seed: int = 0) -> AssetRecipe:
    """A reduced world (two domains, smaller models, fewer steps) for tests: builds in about a minute."""
    return AssetRecipe(
        seed=seed,
        suite=SuiteSpec(seed=seed, train=600, validation=100, test=100, n_people=24, domains=("yes_no", "strings")),
        model=ModelSpec(hidden_size=64, num_layers=2, num_heads=2),
        sft=SFTSpec(max_steps=800, eval_every=50, band=(0.2, 0.7)),
        reward_models=(RewardModelSpec(name="reasoning", domains=("yes_no",)),
                       RewardModelSpec(name="strings", domains=("strings",)),
                       RewardModelSpec(name="verbose", kind="length", steps=60)),
        rm_training=RMTrainingSpec(steps=200, backbone_steps=0),
        judges=(JudgeSpec(name="reasoning", domains=("yes_no",), steps=150),
                JudgeSpec(name="strings", domains=("strings",), steps=150)),
    )
