"""The recipe of the embedded default: every choice that shapes the built models, hashed into the cache key."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from laser.tasks.synthetic import DEFAULT_DOMAINS, DOMAINS, make_suite
from laser.validation import problems, read_mapping

# Bump when the builder's code changes what a recipe produces, so that old caches are not reused.
BUILDER_VERSION = 3


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SuiteSpec(_Strict):
    """Which synthetic task suite the world is built on (domains of `laser.tasks`, per-domain split sizes).

    `seed`: the suite's own seed; None (the default) means the recipe's seed, so that `--seed` changes
    the prompts as well as the models.
    """

    seed: int | None = None
    train: int = Field(1500, gt=0)
    validation: int = Field(200, gt=0)
    test: int = Field(200, gt=0)
    n_people: int = Field(48, ge=4)
    domains: tuple[str, ...] = Field(DEFAULT_DOMAINS, min_length=1)
    # "own": each domain its own prompt wording; "shared": the word operations in one template, told apart by one
    # word of the prompt (see `laser.tasks.synthetic.make_suite`).
    wording: Literal["own", "shared"] = "own"


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

    max_steps: int = Field(3000, gt=0)
    batch_size: int = Field(64, gt=0)
    learning_rate: float = Field(2e-3, gt=0)
    # The share of the draws of an example whose SFT target is the domain's typical mistake instead of the
    # gold answer (`laser.tasks.mistakes.typical_mistake`, drawn anew at every visit): the policy learns
    # to write the mistake that often on every prompt, so that it is right about half the time whatever
    # the step count and its samples hold both a right and a wrong answer (a mistake fixed per example instead
    # made it sure of one answer per prompt, right or wrong: docs/worlds.md).
    mistake_rate: float = Field(0.5, ge=0, lt=1)
    warmup_steps: int = Field(50, ge=0)
    eval_every: int = Field(50, gt=0)
    # Inside the targets' band (25-55%), so that the noise of a 200-example validation split and the
    # jump between two checkpoints still leave the kept policy within the targets.
    band: tuple[float, float] = (0.32, 0.52)
    # Mild re-weighting: domains that differ only by their instruction word (reverse vs rotate) are
    # confused by a model that sees one of them much more often, and a strong hold / boost made the
    # held domain collapse and the boosted one overshoot, checkpoint after checkpoint.
    hold_weight: float = Field(0.5, ge=0)
    boost_weight: float = Field(2.0, gt=0)

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

    Each reward model starts from the SFT policy itself, or with `backbone_steps` from the policy trained
    that many more steps on every domain alike: a stronger model of the same family, as reward models
    are often built on a stronger base than the policy they judge (the specialists learn faster from it;
    the default world's length-hacked classifier and judges do not need it, and it cost 80 s of build).
    A specialist sees every example of its own domains and `off_domain_fraction` of the others (with
    coin-flip labels): enough to keep it near chance there without diluting what it learns.
    """

    steps: int = Field(300, gt=0)
    backbone_steps: int = Field(0, ge=0)
    batch_size: int = Field(32, gt=0)
    learning_rate: float = Field(1e-3, gt=0)
    pairs_per_example: int = Field(2, gt=0)
    off_domain_fraction: float = Field(0.25, ge=0, le=1)
    center_rewards_coefficient: float = Field(0.01, ge=0)


class JudgeSpec(_Strict):
    """A judge LM: a causal LM fine-tuned on the gold answers of `domains` (and on the other domains'
    prompts answered by its own rule, `off_home`), read through the `likelihood` backend (mean token
    log-likelihood of a completion).

    It starts from `init` (`backbone`: the stronger base the reward models share; `policy`: the SFT
    policy) and trains until its pairwise accuracy on the policy's own validation samples reaches
    `target` on every home domain and falls to `off_margin` below the recipe's off-home limit elsewhere
    (checked every `eval_every` steps), at most `steps` steps; the checkpoint kept is the one closest
    to both. The margin covers the noise of the validation pairs (about 100 a domain: 5 points).
    Steering to a measured target rather than to a step count is what keeps a judge's quality when
    another CPU's numerics change the training path.
    """

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    domains: tuple[str, ...] = Field(min_length=1)
    steps: int = Field(600, gt=0)
    batch_size: int = Field(32, gt=0)  # the policy's learning rate and schedule (SFTSpec) apply
    init: Literal["backbone", "policy"] = "policy"
    # The share of its training examples drawn from the world's other domains, answered by the judge's own
    # rule (`laser.tasks.mistakes.misapplied`: a mirror asked to rotate reverses). Home examples alone
    # leave what the base knew of the other domains in place (a judge 60-90% right off its home).
    off_home: float = Field(0.4, ge=0, lt=1)
    # What those off-home examples answer: `own_rule` (the judge's rule misapplied) or `typical_mistake` (the
    # other domain's own systematic mistake, `laser.tasks.mistakes.typical_mistake`: the wrong answer the
    # policy itself makes there). A rule whose answers do not look like another domain's (a digit rule on a
    # word) leaves the judge near the base there, often right enough for DPO to learn from; a judge taught
    # the other domain's typical mistake prefers the policy's own errors there, as a confidently wrong RM does.
    off_answer: Literal["own_rule", "typical_mistake"] = "own_rule"
    target: float = Field(0.9, gt=0, le=1)
    # The home accuracy a judge is kept at or below: a noisy judge, right only most of the time at home.
    ceiling: float = Field(1.0, gt=0, le=1)
    off_margin: float = Field(0.05, ge=0, lt=1)
    eval_every: int = Field(50, gt=0)

    @model_validator(mode="after")
    def _ceiling_above_target(self) -> JudgeSpec:
        if self.ceiling < self.target:
            raise ValueError(f"judge {self.name!r}: ceiling ({self.ceiling}) must be at least target ({self.target})")
        return self


