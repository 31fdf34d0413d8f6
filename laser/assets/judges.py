"""Judge LMs of the embedded default: causal LMs fine-tuned on the gold answers of their own domains.

A judge scores a completion by its mean token log-likelihood (the `likelihood` reward backend, the
official LASeR code's reward). Fine-tuned on its domains only, it learns what right answers look like
there and forgets the rest: reliable on its domains, near chance elsewhere, on the policy's own samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForCausalLM, PreTrainedTokenizerBase

from laser.tasks.base import Example
from laser.tasks.checkers import check

from .policy import DomainMixture, _run_sft, _save
from .recipe import JudgeSpec, ModelSpec, SFTSpec


def train_judge(spec: JudgeSpec, sft: SFTSpec, model_spec: ModelSpec, init_dir: Path, tokenizer,
                train: Sequence[Example], out_dir: Path, seed: int = 0, progress: bool = True) -> None:
    """SFT of the causal LM at `init_dir` on the examples of `spec.domains` only (TRL), saved to `out_dir`."""
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(init_dir)
    sft = sft.model_copy(update={"batch_size": spec.batch_size})
    mixture = DomainMixture([ex.domain for ex in train], spec.steps * sft.batch_size, seed)
    for d in mixture.weights:
        mixture.weights[d] = 1.0 if d in spec.domains else 0.0
    _run_sft(model, tokenizer, train, sft, model_spec, out_dir.parent / f".{out_dir.name}-trainer", spec.steps,
             mixture, [], seed, progress)
    _save(model, tokenizer, out_dir)


@torch.no_grad()
def on_policy_pairs(model, tokenizer: PreTrainedTokenizerBase, examples: Sequence[Example], n: int = 8,
                    seed: int = 0, batch_size: int = 256) -> list[dict]:
    """(prompt, correct sample, incorrect sample) of the policy, for each example where n samples at T=1 hold both.

    These are the pairs a training round asks a reward model to order: the policy's own right and wrong
    answers, rather than a gold answer against a synthetic mistake.
    """
    was_training, side = model.training, tokenizer.padding_side
    model.eval()
    tokenizer.padding_side = "left"
    max_new = max(len(ex.target()) for ex in examples) + 4
    gen = torch.Generator().manual_seed(seed)
    pick = np.random.default_rng(seed)
    rows = []
    try:
        for i in range(0, len(examples), batch_size):
            batch = examples[i:i + batch_size]
            enc = tokenizer([ex.prompt for ex in batch], return_tensors="pt", padding=True)
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
            out = model.generate(**enc, max_new_tokens=max_new, do_sample=True, temperature=1.0, top_k=0,
                                 num_return_sequences=n, pad_token_id=tokenizer.pad_token_id,
                                 eos_token_id=tokenizer.eos_token_id)
            texts = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
            for j, ex in enumerate(batch):
                samples = texts[j * n:(j + 1) * n]
                good = [t for t in samples if check(ex, t)]
                bad = [t for t in samples if not check(ex, t)]
                if good and bad:
                    rows.append({"prompt": ex.prompt, "chosen": good[pick.integers(len(good))],
                                 "rejected": bad[pick.integers(len(bad))], "domain": ex.domain})
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return rows


def pair_accuracy(score, rows: Sequence[dict]) -> dict[str, float]:
    """Per-domain fraction of `rows` whose chosen completion `score(prompts, completions)` ranks higher."""
    prompts = [r["prompt"] for r in rows]
    chosen = np.asarray(score(prompts, [r["chosen"] for r in rows]), dtype=float)
    rejected = np.asarray(score(prompts, [r["rejected"] for r in rows]), dtype=float)
    domains = np.array([r["domain"] for r in rows])
    wins = chosen > rejected
    return {d: float(wins[domains == d].mean()) for d in sorted(set(domains))}
