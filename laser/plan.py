"""`laser plan`: what a run config needs per process, from its models' config.json files alone (no weights loaded).

Memory per process (one GPU each, or the host with `device="cpu"`): the policy's weights, LoRA adapters,
gradients and optimizer state, the DPO reference, the update's activations at the configured batch and
length, the vLLM engine (weights and KV cache), each reward model placed there and its scoring activations.
The components add up per stage of a round (sampling, scoring, update), and the largest total is checked
against the device; what does not fit comes with the settings that would make it fit, each re-planned.
Compute per round: FLOPs of each stage for each strategy (2 x parameters per token forward, 3x with the
backward pass), so that LASeR's cost against an ensemble's can be computed for any setting.

Activation constants are measured on CPU (`benchmarks/plan_check.py`, docs/scaling.md): per token and layer a
transformer block keeps about 7 h + 4 i values for its backward pass (h the hidden size, i the MLP width),
plus 2 a s attention scores and probabilities where attention is computed eagerly (the CPU; a GPU's fused
attention keeps none), and TRL's log-probability head keeps about 8.5 float32 copies of the logits per
token (the policy's and the reference's, their softmax and its gradient).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from laser.config import ConfigError, RunConfig, check_launch
from laser.parts import load_tasks, rm_owners
from laser.training.rundir import embedded_recipe

GiB = 2**30
BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
LOGIT_COPIES = 8.5          # float32 copies of a logits tile the DPO update holds at its peak (measured on CPU)
UPDATE_OVERHEAD = 64 << 20  # the update's fixed cost (TRL's batch, tokenization, allocator slack), bytes
TILE_TOKENS, TILE_VOCAB = 4096, 32768  # TRL's log-probability head computes logits in tiles of this many
ENGINE_CPU_OVERHEAD = 165 << 20  # a vLLM engine's own memory on the CPU beyond weights and KV cache (measured)


class PlanError(ConfigError):
    """A model whose architecture cannot be read (no config.json where it was looked for)."""


# The config.json fields of the paper's models (as their hub repositories publish them), so that the paper config
# plans without hub access; any other model is read from its directory or a JSON file (`model_configs`).
KNOWN: dict[str, dict] = {}


def _config_json(model_type: str, intermediate: int, kv_heads: int, vocab: int, max_position: int) -> dict:
    """The fields of a 32-layer, 4096-wide decoder's config.json that the plan reads."""
    return dict(model_type=model_type, hidden_size=4096, intermediate_size=intermediate, num_hidden_layers=32,
                num_attention_heads=32, num_key_value_heads=kv_heads, vocab_size=vocab,
                max_position_embeddings=max_position, tie_word_embeddings=False)


_LLAMA3_8B = _config_json("llama", 14336, 8, 128256, 8192)
_MISTRAL_7B = _config_json("mistral", 14336, 8, 32000, 32768)
_QWEN15_7B = _config_json("qwen2", 11008, 32, 151936, 32768)
_OLMO_7B = _config_json("olmo", 11008, 32, 50304, 2048)
for _names, _cfg in ((["meta-llama/Meta-Llama-3-8B", "meta-llama/Meta-Llama-3-8B-Instruct"], _LLAMA3_8B),
                     (["HuggingFaceH4/zephyr-7b-beta", "HuggingFaceH4/mistral-7b-sft-beta", "openbmb/Eurus-7b-kto",
                       "openbmb/Eurus-7b-sft", "mistralai/Mistral-7B-v0.1"], _MISTRAL_7B),
                     (["Qwen/Qwen1.5-7B-Chat", "Qwen/Qwen1.5-7B"], _QWEN15_7B),
                     (["allenai/OLMo-7B-Instruct-hf", "allenai/OLMo-7B-SFT-hf"], _OLMO_7B)):
    for _name in _names:
        KNOWN[_name] = _cfg