class TargetsSpec(_Strict):
    """What the built world must show, checked at the end of the build (`report["targets"]`).

    The policy's greedy test accuracy must lie in `accuracy_band` on every domain and its pass@k at
    T=0.8 reach `pass_at_k`; every judge must reach `home_accuracy` on its own domains and stay at or
    below `off_accuracy` elsewhere (pairwise, on the policy's own test samples); with `misleading`, at
    least one judge must be below 50% somewhere off its home (confidently wrong, as real RMs are
    outside their training distribution).
    """

    accuracy_band: tuple[float, float] = (0.25, 0.55)
    pass_at_k: float = Field(0.7, ge=0, le=1)
    k: int = Field(8, gt=1)
    home_accuracy: float = Field(0.85, ge=0, le=1)
    off_accuracy: float = Field(0.6, ge=0, le=1)
    misleading: bool = True


# The default world has no specialist classifiers (`embedded_rms: classifiers` needs a recipe that lists
# some): only the length-hacked one, which misleads on every domain.
DEFAULT_REWARD_MODELS = (RewardModelSpec(name="verbose", kind="length", steps=100),)

# One judge per default domain (`laser.tasks.synthetic.DEFAULT_DOMAINS`).
DEFAULT_JUDGES = (
    JudgeSpec(name="mirror", domains=("reverse",)),
    JudgeSpec(name="cipher", domains=("caesar",)),
    JudgeSpec(name="rotator", domains=("rotate",)),
    JudgeSpec(name="doubler", domains=("double",)),
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
    targets: TargetsSpec = TargetsSpec()

    @property
    def suite_seed(self) -> int:
        """The seed of the task suite: `suite.seed`, else the recipe's."""
        return self.seed if self.suite.seed is None else self.suite.seed

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

    def make_suite(self):
        """The task suite of this recipe (generated from its seed)."""
        s = self.suite
        return make_suite(seed=self.suite_seed, train=s.train, validation=s.validation, test=s.test,
                          domains=s.domains, n_people=s.n_people, wording=s.wording)

    def digest(self) -> str:
        """A short stable hash of the recipe and the builder version."""
        recipe = self.model_dump(mode="json")
        for judge in recipe["judges"]:  # keys added after builds were cached: at their default, the digest stays
            if judge["off_answer"] == "own_rule":
                del judge["off_answer"]
            if judge["ceiling"] == 1.0:
                del judge["ceiling"]
        if recipe["suite"]["wording"] == "own":
            del recipe["suite"]["wording"]
        blob = json.dumps({"builder": BUILDER_VERSION, "recipe": recipe}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def quick_recipe(seed: int = 0) -> AssetRecipe:
    """A reduced world (two domains, smaller models, fewer steps) for tests: builds in about two minutes."""
    return AssetRecipe(
        seed=seed,
        suite=SuiteSpec(seed=seed, train=600, validation=100, test=100, n_people=24, domains=("yes_no", "strings")),
        model=ModelSpec(hidden_size=64, num_layers=2, num_heads=2),
        # yes_no (two answers) swings widely between checkpoints whenever it is trained, so it is not trained at
        # all while at or above the band (hold 0) and training stops at the first checkpoint inside it (a milder
        # hold missed the targets: docs/worlds.md).
        sft=SFTSpec(max_steps=1200, eval_every=50, band=(0.3, 0.6), learning_rate=2e-3, hold_weight=0.0,
                    boost_weight=3.0, mistake_rate=0.0),
        reward_models=(RewardModelSpec(name="reasoning", domains=("yes_no",)),
                       RewardModelSpec(name="strings", domains=("strings",)),
                       RewardModelSpec(name="verbose", kind="length", steps=60)),
        rm_training=RMTrainingSpec(steps=200, backbone_steps=0),
        # One check, at the end: a 150-step judge has no room to be steered.
        judges=(JudgeSpec(name="reasoning", domains=("yes_no",), steps=150, eval_every=150),
                JudgeSpec(name="strings", domains=("strings",), steps=150, eval_every=150)),
        targets=TargetsSpec(accuracy_band=(0.2, 0.7), home_accuracy=0.75, off_accuracy=0.7, misleading=False),
    )


class RecipeError(ValueError):
    """A world recipe file that cannot be used; the message names the key and what to change."""


def load_recipe(path: str | Path, seed: int | None = None) -> AssetRecipe:
    """An `AssetRecipe` from a YAML file (every key optional; unknown keys and bad values are errors that
    name the key); `seed` replaces the file's seed."""
    tree = read_mapping(path, RecipeError, f"world recipe {path} does not exist (see configs/worlds/ for examples)")
    if seed is not None:
        tree["seed"] = seed
    try:
        return AssetRecipe.model_validate(tree)
    except ValidationError as e:
        lines = problems(e, "configs/worlds/default.yaml")
        raise RecipeError(f"{path} has {len(lines)} problem(s):\n  " + "\n  ".join(lines)) from None


def dump_recipe(recipe: AssetRecipe) -> str:
    """The recipe as YAML that `load_recipe` reads back to an equal recipe."""
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)
