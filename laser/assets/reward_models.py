"""Specialist reward models of the embedded default: Llama sequence classifiers trained with TRL's RewardTrainer."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, PreTrainedTokenizerBase

from laser.tasks.base import Example

from .pairs import correctness_pairs, length_pairs
from .recipe import RewardModelSpec, RMTrainingSpec


def training_pairs(spec: RewardModelSpec, training: RMTrainingSpec, train: Sequence[Example],
                   seed: int) -> list[dict]:
    """The preference pairs that make `spec` what it is (see `RewardModelSpec` and `RMTrainingSpec`)."""
    rng = random.Random(f"{seed}-{spec.name}")
    if spec.kind == "length":
        return length_pairs(train, rng, training.pairs_per_example)
    kept = [ex for ex in train if ex.domain in spec.domains or rng.random() < training.off_domain_fraction]
    return correctness_pairs(kept, rng, truthful=spec.domains, per_example=training.pairs_per_example)


@torch.no_grad()
def score(model, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], completions: Sequence[str],
          batch_size: int = 256) -> np.ndarray:
    """The reward of each prompt + completion, read at the end-of-sequence token as in training."""
    was_training = model.training
    model.eval()
    out = []
    try:
        for i in range(0, len(prompts), batch_size):
            texts = [p + c + tokenizer.eos_token for p, c in zip(prompts[i:i + batch_size],
                                                                  completions[i:i + batch_size], strict=True)]
            enc = tokenizer(texts, return_tensors="pt", padding=True).to(model.device)
            out.append(model(**enc).logits[:, 0].float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.float32)


def pairwise_accuracy(model, tokenizer: PreTrainedTokenizerBase, rows: Sequence[dict]) -> dict[str, float]:
    """Per-domain fraction of pairs whose chosen completion gets the higher reward."""
    prompts = [r["prompt"] for r in rows]
    chosen = score(model, tokenizer, prompts, [r["chosen"] for r in rows])
    rejected = score(model, tokenizer, prompts, [r["rejected"] for r in rows])
    domains = np.array([r["domain"] for r in rows])
    wins = chosen > rejected
    return {d: float(wins[domains == d].mean()) for d in sorted(set(domains))}


def train_reward_model(spec: RewardModelSpec, training: RMTrainingSpec, init_dir: Path, tokenizer,
                       train: Sequence[Example], out_dir: Path, max_length: int, seed: int = 0,
                       progress: bool = True):
    """Train one reward model from the weights at `init_dir` (a new one-output score head) and save it."""
    from datasets import Dataset
    from transformers.utils import logging as hf_logging
    from trl import RewardConfig, RewardTrainer

    torch.manual_seed(seed)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the new score head is "missing from the checkpoint" by design
    try:
        model = AutoModelForSequenceClassification.from_pretrained(init_dir, num_labels=1)
    finally:
        hf_logging.set_verbosity(verbosity)
    model.config.pad_token_id = tokenizer.pad_token_id
    rows = training_pairs(spec, training, train, seed)
    dataset = Dataset.from_list(rows).remove_columns("domain")
    args = RewardConfig(
        output_dir=str(out_dir.parent / f".{out_dir.name}-trainer"), per_device_train_batch_size=training.batch_size,
        learning_rate=training.learning_rate, max_steps=spec.steps or training.steps, lr_scheduler_type="cosine",
        warmup_steps=min(20, (spec.steps or training.steps) // 10), weight_decay=0.0, logging_strategy="no",
        save_strategy="no",
        report_to=[], max_length=max_length, seed=seed, data_seed=seed, disable_tqdm=not progress,
        center_rewards_coefficient=training.center_rewards_coefficient or None, dataloader_num_workers=0,
        bf16=False, use_cpu=not torch.cuda.is_available(),
        gradient_checkpointing=False,  # TRL turns it on by default: pure recomputation cost at this size
    )
    RewardTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer).train()
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return model