@dataclass(frozen=True)
class Arch:
    """The shape of a decoder-only transformer, as its config.json gives it."""

    name: str
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    tied: bool
    qkv_bias: bool = False
    num_labels: int = 0  # a sequence classifier's outputs (0: a causal LM's head)

    @classmethod
    def of(cls, name: str, cfg: Mapping, classifier: bool = False) -> Arch:
        """The architecture in a config.json mapping (Llama, Mistral, Qwen2, OLMo and other Llama-like names)."""
        try:
            hidden = int(cfg["hidden_size"])
            heads = int(cfg["num_attention_heads"])
            return cls(name=name, hidden=hidden, intermediate=int(cfg.get("intermediate_size") or 4 * hidden),
                       layers=int(cfg["num_hidden_layers"]), heads=heads,
                       kv_heads=int(cfg.get("num_key_value_heads") or heads), vocab=int(cfg["vocab_size"]),
                       tied=bool(cfg.get("tie_word_embeddings", False)),
                       qkv_bias=bool(cfg.get("attention_bias", cfg.get("model_type") == "qwen2")),
                       num_labels=int(cfg.get("num_labels", len(cfg.get("id2label") or {}) or 1)) if classifier
                       else 0)
        except (KeyError, TypeError, ValueError) as e:
            raise PlanError(f"{name}: its config.json lacks a field the plan needs ({e}); hidden_size, "
                            "num_attention_heads, num_hidden_layers and vocab_size are required") from None

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) features of each linear layer of one block, by its module name."""
        h, kv = self.hidden, self.kv_heads * self.head_dim
        return {"q_proj": (h, self.heads * self.head_dim), "k_proj": (h, kv), "v_proj": (h, kv),
                "o_proj": (self.heads * self.head_dim, h), "gate_proj": (h, self.intermediate),
                "up_proj": (h, self.intermediate), "down_proj": (self.intermediate, h)}

    @property
    def block_params(self) -> int:
        linear = sum(i * o for i, o in self.linear_shapes().values())
        bias = (self.heads + 2 * self.kv_heads) * self.head_dim if self.qkv_bias else 0
        return linear + bias + 2 * self.hidden  # two norms

    @property
    def params(self) -> int:
        """Every parameter: embeddings, blocks, final norm and the head (an LM head unless tied, or a score head)."""
        head = self.num_labels * self.hidden if self.num_labels else (0 if self.tied else self.vocab * self.hidden)
        return self.vocab * self.hidden + self.layers * self.block_params + self.hidden + head

    def lora_params(self, r: int, targets: list[str]) -> int:
        """Parameters of LoRA adapters of rank r on the named linear layers of every block."""
        shapes = self.linear_shapes()
        unknown = [t for t in targets if t not in shapes]
        if unknown:
            raise PlanError(f"dpo.lora.target_modules {unknown}: {self.name} has no such linear layers "
                            f"(it has {sorted(shapes)})")
        return self.layers * sum(r * (shapes[t][0] + shapes[t][1]) for t in targets)

    def kv_bytes_per_token(self, dtype_bytes: int) -> int:
        return 2 * self.layers * self.kv_heads * self.head_dim * dtype_bytes

    def activation_values(self, seq: int, eager_attention: bool) -> int:
        """Values one token keeps per block for the backward pass (7 h + 4 i, plus attention scores when eager)."""
        return 7 * self.hidden + 4 * self.intermediate + (2 * self.heads * seq if eager_attention else 0)


def read_arch(path: str, model_configs: Mapping[str, str | Path] | None = None, classifier: bool = False) -> Arch:
    """The architecture of the model at `path` (a directory with config.json, or a hub id): from `model_configs`
    ({path or hub id: config.json file}), the directory itself, or the paper's models known here."""
    given = dict(model_configs or {})
    source = given.get(path)
    if source is None and Path(path).is_dir():
        source = Path(path) / "config.json"
    if source is not None:
        source = Path(source)
        if not source.is_file():
            raise PlanError(f"{path}: no config.json at {source}")
        try:
            return Arch.of(path, json.loads(source.read_text()), classifier)
        except json.JSONDecodeError as e:
            raise PlanError(f"{source} is not valid JSON: {e}") from None
    if path in KNOWN:
        return Arch.of(path, KNOWN[path], classifier)
    raise PlanError(f"{path}: no local directory and no config.json given; pass --model-config {path}=CONFIG.json "
                    "(the model's config.json, a few hundred bytes)")


@dataclass
class Placement:
    """What `laser plan` assumes about the machine: processes, GPUs and their memory, or the host (device cpu)."""

    processes: int = 1
    gpus: int = 1
    memory: float | None = None  # bytes per GPU (or of the host); None: report without a verdict
    device: str = "cuda"
    prompt_tokens: int = 256
    completion_tokens: int | None = None  # default: round.max_new_tokens

    @property
    def gpu(self) -> bool:
        return self.device != "cpu"


