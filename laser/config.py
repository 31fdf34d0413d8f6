"""Run configuration: one pydantic model per section, YAML in, clear errors out.

Every section model lives here, at the bottom layer (pydantic and yaml only: parsing a config imports no
torch); the parts that use a section import it from here.

`load_config(path, overrides=["round.n=16", "strategy=random"])` reads a YAML file, applies dotted
`key=value` overrides (values parsed as YAML scalars), and validates everything: an unknown key or a
bad value is a `ConfigError` that names the key and says what is allowed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from laser.validation import problems, read_mapping


class ConfigError(ValueError):
    """A run config that cannot be used; the message names the key and what to change."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


# Where a model lives: `auto` is this process's GPU when CUDA is available (cuda:LOCAL_RANK under torchrun or
# accelerate), else the CPU; `cuda` is this process's GPU; `cuda:N` one GPU by number (single-process runs only).
DEVICE_PATTERN = r"^(auto|cpu|cuda|cuda:[0-9]+)$"
# auto: bfloat16 on a GPU, float32 on CPU.
DType = Literal["auto", "float32", "bfloat16", "float16"]


class EngineConfig(_Section):
    """How candidates are generated. `engine: auto` is vLLM when it starts, HF otherwise (with the reason logged)."""

    # auto: vLLM, or transformers where vLLM cannot be imported or does not support this machine (the reason
    # logged); a vLLM that fails at run time (out of memory included) stops the run with what to change.
    engine: Literal["auto", "vllm", "hf"] = "auto"
    dtype: DType = "auto"
    max_model_len: int | None = Field(None, gt=8)  # default: the model's own context window
    batch_size: int | None = Field(None, gt=0)  # prompts per generate call (default: 1024 vLLM, 64 HF)
    chat_template: Literal["auto", "never"] = "auto"  # auto: applied when the tokenizer has one
    seed: int = 0
    kv_cache_mb: int = Field(64, gt=0)  # vLLM on CPU: RAM reserved for the KV cache
    gpu_memory_utilization: float = Field(0.5, gt=0, le=1)  # vLLM on GPU (the trainer shares the device)
    tensor_parallel_size: int = Field(1, gt=0)
    enable_prefix_caching: bool = True
    trust_remote_code: bool = False
    # Sleep mode around the DPO update: 1 moves the engine's weights to host memory and frees its KV cache, 2 frees
    # both (the updated weights are pushed in place when it wakes, which 1 does too); 0 keeps it resident. vLLM
    # sleeps on CUDA only; the transformers engine sleeps anywhere (1: to host memory, 2: weights dropped).
    sleep: int = Field(0, ge=0, le=2)
    # How the trained weights reach a vLLM engine: `tensors` hands them over in this process (no copy on disk),
    # `files` writes them (safetensors, in a temporary directory) for vLLM to read, which works across processes;
    # auto is `files` for a tensor-parallel engine (its workers are other processes), `tensors` otherwise.
    weight_sync: Literal["auto", "tensors", "files"] = "auto"
    # More keyword arguments of `vllm.LLM` (max_num_seqs, max_num_batched_tokens, quantization, ...), checked
    # against its signature when the engine starts; an unknown key is an error naming it.
    extra: dict[str, Any] = {}

    @field_validator("extra")
    @classmethod
    def _not_a_field(cls, v: dict[str, Any]) -> dict[str, Any]:
        own = {"dtype": "dtype", "max_model_len": "max_model_len", "seed": "seed",
               "gpu_memory_utilization": "gpu_memory_utilization", "tensor_parallel_size": "tensor_parallel_size",
               "enable_prefix_caching": "enable_prefix_caching", "trust_remote_code": "trust_remote_code",
               "enable_sleep_mode": "sleep", "kv_cache_memory_bytes": "kv_cache_mb", "model": "models.policy"}
        clash = sorted(k for k in v if k in own)
        if clash:
            raise ValueError("set " + ", ".join(f"{k} with engine.{own[k]}" if own[k] != "models.policy" else
                                                f"{k} with models.policy" for k in clash) + ", not in engine.extra")
        return v


