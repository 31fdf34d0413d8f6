"""What every generation engine shares: candidates, prompt preparation, argument checks, deduplication.

An engine turns prompts into `Candidates`: for each prompt, the distinct completions drawn (identical
texts are kept once and counted), each with its token ids, finish reason ("stop": end of sequence or a
stop string; "length": `max_new_tokens` reached) and cumulative log-probability under the raw model
distribution (before temperature / top-p), as vLLM reports it. Backends implement `_generate` on token
ids; prompt formatting (chat template), left truncation and bookkeeping live here, once.
"""

from __future__ import annotations

import logging
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from laser.streams import item_seeds

log = logging.getLogger(__name__)


class GenerationError(RuntimeError):
    """Generation failed (the message says on which batch of prompts); the run can resume from its checkpoint."""


@dataclass(frozen=True)
class Sample:
    """One distinct completion of a prompt."""

    text: str
    token_ids: tuple[int, ...]
    finish_reason: str              # "stop" | "length"
    cumulative_logprob: float | None
    count: int = 1                  # how many of the n draws produced exactly this text

    @property
    def empty(self) -> bool:
        """True when the completion has no visible text (kept, so that what happened is seen)."""
        return not self.text.strip()

    @property
    def truncated(self) -> bool:
        """True when generation stopped at `max_new_tokens` rather than by itself."""
        return self.finish_reason == "length"


@dataclass
class Candidates:
    """The samples of one `sample`/`greedy` call: `samples[i]` are prompt i's distinct completions."""

    prompts: list[str]
    samples: list[list[Sample]]
    prompts_truncated: int = 0      # prompts cut from the left to fit the context window

    def __len__(self) -> int:
        return len(self.prompts)

    def texts(self, i: int) -> list[str]:
        """The distinct completion texts of prompt i."""
        return [s.text for s in self.samples[i]]

    def pairs(self) -> Iterator[tuple[int, Sample]]:
        """(prompt index, sample) for every distinct sample."""
        for i, group in enumerate(self.samples):
            for s in group:
                yield i, s

    @property
    def stats(self) -> dict[str, int]:
        """Counts for metrics files: draws, distinct samples, empty and truncated ones."""
        flat = [s for group in self.samples for s in group]
        return {"prompts": len(self.prompts), "drawn": sum(s.count for s in flat), "distinct": len(flat),
                "empty": sum(s.empty for s in flat), "truncated": sum(s.truncated for s in flat),
                "prompts_truncated": self.prompts_truncated}


def dedupe(samples: Sequence[Sample]) -> list[Sample]:
    """Samples with identical texts merged into one (the first drawn), its `count` the number merged."""
    kept: dict[str, Sample] = {}
    for s in samples:
        if s.text in kept:
            k = kept[s.text]
            kept[s.text] = Sample(k.text, k.token_ids, k.finish_reason, k.cumulative_logprob, k.count + s.count)
        else:
            kept[s.text] = s
    return list(kept.values())


@dataclass(frozen=True)
class SamplingSettings:
    """Checked sampling arguments, passed to a backend's `_generate`."""

    n: int
    temperature: float
    top_p: float
    max_new_tokens: int
    stop: tuple[str, ...]
    seed: int | None
    logprobs: bool = False          # also each sample's cumulative log-probability

    def __post_init__(self):
        if self.n < 1:
            raise ValueError(f"n must be >= 1 samples per prompt, got {self.n}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 is greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature == 0 and self.n > 1:
            raise ValueError("greedy decoding (temperature 0) gives one completion per prompt: use n=1")
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise ValueError(f"stop must be a list of non-empty strings, got {list(self.stop)}")


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """`text` up to (not including) the earliest stop string, and whether one was found."""
    cuts = [i for i in (text.find(s) for s in stop) if i >= 0]
    return (text[:min(cuts)], True) if cuts else (text, False)


@dataclass
class EngineStats:
    """Running totals of an engine, for metrics files."""

    calls: int = 0
    prompts: int = 0
    drawn: int = 0
    generated_tokens: int = 0
    prompts_truncated: int = 0
    weight_syncs: int = 0
    sleeps: int = 0
    sleep_s: float = 0.0            # seconds spent putting the engine to sleep
    wake_s: float = 0.0             # seconds spent waking it (before the trained weights are loaded)
    errors: list[str] = field(default_factory=list)


class PromptRenderer:
    """The one rendering of a prompt that every stage uses: sampling, contexts, DPO pairs, validation metrics,
    evaluation and best-of-n see the same token ids.

    With a chat template (a tokenizer that has one, and `chat_template: auto`), the prompt is the user turn
    and the text ends with the generation prompt; the template writes the special tokens itself, so the
    tokenizer adds none. Without one, the prompt is used as it is and the tokenizer adds its own (BOS).
    DPO rows go to TRL in the matching form: conversational with a template (TRL applies the same template
    and takes the completion after the generation prompt), plain text without.
    """

    def __init__(self, tokenizer, chat_template: str = "auto"):
        if chat_template not in ("auto", "never"):
            raise ValueError(f"chat_template must be 'auto' or 'never', got {chat_template!r}")
        self.tokenizer = tokenizer
        self.use_chat_template = chat_template == "auto" and bool(getattr(tokenizer, "chat_template", None))

    @property
    def add_special_tokens(self) -> bool:
        """Whether the tokenizer adds its special tokens to a rendered prompt (not when a template wrote them)."""
        return not self.use_chat_template

    def text(self, prompt: str) -> str:
        """The text the model sees."""
        if not self.use_chat_template:
            return prompt
        return self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                  add_generation_prompt=True)

    def ids(self, prompt: str) -> list[int]:
        """The token ids the model sees."""
        return list(self.tokenizer(self.text(prompt), add_special_tokens=self.add_special_tokens)["input_ids"])

    def dpo_row(self, prompt: str, chosen: str, rejected: str) -> dict:
        """A preference pair in the form TRL's DPOTrainer tokenizes to the sampled prompt's ids."""
        if not self.use_chat_template:
            return {"prompt": prompt, "chosen": chosen, "rejected": rejected}
        return {"prompt": [{"role": "user", "content": prompt}],
                "chosen": [{"role": "assistant", "content": chosen}],
                "rejected": [{"role": "assistant", "content": rejected}]}


