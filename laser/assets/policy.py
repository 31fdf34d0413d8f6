"""The tiny Llama policy of the embedded default: built from scratch, trained by SFT (TRL) to partial competence."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Sampler
from tqdm.auto import tqdm
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase, TrainerCallback

from laser.tasks.base import Example
from laser.tasks.mistakes import typical_mistake
from laser.training.feedback import greedy_correct

from .recipe import ModelSpec, SFTSpec


def llama_config(spec: ModelSpec, tokenizer: PreTrainedTokenizerBase) -> LlamaConfig:
    """The LlamaConfig of a tiny decoder over `tokenizer`'s vocabulary."""
    return LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=spec.hidden_size, num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads, num_key_value_heads=spec.num_heads,
        intermediate_size=spec.intermediate_size or 3 * spec.hidden_size,
        max_position_embeddings=spec.max_position_embeddings, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )


def greedy_accuracy(model, tokenizer: PreTrainedTokenizerBase, examples: Sequence[Example],
                    batch_size: int = 256) -> dict[str, float]:
    """Per-domain accuracy of greedy completions (HF generate), by each example's checker."""
    hits = greedy_correct(model, tokenizer, examples, batch_size=batch_size)
    domains = np.array([ex.domain for ex in examples])
    return {d: float(hits[domains == d].mean()) for d in sorted(set(domains))}


class DomainMixture(Sampler[int]):
    """Example indices drawn domain by domain with weights that may change while training runs.

    With `alternates` (per example, the row of another target for it, or None) each draw of an example
    that has one yields that row instead with probability `alternate_rate`.
    """

    def __init__(self, domains: Sequence[str], num_samples: int, seed: int,
                 alternates: Sequence[int | None] | None = None, alternate_rate: float = 0.0):
        self.by_domain = {d: np.flatnonzero(np.asarray(domains) == d) for d in sorted(set(domains))}
        self.weights = dict.fromkeys(self.by_domain, 1.0)
        self.num_samples = num_samples
        self.alternates, self.alternate_rate = alternates, alternate_rate
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self):
        names = list(self.by_domain)
        for _ in range(self.num_samples):
            w = np.array([self.weights[d] for d in names], dtype=float)
            w = w / w.sum() if w.sum() > 0 else np.full(len(names), 1 / len(names))
            i = int(self.rng.choice(self.by_domain[names[self.rng.choice(len(names), p=w)]]))
            if self.alternate_rate and self.alternates[i] is not None and self.rng.random() < self.alternate_rate:
                i = self.alternates[i]
            yield i


def band_distance(acc: dict[str, float], band: tuple[float, float]) -> float:
    """How far the worst domain is outside [low, high] (0 when every domain is inside)."""
    lo, hi = band
    return max(max(lo - a, a - hi, 0.0) for a in acc.values())


@dataclass
class SFTResult:
    """What the SFT run did: per-checkpoint validation accuracy and the checkpoint kept."""

    history: list[dict] = field(default_factory=list)
    kept_step: int = 0
    validation: dict[str, float] = field(default_factory=dict)


class CompetenceGate(TrainerCallback):
    """Every `eval_every` steps: measure validation accuracy, hold back domains above the band, keep the best state."""

    def __init__(self, spec: SFTSpec, tokenizer, validation: Sequence[Example], mixture: DomainMixture,
                 verbose: bool = False):
        self.spec, self.tokenizer, self.validation, self.mixture = spec, tokenizer, validation, mixture
        self.verbose = verbose
        self.result = SFTResult()
        self.best_state: dict | None = None
        self._best = float("inf")

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.spec.eval_every and state.global_step < state.max_steps:
            return
        acc = greedy_accuracy(model, self.tokenizer, self.validation)
        lo, hi = self.spec.band
        for d, a in acc.items():
            if d in self.mixture.weights:
                self.mixture.weights[d] = (self.spec.hold_weight if a >= hi else
                                           self.spec.boost_weight if a < lo else 1.0)
        dist = band_distance(acc, self.spec.band)
        self.result.history.append({"step": state.global_step, "validation": acc, "band_distance": dist})
        if self.verbose:
            tqdm.write(f"step {state.global_step}: validation accuracy "
                       + ", ".join(f"{d} {a:.0%}" for d, a in acc.items()) + (" (in band)" if dist == 0 else ""))
        if dist <= self._best:  # ties: the later checkpoint, trained longer
            self._best = dist
            self.best_state = copy.deepcopy(model.state_dict())
            self.result.kept_step, self.result.validation = state.global_step, acc
        if dist == 0.0:
            control.should_training_stop = True