class ContextConfig(_Section):
    """How prompts become bandit contexts (see `ContextEmbedder`)."""

    # mean: separates the embedded world's domains far better than the paper's last-token state, whose prompts all
    # end in the same " A:" (docs/router.md).
    pooling: Literal["last", "mean"] = "mean"
    layer: int = -1
    dim: int | None = Field(None, gt=0)  # random projection to this many dimensions
    normalize: bool = True
    frozen: bool = False  # embed with a frozen copy of the initial policy instead of the live one
    batch_size: int = Field(64, gt=0)


class LoraSettings(_Section):
    """LoRA adapters through peft (the paper: r=16, alpha=32 on the q/v projections)."""

    r: int = Field(16, gt=0)
    alpha: int = Field(32, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] = ["q_proj", "v_proj"]


class DPOSettings(_Section):
    """The DPO step's hyperparameters (TRL `DPOConfig` names where they exist)."""

    beta: float = Field(0.1, gt=0)
    learning_rate: float = Field(1e-4, gt=0)  # for the tiny embedded policy; ~5e-7 full / 5e-6 LoRA at 8B
    loss_type: list[str] = ["sigmoid", "sft"]
    loss_weights: list[float] | None = [1.0, 1.0]
    batch_size: int = Field(8, gt=0)  # pairs per optimizer step, over all processes together
    # Pairs each process runs through the model at once (its share of batch_size, accumulated in steps of this
    # many); None: the whole share at once. Lower it when the update's activations do not fit.
    micro_batch_size: int | None = Field(None, gt=0)
    epochs: int = Field(1, gt=0)  # passes over each update's pairs
    max_grad_norm: float = Field(1.0, gt=0)
    max_length: int | None = Field(None, gt=8)
    # None: full fine-tuning, with a frozen copy of the policy as each iteration's reference. With LoRA the
    # reference is the same base weights under a frozen copy of the adapters taken when the iteration starts
    # (no model copy; in the first iteration the base with the adapters disabled).
    lora: LoraSettings | None = None
    gradient_checkpointing: bool = False  # recompute activations in the backward pass: less memory, more compute
    # adamw_8bit: bitsandbytes' 8-bit AdamW (needs bitsandbytes and a GPU): the moments take 2 bytes a parameter
    # instead of 8.
    optim: Literal["adamw_torch", "adamw_8bit"] = "adamw_torch"

    @model_validator(mode="after")
    def _weights_match(self) -> DPOSettings:
        if self.loss_weights is not None and len(self.loss_weights) != len(self.loss_type):
            raise ValueError(f"loss_weights has {len(self.loss_weights)} values for {len(self.loss_type)} "
                             f"loss types {self.loss_type}")
        return self