class GenerationEngine(ABC):
    """Samples completions from a causal LM. Backends implement `_generate` and `_load_weights` (and, to sleep,
    `_sleep`, `_wake_weights` and `_wake_rest`).

    Sleep (`sleep` level 1 or 2): between a round's last generation and the weight sync that follows its update,
    `sleep()` frees the engine's device memory for the update (1: the weights kept in host memory, 2: dropped) and
    `sync_weights` wakes it with the trained weights."""

    name = "engine"

    def __init__(self, model_path: str | Path, tokenizer, max_model_len: int, chat_template: str = "auto",
                 batch_size: int = 256, sleep: int = 0):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if sleep not in (0, 1, 2):
            raise ValueError(f"sleep must be 0, 1 or 2, got {sleep}")
        self.sleep_level = sleep
        self.asleep = 0  # the level the engine sleeps at now (0: awake)
        self.model_path = str(model_path)
        self.tokenizer = tokenizer
        self.max_model_len = max_model_len
        self.renderer = PromptRenderer(tokenizer, chat_template)
        self.batch_size = batch_size
        self.stats = EngineStats()

    # --- prompts -------------------------------------------------------------------------------------
    @property
    def use_chat_template(self) -> bool:
        """Whether prompts are wrapped in the tokenizer's chat template (the renderer decides)."""
        return self.renderer.use_chat_template

    def format_prompt(self, prompt: str) -> str:
        """The text the model sees (`PromptRenderer.text`)."""
        return self.renderer.text(prompt)

    def encode(self, prompts: Sequence[str], max_new_tokens: int) -> tuple[list[list[int]], int]:
        """Token ids of each formatted prompt, cut from the left to leave room for `max_new_tokens`."""
        budget = self.max_model_len - max_new_tokens
        if budget < 1:
            raise ValueError(f"max_new_tokens ({max_new_tokens}) must be smaller than the context window "
                             f"({self.max_model_len} tokens)")
        enc = [self.renderer.ids(p) for p in prompts]
        bos = self.tokenizer.bos_token_id
        out, cut = [], 0
        for ids in enc:
            if len(ids) > budget:
                cut += 1
                keep_bos = bos is not None and ids[0] == bos and budget > 1
                ids = ([bos] + ids[len(ids) - budget + 1:]) if keep_bos else ids[len(ids) - budget:]
            out.append(list(ids))
        if cut:
            log.warning("%d of %d prompts were longer than the %d tokens left for them and were cut from the left",
                        cut, len(prompts), budget)
        return out, cut

    # --- generation ----------------------------------------------------------------------------------
    def sample(self, prompts: Sequence[str], n: int = 1, temperature: float = 1.0, top_p: float = 1.0,
               max_new_tokens: int = 64, stop: Sequence[str] | None = None, seed: int | None = None,
               first_index: int = 0, logprobs: bool = False) -> Candidates:
        """`n` completions of each prompt, deduplicated per prompt (see `Candidates`). With a `seed`, prompt i samples
        with its own seed, from (seed, first_index + i): `first_index` places these prompts in a larger call (a share
        of one call sharded across processes then draws what the whole call draws there). `logprobs`: each sample's
        `cumulative_logprob` too (None otherwise); it does not change what is sampled. Off by default: training
        does not read it, and computing it costs a log-softmax over the vocabulary at every step (on vLLM's CPU
        backend also a torch.compile of its counting kernel, about 4 s in every new process)."""
        if isinstance(prompts, str):
            raise TypeError("prompts must be a list of strings, not one string")
        bad = [i for i, p in enumerate(prompts) if not isinstance(p, str)]
        if bad:
            raise TypeError(f"prompts must be strings; item {bad[0]} is {type(prompts[bad[0]]).__name__}")
        settings = SamplingSettings(n, float(temperature), float(top_p), int(max_new_tokens), tuple(stop or ()), seed,
                                    bool(logprobs))
        prompts = list(prompts)
        if not prompts:
            return Candidates([], [])
        self.wake()
        ids, cut = self.encode(prompts, settings.max_new_tokens)
        groups: list[list[Sample]] = []
        for b in range(0, len(ids), self.batch_size):
            chunk = ids[b:b + self.batch_size]
            try:
                seeds = None if settings.seed is None else item_seeds(settings.seed, first_index + b, len(chunk))
                raw = self._generate(chunk, settings, seeds)
            except Exception as e:
                msg = (f"{self.name} generation failed on batch {b // self.batch_size} "
                       f"(prompts {b}..{b + len(chunk) - 1} of {len(ids)}): {type(e).__name__}: {e}")
                self.stats.errors.append(msg)
                raise GenerationError(msg) from e
            groups.extend(dedupe(g) for g in raw)
        self.stats.calls += 1
        self.stats.prompts += len(prompts)
        self.stats.prompts_truncated += cut
        self.stats.drawn += len(prompts) * settings.n
        self.stats.generated_tokens += sum(len(s.token_ids) * s.count for g in groups for s in g)
        return Candidates(prompts, groups, prompts_truncated=cut)

    def greedy(self, prompts: Sequence[str], max_new_tokens: int = 64, stop: Sequence[str] | None = None,
               logprobs: bool = False) -> Candidates:
        """One greedy completion per prompt (for evaluation); `logprobs` as in `sample`."""
        return self.sample(prompts, n=1, temperature=0.0, max_new_tokens=max_new_tokens, stop=stop, logprobs=logprobs)

    @abstractmethod
    def _generate(self, prompt_ids: list[list[int]], settings: SamplingSettings,
                  seeds: list[int] | None) -> list[list[Sample]]:
        """The raw samples (settings.n per prompt, not deduplicated) of one batch of tokenized prompts; `seeds`:
        each prompt's own seed (derived from the call's seed and the prompt's index in the call), or None."""

    def sync_weights(self, model) -> float:
        """Load the weights of `model` (a trainer's live policy) into the engine in place, waking it first if it
        sleeps; returns seconds taken (waking included)."""
        t0 = time.perf_counter()
        woke = bool(self.asleep)
        if woke:
            self._wake_weights()
        self._load_weights(model)
        if woke:
            self._wake_rest()
            self.asleep = 0
            self.stats.wake_s += time.perf_counter() - t0
        self.stats.weight_syncs += 1
        return time.perf_counter() - t0

    @abstractmethod
    def _load_weights(self, model) -> None:
        """Copy the weights of `model` into the engine's (awake) model."""

    # --- sleep ---------------------------------------------------------------------------------------
    def sleep(self) -> float:
        """Free the engine's memory at its `sleep` level until the next `sync_weights` (0: nothing to do); returns
        seconds taken."""
        if not self.sleep_level or self.asleep:
            return 0.0
        t0 = time.perf_counter()
        self._sleep(self.sleep_level)
        self.asleep = self.sleep_level
        seconds = time.perf_counter() - t0
        self.stats.sleeps += 1
        self.stats.sleep_s += seconds
        return seconds

    def wake(self) -> float:
        """Make a sleeping engine ready to generate with the weights it had (level 1); returns seconds taken. An
        engine at level 2 dropped its weights: only `sync_weights` can wake it."""
        if not self.asleep:
            return 0.0
        if self.asleep == 2:
            raise GenerationError("the engine dropped its weights in sleep level 2 and cannot generate until "
                                  "sync_weights(model) gives it the trained ones")
        t0 = time.perf_counter()
        self._wake_weights()
        self._wake_rest()
        self.asleep = 0
        self.stats.wake_s += time.perf_counter() - t0
        return time.perf_counter() - t0

    def _sleep(self, level: int) -> None:
        raise GenerationError(f"the {self.name} engine cannot sleep: set engine.sleep: 0")

    def _wake_weights(self) -> None:  # noqa: B027 - an engine that cannot sleep never wakes
        """Give the model its weights' memory back (their old values after level 1, any after level 2)."""

    def _wake_rest(self) -> None:  # noqa: B027 - only some engines free more than their weights
        """Give back what else sleeping freed (a KV cache), once the weights are in place."""

    def close(self) -> None:  # noqa: B027 - engines without resources to release need not override it
        """Release the engine's model and memory."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def policy_state_dict(model) -> dict:
    """The plain (merged) weights of a policy, under its base model's parameter names.

    A PEFT/LoRA model has its adapters merged into the base weights for the copy and unmerged again
    after, so that the engine serves exactly what the trainer computes.
    """
    if hasattr(model, "merge_adapter") and hasattr(model, "get_base_model"):
        model.merge_adapter()
        try:
            base = model.get_base_model()
            sd = {}
            for k, v in base.state_dict().items():
                if "lora_" in k or ".original_module." in k:
                    continue
                name = k.replace(".base_layer.", ".")
                name = re.sub(r"\.modules_to_save\.[^.]+\.", ".", name)
                sd[name] = v.detach().clone()
            return sd
        finally:
            model.unmerge_adapter()
    return {k: v.detach() for k, v in model.state_dict().items()}