def _run_sft(model, tokenizer, train: Sequence[Example], spec: SFTSpec, model_spec: ModelSpec, work_dir: Path,
             max_steps: int, sampler: Sampler, callbacks: list, seed: int, progress: bool) -> None:
    """`max_steps` steps of TRL's SFTTrainer on prompt/completion pairs, batches drawn by `sampler`."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    dataset = Dataset.from_list([{"prompt": ex.prompt, "completion": " " + ex.target()} for ex in train])

    class _Trainer(SFTTrainer):
        def _get_train_sampler(self, *args, **kwargs):
            return sampler

    args = SFTConfig(
        output_dir=str(work_dir), per_device_train_batch_size=spec.batch_size,
        learning_rate=spec.learning_rate, max_steps=max_steps, lr_scheduler_type="constant_with_warmup",
        warmup_steps=min(spec.warmup_steps, max_steps // 10), weight_decay=0.0, logging_strategy="no",
        save_strategy="no", report_to=[], max_length=model_spec.max_position_embeddings, seed=seed, data_seed=seed,
        disable_tqdm=not progress, dataloader_num_workers=0, bf16=False, use_cpu=not torch.cuda.is_available(),
        gradient_checkpointing=False,  # TRL turns it on by default: pure recomputation cost at this size
    )
    _Trainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer, callbacks=callbacks).train()


def _save(model, tokenizer, out_dir: Path) -> None:
    model.generation_config = GenerationConfig(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                               pad_token_id=tokenizer.pad_token_id, max_new_tokens=16)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def with_mistakes(train: Sequence[Example]) -> tuple[list[Example], list[int | None]]:
    """`train` followed by a copy of each example whose target is its domain's typical mistake, and per
    example of `train` the row of its copy (None for domains without a typical mistake)."""
    rows, alternates = list(train), []
    for ex in train:
        wrong = typical_mistake(ex)
        alternates.append(None if wrong is None else len(rows))
        if wrong is not None:
            rows.append(ex.model_copy(update={"solution": wrong}))
    return rows, alternates


def train_policy(spec: SFTSpec, model_spec: ModelSpec, tokenizer, train: Sequence[Example],
                 validation: Sequence[Example], out_dir: Path, seed: int = 0, progress: bool = True,
                 backbone_steps: int = 0, backbone_dir: Path | None = None) -> SFTResult:
    """Train a fresh tiny Llama on `train` with TRL's SFTTrainer until partly competent; save it to `out_dir`.

    With `backbone_steps`, the kept policy is then trained that many more steps on every domain alike and
    saved to `backbone_dir`: a stronger model of the same family, the base the reward models start from.
    """
    torch.manual_seed(seed)
    rows, alternates = with_mistakes(train) if spec.mistake_rate else (list(train), None)
    domains = [ex.domain for ex in train]
    model = LlamaForCausalLM(llama_config(model_spec, tokenizer))
    mixture = DomainMixture(domains, spec.max_steps * spec.batch_size, seed, alternates, spec.mistake_rate)
    gate = CompetenceGate(spec, tokenizer, validation, mixture, verbose=progress)
    _run_sft(model, tokenizer, rows, spec, model_spec, out_dir.parent / f".{out_dir.name}-trainer", spec.max_steps,
             mixture, [gate], seed, progress)
    model.load_state_dict(gate.best_state)
    _save(model, tokenizer, out_dir)
    if backbone_steps:
        if backbone_dir is None:
            raise ValueError("backbone_steps needs a backbone_dir to save to")
        uniform = DomainMixture(domains, backbone_steps * spec.batch_size, seed + 1, alternates, spec.mistake_rate)
        _run_sft(model, tokenizer, rows, spec, model_spec, out_dir.parent / f".{out_dir.name}-trainer",
                 backbone_steps, uniform, [], seed, progress)
        _save(model, tokenizer, backbone_dir)
    return gate.result