@dataclass
class RankPlan:
    """One process's memory: resident components and each stage's total, in bytes."""

    rank: int
    components: dict[str, int]
    stages: dict[str, int]
    host: dict[str, int] = field(default_factory=dict)  # what sleep level 1 moves to host memory

    @property
    def peak(self) -> int:
        return max(self.stages.values())

    @property
    def peak_stage(self) -> str:
        return max(self.stages, key=self.stages.get)


@dataclass
class Plan:
    """Memory per process and compute per round of one config on one placement."""

    config: RunConfig
    placement: Placement
    policy: Arch
    rms: dict[str, list[Arch]]
    ranks: list[RankPlan]
    flops: dict[str, dict[str, float]]
    kv_tokens: int | None
    notes: list[str] = field(default_factory=list)
    advice: list[str] = field(default_factory=list)

    @property
    def worst(self) -> RankPlan:
        return max(self.ranks, key=lambda r: r.peak)

    @property
    def fits(self) -> bool | None:
        return None if self.placement.memory is None else self.worst.peak <= self.placement.memory


def _dtype(name: str, gpu: bool) -> str:
    return name if name != "auto" else ("bfloat16" if gpu else "float32")


def _rm_archs(rm_paths: Mapping[str, tuple[str, str, str | None]],
              model_configs: Mapping[str, str | Path] | None) -> dict[str, list[Arch]]:
    """{rm: its models' architectures} (an implicit DPO RM is two models; a remote one none)."""
    out = {}
    for name, (kind, path, ref) in rm_paths.items():
        if kind == "remote":
            out[name] = []
        else:
            archs = [read_arch(path, model_configs, classifier=kind == "hf")]
            if kind == "implicit_dpo":
                archs.append(read_arch(ref, model_configs))
            out[name] = archs
    return out


def _resolve(config: RunConfig):
    """(policy path, {rm: (kind, path, ref_path)}) of the config; an embedded world must be built already."""
    policy = config.models.policy
    rms = {n: (c.kind, c.path or c.url, c.ref_path) for n, c in (config.models.reward_models or {}).items()}
    recipe = embedded_recipe(config)
    if recipe is not None and (policy is None or not rms):
        from laser.assets.build import cached_assets

        assets = cached_assets(recipe)
        if assets is None:
            raise PlanError("this config uses an embedded world that is not built yet: build it first (laser "
                            "build-assets, --quick for the quick one), or name your own models.policy and "
                            "models.reward_models")
        policy = policy or str(assets.policy)
        if not rms:
            lineup, _ = assets.lineup(config.models.embedded_rms)
            rms = {n: (kind, str(p), None) for n, (kind, p) in lineup.items()}
    if policy is None:
        raise PlanError("models.policy: set a policy path, or models.embedded: default|quick")
    return policy, rms


def plan(config: RunConfig, placement: Placement | None = None,
         model_configs: Mapping[str, str | Path] | None = None) -> Plan:
    """The memory per process and FLOPs per round of `config` on `placement`, from config.json files alone."""
    placement = placement or Placement()
    policy_path, rm_paths = _resolve(config)
    policy = read_arch(policy_path, model_configs)
    rms = _rm_archs(rm_paths, model_configs)
    return _plan(config, placement, policy, rms)