class RoundSettings(_Section):
    """What one round does (the run config's `round` section)."""

    prompts_per_round: int = Field(32, gt=0)
    n: int = Field(8, gt=1)
    temperature: float = Field(0.8, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int = Field(16, gt=0)
    pair_rule: Literal["max_min", "top_vs_rest", "max_random"] = "max_min"
    min_margin: float = Field(0.0, ge=0)
    # A pair only when its chosen candidate's (normalized) score is at least this: 0 is the RM's running mean, so
    # 0.5 leaves out prompts whose best candidate the RM itself scores low, most of them wrong-over-wrong pairs
    # (null: every prompt with a pair). Measured under score noise in docs/results-archive.md.
    min_chosen: float | None = 0.5
    num_pairs: int = Field(1, gt=0)
    # rerank_gain: the router's reward is measured on `rerank_prompts` validation prompts per round, with no
    # extra update; validation_gain / train_loss: one DPO update per RM group, each group rewarded by it.
    # gradient_gain: one DPO update a round; each group's validation gain estimated to first order beforehand,
    # from the inner product of its DPO loss gradient with the validation metric's gradient.
    feedback: Literal["rerank_gain", "gradient_gain", "validation_gain", "train_loss"] = "rerank_gain"
    # Validation prompts a round for the router's reward (12 against 24: docs/router.md).
    rerank_prompts: int = Field(12, gt=0)
    # Samples per probe (None: `n`, in the training prompts' generation call). Fewer make the probes cheaper
    # and the router's reward coarser (docs/router.md).
    rerank_n: int | None = Field(None, gt=1)
    # After the warm-up, of an informative probe's samples `rerank_draws` right and as many wrong ones, drawn at
    # random, are all the router's pick scores: how it orders them estimates without bias how it orders all of
    # them, at up to 2 x rerank_draws RM passes a probe instead of one per distinct sample (None: every sample).
    # Every-RM rounds (the warm-up, relearning) and the baselines that read every RM score every sample; re-tests
    # follow `retest_draws`. Off by default: the noisier reward weakens the change detector (docs/router.md).
    rerank_draws: int | None = Field(None, gt=0)
    # After the warm-up, an informative probe where the router is sure of its pick (the picked RM's lower
    # confidence bound above every other RM's upper bound) is not scored: it would teach the router nothing
    # it could act on, at an RM pass. False scores every informative probe.
    rerank_skip_settled: bool = True
    # A share of the probes skipped as settled (or good enough) that are sampled and scored anyway, drawn at random
    # each round: without them the router never sees again the RMs it is sure of, and would not notice one that got
    # worse (see `bandit.drift_threshold`). 0: never re-tested.
    retest: float = Field(0.25, ge=0, le=1)
    # Of a re-tested probe, `retest_draws` right and as many wrong samples, drawn as `rerank_draws` draws them, are
    # all the pick scores (None: every sample): a re-test looks for a sure pick that got clearly worse, which one
    # (right, wrong) pair shows about as soon, at 2 RM passes a probe (docs/router.md).
    retest_draws: int | None = Field(1, gt=0)
    # Also skip a probe (neither sampled nor scored) where the picked RM's lower confidence bound is at least
    # this rerank gain (in [-1, 1]; 1 = orders every right/wrong pair of samples rightly): another RM could gain
    # at most 1 minus it there. None skips only settled probes (0.8 against None: docs/router.md).
    rerank_good_enough: float | None = Field(0.8, ge=-1, le=1)
    # RMs that score each sampled probe after the warm-up: the router's pick, then the others the router has not
    # ruled out there (upper confidence bound at or above the pick's lower bound), highest bound first. Each more
    # teaches the router about an alternative from the same label, at one more RM pass over the probe's samples
    # (when judges are close, more RMs per probe route better at more RM passes: docs/router.md).
    rerank_rms: int = Field(1, ge=1)
    # The first rounds' informative probes are scored by every RM and the router learns from all of them
    # (full information), so that it has seen each RM on each kind of prompt before training relies on it.
    rerank_warmup: int = Field(1, ge=0)
    # Probes in each warm-up round (None: `rerank_prompts`). The warm-up's probes are all the router knows when it
    # routes round 0's training prompts: one warm-up round of 24 spends the RM passes of two rounds of 12 before
    # the first update instead of after it (measured against two rounds of 12: docs/router.md).
    rerank_warmup_prompts: int | None = Field(24, gt=0)
    # After the router's change detector forgets an RM (`bandit.drift_threshold`), this many rounds draw their
    # probes near where the RM's rewards changed and every RM scores each informative one (as in the warm-up): the
    # router learns where the forgotten RM's instances should go now from every RM at once. 0: never.
    relearn_rounds: int = Field(1, ge=0)
    feedback_examples: int = Field(128, gt=0)
    # Credit each instance with the gain on its k nearest validation examples; None: the whole mini-batch's
    # gain (the paper's), which cannot tell which domain an update helped.
    feedback_neighbors: int | None = Field(16, gt=0)
    rounds_per_iteration: int = Field(4, gt=0)  # the DPO reference model is refreshed every this many rounds
    # validation_gain measures the gold answers' mean token log-likelihood (loglik), their log-likelihood
    # minus that of a plausible wrong answer (margin), or greedy accuracy (accuracy: one generation of the
    # feedback batch before and after each group's update).
    validation_metric: Literal["loglik", "margin", "accuracy"] = "loglik"
    # Gaussian noise of this standard deviation added to every RM score, for training and probes alike (the
    # paper's robustness test: 0.3); seeded per round, so that a resumed run draws the same noise.
    score_noise: float = Field(0.0, ge=0)
    # Where the noise goes: `normalized` (after the run's normalizer: sigma in units of each RM's spread, the
    # same test whatever the RMs' scales) or `raw` (on the score the RM returns, as the paper adds it; what
    # sigma means then depends on each RM's scale).
    score_noise_on: Literal["normalized", "raw"] = "normalized"

    @model_validator(mode="after")
    def _gradient_needs_a_smooth_metric(self) -> RoundSettings:
        if self.feedback == "gradient_gain" and self.validation_metric == "accuracy":
            raise ValueError("feedback: gradient_gain needs a differentiable validation_metric (loglik or margin); "
                             "greedy accuracy has no gradient")
        return self


class RewardModelConfig(_Section):
    """One reward model of the run: a backend and where its weights are (or, `kind: remote`, its server)."""

    kind: Literal["hf", "implicit_dpo", "likelihood", "remote"] = "hf"
    path: str | None = None  # hf, implicit_dpo, likelihood: a local model directory or hub id
    ref_path: str | None = None  # implicit_dpo: the model it was DPO-trained from
    batch_size: int = Field(64, gt=0)
    # In-process kinds: where the weights live (None: the policy's device, models.device), their dtype (auto:
    # bfloat16 on a GPU, float32 on CPU), or a transformers device_map instead of a device (e.g. auto: spread
    # over every visible GPU).
    device: str | None = Field(None, pattern=DEVICE_PATTERN)
    dtype: DType = "auto"
    device_map: str | dict[str, Any] | None = None
    # kind: remote. `protocol: vllm`: a vLLM pooling server of a sequence classifier (`url` is its base,
    # e.g. http://host:8000; `laser serve-rms` starts one per RM); `protocol: openrlhf`: OpenRLHF's remote RM
    # convention (`url` is the endpoint that takes {query, prompts, labels} and answers {rewards}).
    url: str | None = None
    protocol: Literal["vllm", "openrlhf"] = "vllm"
    model: str | None = None  # vllm: the served model's name (default: the server's only model)
    # vllm: the RM's tokenizer (directory or hub id), to build the exact texts the in-process `hf` backend
    # scores (chat template or prompt + completion + EOS); without it the server gets prompt + completion.
    tokenizer: str | None = None
    head: int = Field(0, ge=0)  # vllm: which output of a multi-objective head
    timeout: float = Field(60.0, gt=0)  # seconds per request
    retries: int = Field(3, ge=0)  # on connection errors, timeouts and 5xx, with exponential backoff
    backoff: float = Field(0.5, ge=0)  # seconds before the first retry (doubled after each)

    @model_validator(mode="after")
    def _where(self) -> RewardModelConfig:
        if self.kind == "remote":
            placed = [k for k in ("device", "device_map") if getattr(self, k) is not None] + \
                (["dtype"] if self.dtype != "auto" else [])
            if placed:
                raise ValueError(f"{', '.join(placed)}: a `kind: remote` reward model runs on its server; "
                                 "set where it runs when you start the server")
            if not self.url:
                raise ValueError("a `kind: remote` reward model needs `url` (its server)")
            if not self.url.startswith(("http://", "https://")):
                raise ValueError(f"url {self.url!r} must start with http:// or https://")
        elif not self.path:
            raise ValueError(f"a `kind: {self.kind}` reward model needs `path` (a model directory or hub id)")
        if self.device is not None and self.device_map is not None:
            raise ValueError("set device or device_map, not both (device_map spreads the model itself)")
        if self.kind == "implicit_dpo" and not self.ref_path:
            raise ValueError("an implicit_dpo reward model needs `ref_path` (the model it was DPO-trained from)")
        return self


class ModelsConfig(_Section):
    """The policy and the reward models: `embedded` (built by `laser build-assets`) or your own."""

    # `default`: the embedded world; `quick`: the reduced two-domain one (tests, trying the commands). Either is
    # one world for every seed: a run's seed varies its training, not its models.
    embedded: Literal["default", "quick"] | None = "default"
    # A world recipe (YAML of `laser.assets.AssetRecipe`, e.g. configs/worlds/alt.yaml) to build and use
    # instead of the `embedded` one.
    embedded_recipe: str | None = None
    # Which embedded reward models: judge LMs (likelihood backend) + the length-hacked classifier, or the
    # sequence classifiers alone.
    embedded_rms: Literal["judges", "classifiers"] = "judges"
    policy: str | None = None  # a local directory or hub id; default: the embedded policy
    reward_models: dict[str, RewardModelConfig] | None = None  # default: the embedded reward models
    # Where the policy is trained and embeds the contexts (and, unless they say otherwise, where the in-process
    # RMs live), and its weights' dtype.
    device: str = Field("auto", pattern=DEVICE_PATTERN)
    dtype: DType = "auto"
    # Several processes (torchrun, accelerate): `replicate` loads every in-process RM in every process, each
    # running its share of every RM's forward passes; `shard` loads RM number i in process i mod N only, which
    # runs all of that RM's passes (N times less RM memory per process, for RMs too large to copy N times).
    rm_placement: Literal["replicate", "shard"] = "replicate"
    # A drift scenario for tests and benchmarks: {round, rm, by} (see RMSwap); null in real runs.
    rm_swap: RMSwap | None = None


class RMSwap(_Section):
    """From round `round` on, reward model `rm` answers with `by`'s scores under its own name (a drift test: a
    remote RM server redeployed with other weights). The router is not told."""

    round: int = Field(ge=0)
    rm: str
    by: str


class TasksConfig(_Section):
    """Prompts with checkable answers: the embedded suite, or JSONL files (`prompt`, `answer`, `domain`)."""

    source: Literal["embedded", "jsonl"] = "embedded"
    train: str | None = None
    validation: str | None = None
    test: str | None = None
    answer_format: str = "exact"
    skip_bad_rows: bool = False
    test_per_domain: int | None = Field(None, gt=0)  # evaluate on at most this many test examples per domain
    # {domain: data source}: the coarser label a per-source rule sees (verl's `data_source`), e.g. several
    # sub-tasks of one dataset; `static:by_domain` routes by it. A domain not named is its own source.
    data_sources: dict[str, str] = {}


class EvalSettings(_Section):
    """How test accuracy is measured (the run config's `eval` section)."""

    # Tokens per answer; None: the round's `max_new_tokens` (what the policy is trained to answer in).
    # A long-answer task (GSM8K reasoning) needs its full length here, or it is judged on a cut-off text.
    max_new_tokens: int | None = Field(None, gt=0)
    max_new_tokens_by_domain: dict[str, int] = {}  # per-domain lengths, e.g. {gsm8k: 512, mmlu: 8}
    temperature: float = Field(0.0, ge=0)  # 0: greedy (the default); above: one seeded sample per prompt
    # The answer checker for every test example (an answer format: integer, yes_no, choice, exact, gsm8k);
    # None: each example's own `answer_format`.
    checker: str | None = None

    @field_validator("checker")
    @classmethod
    def _known_checker(cls, v: str | None) -> str | None:
        from laser.tasks.checkers import CHECKERS

        if v is not None and v not in CHECKERS:
            raise ValueError(f"unknown checker {v!r}; choose one of {sorted(CHECKERS)} or leave it unset")
        return v

    @field_validator("max_new_tokens_by_domain")
    @classmethod
    def _positive(cls, v: dict[str, int]) -> dict[str, int]:
        bad = {d: n for d, n in v.items() if n < 1}
        if bad:
            raise ValueError(f"max_new_tokens must be >= 1, got {bad}")
        return v

    def tokens_for(self, domain: str, round_max_new_tokens: int) -> int:
        """The answer length for a test example of `domain`."""
        return self.max_new_tokens_by_domain.get(domain, self.max_new_tokens or round_max_new_tokens)


class BanditConfig(_Section):
    """The router of `strategy: laser`: a `bandits` policy and its parameters."""

    policy: str = "kernel_ucb"
    params: dict[str, Any] = {"alpha": 1.0}
    selection: Literal["instance", "batch"] = "instance"
    # Contexts minus their running mean, renormalized, plus a constant feature (see `BanditStrategy`).
    center: bool = True
    # Change detection (`bandits.drift`): an arm whose rewards fall below its lower confidence bound by more than
    # `drift_threshold` on average over a block of `drift_window` observations is forgotten and learned again (an RM
    # that got worse). None: off.
    drift_threshold: float | None = Field(0.5, gt=0)
    drift_window: int = Field(4, gt=0)


BON_FEEDBACK = ("nll", "gold", "none")


class BonSettings(_Section):
    """How `laser bon` samples and routes (its flags are these fields)."""

    n: int = Field(16, ge=1)  # responses sampled per prompt
    temperature: float = Field(0.8, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int = Field(64, gt=0)
    batch_size: int = Field(32, gt=0)  # prompts per routing step; an online router learns after each
    seed: int = 0
    feedback: Literal["nll", "gold", "none"] = "none"
    keep_candidates: bool = False  # write every candidate with its score, not only the chosen one


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
    eval: EvalSettings = EvalSettings()
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

    @model_validator(mode="after")
    def _engine_fits(self) -> RunConfig:
        if self.engine.engine == "hf" and self.engine.tensor_parallel_size > 1:
            raise ValueError("engine.tensor_parallel_size applies to vLLM: set engine.engine to vllm or auto, or "
                             "tensor_parallel_size to 1")
        return self

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name


def launch_problems(config: RunConfig, processes: int, gpus: int) -> list[str]:
    """Why `config` cannot run in a launch of `processes` processes (torchrun / accelerate; 1 alone) on a machine
    with `gpus` visible GPUs: one line per setting to change, naming it; empty when it can."""
    out = []
    tp = config.engine.tensor_parallel_size
    if tp > 1 and processes > 1:
        out.append(f"engine.tensor_parallel_size is {tp} under {processes} processes: each process trains on its own "
                   "GPU and runs its own engine there (vLLM's external_launcher), so an engine cannot span GPUs. Set "
                   "engine.tensor_parallel_size: 1 for data parallel, or launch one process for a tensor-parallel "
                   "engine")
    if tp > 1 and gpus < tp:
        out.append(f"engine.tensor_parallel_size is {tp} but {gpus} GPU(s) are visible: tensor parallel needs a GPU "
                   "per shard")
    if processes > 1 and gpus and gpus < processes:
        out.append(f"{processes} processes share {gpus} GPU(s): launch one process per GPU (--nproc_per_node {gpus})")
    devices = {"models.device": config.models.device}
    for name, rm in (config.models.reward_models or {}).items():
        if rm.device is not None:
            devices[f"models.reward_models.{name}.device"] = rm.device
        if rm.device_map is not None and processes > 1:
            out.append(f"models.reward_models.{name}.device_map under {processes} processes: each process would "
                       "spread its copy over every GPU; set its device (each process's own GPU) with "
                       "models.rm_placement: shard, or serve it apart (kind: remote)")
    for key, device in devices.items():
        if device.startswith("cuda") and not gpus:
            out.append(f"{key} is {device} but no GPU is visible: set it to auto or cpu")
        elif device.startswith("cuda:") and processes > 1:
            out.append(f"{key} is {device} under {processes} processes: every process would use that one GPU; set "
                       "cuda (each process's own GPU) or auto")
        elif device.startswith("cuda:") and int(device.split(":")[1]) >= gpus > 0:
            out.append(f"{key} is {device} but only {gpus} GPU(s) are visible (cuda:0..cuda:{gpus - 1})")
    if processes > 1 and config.dpo.batch_size % processes:
        out.append(f"dpo.batch_size ({config.dpo.batch_size}) must be a multiple of the number of processes "
                   f"({processes}): it is the global batch, split evenly across them")
    share = config.dpo.batch_size // processes
    micro = config.dpo.micro_batch_size
    if micro and share and share % micro:
        out.append(f"dpo.micro_batch_size ({micro}) must divide each process's share of dpo.batch_size ({share})")
    if config.dpo.optim == "adamw_8bit" and not gpus:
        out.append("dpo.optim: adamw_8bit needs a GPU (bitsandbytes); use adamw_torch on CPU")
    return out


def check_launch(config: RunConfig, processes: int, gpus: int) -> None:
    """Raise ConfigError (every problem, each naming its setting) when `config` cannot run in this launch."""
    lines = launch_problems(config, processes, gpus)
    if lines:
        raise ConfigError(f"this config cannot run in {processes} process(es) with {gpus} GPU(s):\n  "
                          + "\n  ".join(lines))


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
    try:
        return RunConfig.model_validate(tree)
    except ValidationError as e:
        lines = problems(e, "configs/demo.yaml")
        raise ConfigError(f"{source} has {len(lines)} problem(s):\n  " + "\n  ".join(lines)) from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML run config (or the defaults when `path` is None), apply overrides, validate."""
    tree = read_mapping(path, ConfigError, f"config file {path} does not exist") if path is not None else {}
    return parse_config(apply_overrides(tree, overrides or []), str(path or "config"))