def _plan(config: RunConfig, placement: Placement, policy: Arch, rms: dict[str, list[Arch]]) -> Plan:
    p, gpu = placement, placement.gpu
    r, d, e = config.round, config.dpo, config.engine
    n_proc = p.processes
    completion = p.completion_tokens or r.max_new_tokens
    seq = p.prompt_tokens + completion
    if d.max_length:
        seq = min(seq, d.max_length)
    pol_bytes = BYTES[_dtype(config.models.dtype, gpu)]
    eng_bytes = BYTES[_dtype(e.dtype, gpu)]
    notes: list[str] = []

    # The policy and its training state.
    weights = policy.params * pol_bytes
    if d.lora is not None:
        adapters = policy.lora_params(d.lora.r, d.lora.target_modules)
        trainable, train_bytes = adapters, 4  # peft keeps adapters in float32
        # the iteration's copy of the adapters, and TRL's "ref" adapter during an update
        reference = 2 * adapters * 4
    else:
        adapters, trainable, train_bytes = 0, policy.params, pol_bytes
        reference = weights
    state_bytes = 2 * (1 + 4 / 256) if d.optim == "adamw_8bit" else 2 * train_bytes
    optimizer = int(trainable * state_bytes)
    gradients = trainable * train_bytes

    # The update's activations: chosen and rejected of each of this process's pairs, one batch.
    per_device = d.micro_batch_size or max(1, d.batch_size // n_proc)
    tokens = 2 * per_device * seq
    act_bytes = pol_bytes if gpu else 4
    eager = not gpu
    per_layer = policy.activation_values(seq, eager) * act_bytes
    if d.gradient_checkpointing:  # each block's input kept, one block's activations at a time
        blocks = policy.layers * policy.hidden * act_bytes * tokens + per_layer * tokens
    else:
        blocks = policy.layers * per_layer * tokens
    logits = int(LOGIT_COPIES * min(tokens, TILE_TOKENS) * min(policy.vocab, TILE_VOCAB) * 4)
    # full fine-tuning: the head's weight gradient is accumulated in float32 before it joins the others
    head_grad = policy.vocab * policy.hidden * 4 if d.lora is None else 0
    activations = blocks + logits + head_grad + UPDATE_OVERHEAD
    # AdamW's step: on a GPU (foreach) a temporary of every moment at once; on the CPU (one tensor at a time) two
    # of the largest parameter's
    largest = max(policy.vocab, policy.intermediate) * policy.hidden
    step = (trainable if gpu else 2 * min(trainable, largest)) * train_bytes if d.optim == "adamw_torch" else 0

    # The engine: on a GPU, vLLM takes its share of the device for weights, KV cache and its own activations.
    engine_weights = policy.params * eng_bytes
    kv_per_token = policy.kv_bytes_per_token(eng_bytes)
    if e.engine == "hf":
        engine_total, kv = engine_weights, 0
    elif gpu:
        if p.memory is None:
            engine_total, kv = engine_weights, 0
            notes.append("no --gpu-memory: the engine's KV cache (a share of the GPU) is left out")
        else:
            engine_total = int(e.gpu_memory_utilization * p.memory)
            reserve = max(e.max_model_len or seq, 8192) * (4 * policy.hidden + 2 * policy.intermediate) * eng_bytes
            kv = engine_total - engine_weights - reserve
            if kv <= 0:  # it would not start: count what it needs at least (its weights and working memory)
                engine_total = engine_weights + reserve
    else:
        # vLLM's CPU backend keeps its linear layers' weights twice (as loaded, and packed for its kernels) and
        # needs working memory of its own (ENGINE_CPU_OVERHEAD, measured)
        kv = e.kv_cache_mb << 20
        linear = policy.layers * sum(i * o for i, o in policy.linear_shapes().values()) * eng_bytes
        engine_total = engine_weights + kv + (linear + ENGINE_CPU_OVERHEAD if e.engine != "hf" else 0)
    kv_tokens = kv // kv_per_token if kv > 0 else 0
    if e.engine != "hf" and gpu and p.memory is not None and kv_tokens < seq:
        notes.append(f"engine.gpu_memory_utilization {e.gpu_memory_utilization} leaves the KV cache "
                     f"{max(kv, 0) / GiB:.1f} GiB: room for {kv_tokens} tokens, less than one sequence ({seq})")

    # Reward models: where each is held, and the largest scoring batch's activations.
    configs = config.models.reward_models or {}
    owners = rm_owners(configs, config.models.rm_placement, n_proc) if configs else {n: None for n in rms}
    rm_dtype = {n: BYTES[_dtype(configs[n].dtype if n in configs else "auto", gpu)] for n in rms}
    rm_batch = {n: configs[n].batch_size if n in configs else 64 for n in rms}
    spread = {n: n in configs and configs[n].device_map is not None for n in rms}
    on_host = {n: gpu and n in configs and configs[n].device == "cpu" for n in rms}

    def rm_share(name: str, rank: int) -> tuple[int, int]:
        archs = rms[name]
        if not archs or (owners.get(name) is not None and owners[name] != rank) or on_host[name]:
            return 0, 0
        size = sum(a.params for a in archs) * rm_dtype[name]
        if spread[name]:
            size //= max(p.gpus, 1)
        # A language-model RM's logits over the whole vocabulary, in its dtype, then in float32 with their
        # log-softmax; a classifier's hidden states only.
        lm = [a for a in archs if not a.num_labels]
        width = max((a.vocab for a in lm), default=0)
        scoring = rm_batch[name] * seq * (width * (rm_dtype[name] + 8) +
                                          4 * max(a.hidden for a in archs) * rm_dtype[name])
        return size, scoring

    # Contexts: the policy's forward over a batch of prompts without gradients (one block's activations at a time);
    # every layer's hidden states kept when the context is not the last layer's.
    ctx = config.context
    kept = 0 if ctx.layer in (-1, policy.layers) else (policy.layers + 1) * policy.hidden
    embed = ctx.batch_size * p.prompt_tokens * act_bytes * (
        kept + 2 * policy.hidden + 2 * policy.intermediate + (2 * policy.heads * p.prompt_tokens if eager else 0))

    ranks = []
    for rank in range(n_proc):
        shares = {n: rm_share(n, rank) for n in rms}
        rm_weights = sum(s for s, _ in shares.values())
        rm_scoring = max((a for _, a in shares.values()), default=0)
        components = {"policy weights": weights, "LoRA adapters": adapters * 4, "optimizer state": optimizer,
                      "DPO reference": reference, "engine (weights, KV cache)": engine_total,
                      "reward models": rm_weights, "gradients (update)": gradients,
                      "activations (update)": activations, "optimizer step (update)": step,
                      "activations (scoring)": rm_scoring, "activations (contexts)": embed}
        resident = weights + adapters * 4 + optimizer + reference + rm_weights
        asleep = e.sleep > 0
        engine_in_update = 0 if asleep else engine_total
        stages = {"sampling": resident + engine_total, "contexts": resident + engine_total + embed,
                  "scoring": resident + engine_in_update + rm_scoring,
                  "update": resident + engine_in_update + gradients + max(activations, step)}
        host = {"engine weights (sleep 1)": engine_weights} if e.sleep == 1 else {}
        host_rms = sum(sum(a.params for a in rms[n]) * rm_dtype[n] for n in rms if on_host[n] and
                       (owners.get(n) is None or owners[n] == rank))
        if host_rms:
            host["reward models on the host"] = host_rms
        ranks.append(RankPlan(rank, components, stages, host))
    result = Plan(config, p, policy, rms, ranks, _flops(config, p, policy, rms, seq), kv_tokens, notes)
    return result


def _flops(config: RunConfig, p: Placement, policy: Arch, rms: dict[str, list[Arch]], seq: int) -> dict:
    """{strategy: {stage: FLOPs of one round}} (all processes together): 2 x parameters per token forward, 6x
    forward and backward (4x with LoRA: no weight gradients of the frozen base), one more forward under gradient
    checkpointing, and the reference's forward."""
    r, d = config.round, config.dpo
    completion = p.completion_tokens or r.max_new_tokens
    prompts = r.prompts_per_round
    probe_prompts = r.rerank_prompts if r.feedback == "rerank_gain" else 0
    probe_n = r.rerank_n or r.n
    P = policy.params
    rm_cost = {n: sum(2 * a.params for a in archs) * seq for n, archs in rms.items()}  # per candidate scored
    mean_rm = sum(rm_cost.values()) / max(len(rm_cost), 1)
    sampling = 2 * P * (prompts * (p.prompt_tokens + r.n * completion))
    contexts = 2 * P * p.prompt_tokens * prompts
    pairs = prompts * (r.num_pairs if r.pair_rule == "top_vs_rest" else 1)
    per_token = (4 if d.lora is not None else 6) + (2 if d.gradient_checkpointing else 0) + 2
    update = per_token * P * 2 * seq * pairs * d.epochs
    strategies = {"laser": mean_rm, "random": mean_rm, "sequential": mean_rm, "oracle": mean_rm,
                  "ensemble": sum(rm_cost.values())}
    for name, cost in rm_cost.items():
        strategies[f"single:{name}"] = cost
    out = {}
    for s, per_candidate in strategies.items():
        row = {"sampling": sampling, "contexts": contexts, "scoring": per_candidate * prompts * r.n, "update": update}
        if s == "laser" and probe_prompts:  # the router's probes: sampled and scored by their picked RM
            row["sampling"] += 2 * P * probe_prompts * (p.prompt_tokens + probe_n * completion)
            row["contexts"] += 2 * P * p.prompt_tokens * probe_prompts
            # after the warm-up the pick scores `rerank_draws` right and as many wrong samples of each (at most)
            row["scoring"] += mean_rm * probe_prompts * min(probe_n, 2 * (r.rerank_draws or probe_n))
        row["total"] = sum(row.values())
        out[s] = row
    return out


def advise(result: Plan) -> list[str]:
    """For a plan that does not fit: each single change of setting that makes it fit (re-planned); where none does,
    the changes taken together, the one that lowers the peak most first, as far as they help."""
    if result.fits is not False:
        return []
    memory = result.placement.memory

    seq = result.placement.prompt_tokens + (result.placement.completion_tokens or result.config.round.max_new_tokens)
    engine_counts = result.placement.gpu and result.config.engine.engine != "hf"

    def peak(change: dict) -> int | None:
        redone = _plan(_changed(result.config, change), result.placement, result.policy, result.rms)
        if engine_counts and redone.kv_tokens < seq:
            return None  # the engine would have no room for one sequence
        return redone.worst.peak

    if engine_counts and result.kv_tokens < seq:
        need = result.ranks[0].components["policy weights"] + result.policy.params * BYTES[
            _dtype(result.config.engine.dtype, True)]
        if need > memory:
            return [f"nothing fits it: the policy's weights and the engine's copy of them alone take "
                    f"{need / GiB:.1f} GiB of {memory / GiB:.0f} GiB (a GPU with more memory, or a smaller policy)"]

    trials = _trials(result)
    singles = [(text, p) for text, change in trials if (p := peak(change)) is not None]
    fitting = [f"{text}: peak {p / GiB:.1f} GiB" for text, p in singles if p <= memory]
    if fitting:
        return fitting
    taken, change, best = [], {}, result.worst.peak
    for _ in range(len(trials)):
        options = [(p, text, step) for text, step in trials if text not in taken
                   and (p := peak(_merged(change, step))) is not None and p < best]
        if not options:
            break
        best, text, step = min(options, key=lambda o: o[0])
        taken.append(text)
        change = _merged(change, step)
        if best <= memory:
            return [f"together: {'; '.join(taken)}: peak {best / GiB:.1f} GiB"]
    if taken:
        return [f"nothing here fits it; the closest, together: {'; '.join(taken)}: peak {best / GiB:.1f} GiB "
                f"of {memory / GiB:.0f} GiB (more GPUs, more memory per GPU, or a smaller policy)"]
    return ["nothing here fits it: more GPUs, more memory per GPU, or a smaller policy"]


def _trials(result: Plan) -> list[tuple[str, dict]]:
    """The settings `advise` tries, each as (what to set, the config change)."""
    c, p = result.config, result.placement
    out: list[tuple[str, dict]] = []
    if c.engine.sleep == 0 and c.engine.engine != "hf":
        out.append(("engine.sleep: 2", {"engine": {"sleep": 2}}))
    if not c.dpo.gradient_checkpointing:
        out.append(("dpo.gradient_checkpointing: true", {"dpo": {"gradient_checkpointing": True}}))
    if p.processes > 1 and c.models.rm_placement == "replicate":
        out.append(("models.rm_placement: shard", {"models": {"rm_placement": "shard"}}))
    rms = c.models.reward_models or {}
    local = [n for n, r in rms.items() if r.kind != "remote" and r.device != "cpu" and r.device_map is None]
    if p.gpu and local:
        out.append(("every reward model's device: cpu (scored on the host)",
                    {"models": {"reward_models": {n: {"device": "cpu"} for n in local}}}))
        big = [n for n in local if rms[n].batch_size > 4]
        if big:
            out.append(("reward models' batch_size: 4", {"models": {"reward_models": {n: {"batch_size": 4}
                                                                                      for n in big}}}))
    if c.dpo.lora is None:
        out.append(("dpo.lora: {r: 16, alpha: 32}", {"dpo": {"lora": {"r": 16, "alpha": 32}}}))
        if c.dpo.optim == "adamw_torch" and p.gpu:
            out.append(("dpo.optim: adamw_8bit", {"dpo": {"optim": "adamw_8bit"}}))
    if c.engine.engine != "hf" and p.gpu:
        for util in (0.3, 0.25, 0.2, 0.15, 0.1):
            if util < c.engine.gpu_memory_utilization:
                out.append((f"engine.gpu_memory_utilization: {util}", {"engine": {"gpu_memory_utilization": util}}))
    share = c.dpo.batch_size // p.processes
    for micro in (4, 2, 1):
        if micro < (c.dpo.micro_batch_size or share) and share % micro == 0:
            out.append((f"dpo.micro_batch_size: {micro}", {"dpo": {"micro_batch_size": micro}}))
    return out


def _merged(a: dict, b: dict) -> dict:
    """Nested config changes, `b` over `a`."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in a.items()}
    for k, v in b.items():
        out[k] = _merged(out.get(k, {}), v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _changed(config: RunConfig, change: dict) -> RunConfig:
    """`config` with the nested `change` applied."""
    def apply(tree: dict, change: dict) -> dict:
        for k, v in change.items():
            tree[k] = apply(dict(tree.get(k) or {}), v) if isinstance(v, dict) and k != "lora" else v
        return tree

    return RunConfig.model_validate(apply(config.model_dump(mode="json"), change))


def parse_memory(text: str) -> float:
    """Bytes of '80GiB', '80GB', '24 GiB', '512MiB' or a plain number of GiB."""
    t = text.strip().replace(" ", "")
    units = {"GIB": GiB, "GB": 1e9, "MIB": 2**20, "MB": 1e6, "TIB": 2**40, "TB": 1e12}
    for unit, size in units.items():
        if t.upper().endswith(unit):
            return float(t[: -len(unit)]) * size
    try:
        return float(t) * GiB
    except ValueError:
        raise PlanError(f"--gpu-memory {text!r}: expected a size such as 80GiB, 24GB or 40") from None


def format_plan(result: Plan) -> str:
    """The plan as text tables: memory per process by stage and component, then FLOPs per round by strategy."""
    p, c = result.placement, result.config
    where = f"{p.processes} process(es) on {p.gpus} GPU(s)" if p.gpu else f"{p.processes} process(es) on the host"
    cap = f" of {p.memory / GiB:.0f} GiB" if p.memory else ""
    name = f"{result.policy.name}, {_count(result.policy.params)} parameters"
    lines = [f"# laser plan: {c.name} ({name}), {where}{cap}",
             "", f"Sequences of {p.prompt_tokens} prompt + {p.completion_tokens or c.round.max_new_tokens} completion "
             f"tokens; LoRA {'r=' + str(c.dpo.lora.r) if c.dpo.lora else 'off'}; engine {c.engine.engine}, sleep "
             f"{c.engine.sleep}; reward models {_placed(c, p.processes)}.", ""]
    shown = _distinct_ranks(result.ranks)
    unit, size = ("GiB", GiB) if result.worst.peak >= GiB else ("MiB", 2**20)
    head = f"| {unit} | " + " | ".join(f"process {', '.join(map(str, rs))}" for rs, _ in shown) + " |"
    lines += [head, "|---|" + "---|" * len(shown)]
    for comp in result.ranks[0].components:
        lines.append(f"| {comp} | " + " | ".join(f"{rp.components[comp] / size:.2f}" for _, rp in shown) + " |")
    for stage in result.ranks[0].stages:
        lines.append(f"| **{stage} (total)** | " + " | ".join(f"**{rp.stages[stage] / size:.2f}**" for _, rp in shown)
                     + " |")
    for item in sorted({k for rp in result.ranks for k in rp.host}):
        lines.append(f"| on the host: {item} | " + " | ".join(f"{rp.host.get(item, 0) / size:.2f}" for _, rp in shown)
                     + " |")
    if result.kv_tokens:
        lines.append(f"\nKV cache: room for {result.kv_tokens:,} tokens per engine "
                     f"({result.kv_tokens // max(1, p.prompt_tokens + (p.completion_tokens or c.round.max_new_tokens))}"
                     " sequences at once).")
    worst = result.worst
    if result.fits is not None:
        verdict = "fits" if result.fits else "DOES NOT FIT"
        lines.append(f"\nPeak: {worst.peak / GiB:.1f} GiB at {worst.peak_stage} (process {worst.rank}): {verdict}"
                     f"{cap}.")
    for note in result.notes:
        lines.append(f"Note: {note}.")
    for a in result.advice:
        lines.append(f"- {a}")
    lines += ["", "| PFLOPs per round | sampling | contexts | RM scoring | update | total | vs ensemble |",
              "|---|---|---|---|---|---|---|"]
    ens = result.flops["ensemble"]["total"]
    for s, row in result.flops.items():
        lines.append(f"| {s} | " + " | ".join(f"{row[k] / 1e15:.3g}" for k in ("sampling", "contexts", "scoring",
                                                                              "update", "total"))
                     + f" | {row['total'] / ens:.2f}x |")
    return "\n".join(lines)


def _count(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n:,}"


def _placed(c: RunConfig, processes: int) -> str:
    if processes == 1:
        return "all in the one process"
    return "each in one process" if c.models.rm_placement == "shard" else "in every process"


def _distinct_ranks(ranks: list[RankPlan]) -> list[tuple[list[int], RankPlan]]:
    """Processes grouped by identical memory (the table shows one column per group)."""
    groups: list[tuple[list[int], RankPlan]] = []
    for rp in ranks:
        for rs, first in groups:
            if first.components == rp.components:
                rs.append(rp.rank)
                break
        else:
            groups.append(([rp.rank], rp))
    return groups


def plan_dict(result: Plan) -> dict:
    """The plan as JSON-ready numbers (bytes and FLOPs)."""
    return {"policy": {"name": result.policy.name, "params": result.policy.params},
            "reward_models": {n: [a.params for a in archs] for n, archs in result.rms.items()},
            "placement": {k: v for k, v in result.placement.__dict__.items()},
            "ranks": [{"rank": rp.rank, "components": rp.components, "stages": rp.stages, "host": rp.host,
                       "peak": rp.peak, "peak_stage": rp.peak_stage} for rp in result.ranks],
            "kv_tokens": result.kv_tokens, "fits": result.fits, "advice": result.advice, "notes": result.notes,
            "flops": result.flops}


def prompt_tokens_of(config: RunConfig) -> int | None:
    """The 95th percentile of the training prompts' rendered lengths in tokens (as the engine renders them), where
    the tasks and the policy's tokenizer can be read here; else None."""
    try:
        from transformers import AutoTokenizer

        from laser.generation import PromptRenderer

        policy, _ = _resolve(config)
        if not Path(policy).is_dir():
            return None
        assets = None
        if config.tasks.source == "embedded":
            from laser.assets.build import cached_assets

            recipe = embedded_recipe(config)
            assets = cached_assets(recipe) if recipe else None
        train = load_tasks(config, assets)[0][:2000]
        renderer = PromptRenderer(AutoTokenizer.from_pretrained(policy), config.engine.chat_template)
        lengths = sorted(len(renderer.ids(ex.prompt)) for ex in train)
        return lengths[int(0.95 * (len(lengths) - 1))] if lengths else None
    except Exception:  # noqa: BLE001 - tasks or tokenizer not here (hub ids, data not exported yet): the default
        return None


def run_plan(config: RunConfig, gpus: int = 1, gpu_memory: str | None = None, processes: int | None = None,
             device: str = "cuda", prompt_tokens: int | None = None, completion_tokens: int | None = None,
             model_configs: Mapping[str, str | Path] | None = None) -> Plan:
    """`laser plan`: the plan of `config` on `gpus` GPUs (one process each unless `processes` says otherwise), with
    its advice when it does not fit; launch problems (as `laser train` would refuse them) are raised first.
    `prompt_tokens` None: measured on the training prompts where they can be read, else 256."""
    processes = processes or (gpus if device != "cpu" and config.engine.tensor_parallel_size == 1 else 1)
    check_launch(config, processes, gpus if device != "cpu" else 0)
    note = None
    if prompt_tokens is None:
        prompt_tokens = prompt_tokens_of(config)
        if prompt_tokens is None:
            prompt_tokens, note = 256, "prompts taken as 256 tokens (the tasks or the tokenizer are not here to " \
                                       "measure; --prompt-tokens sets it)"
    placement = Placement(processes=processes, gpus=gpus, memory=parse_memory(gpu_memory) if gpu_memory else None,
                          device=device, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
    result = plan(config, placement, model_configs)
    if note:
        result.notes.append(note)
    result.advice = advise(result)
    return result
