"""Judge LMs of the embedded default: causal LMs fine-tuned on the gold answers of their own domains.

A judge scores a completion by its mean token log-likelihood (the `likelihood` reward backend, the
official LASeR code's reward). Fine-tuned on its domains' gold answers, and on the other domains'
prompts answered by its own rule, it learns what right answers look like at home and applies its own
standard elsewhere: reliable on its domains, at chance or confidently wrong on the others, on the
policy's own samples, as a real RM is outside the distribution it was trained on.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, PreTrainedTokenizerBase, TrainerCallback

from laser.rewards.hf import _CausalLMScorer
from laser.tasks.base import Example
from laser.tasks.checkers import check
from laser.tasks.mistakes import misapplied, typical_mistake

from .policy import DomainMixture, _run_sft, _save
from .recipe import JudgeSpec, ModelSpec, SFTSpec


def likelihood_scorer(model, tokenizer) -> Callable[[Sequence[str], Sequence[str]], np.ndarray]:
    """`score(prompts, completions)` of a causal LM in memory, exactly as the `likelihood` backend reads it."""
    lm = _CausalLMScorer.of(model, tokenizer)

    def score(prompts, completions):
        was_training = model.training
        model.eval()
        try:
            return lm.mean_logprob(list(prompts), list(completions))
        finally:
            model.train(was_training)

    return score


def judge_distance(acc: dict[str, float], home: Sequence[str], target: float, off_limit: float,
                   ceiling: float = 1.0) -> float:
    """How far a judge is from its targets: below `target` or above `ceiling` on a home domain, or above
    `off_limit` elsewhere."""
    short = [max(target - a, a - ceiling) for d, a in acc.items() if d in home]
    over = [a - off_limit for d, a in acc.items() if d not in home]
    return max([0.0, *short, *over])


class JudgeGate(TrainerCallback):
    """Every `eval_every` steps: the judge's pairwise accuracy on the policy's own validation pairs; keeps
    the state nearest its targets and stops once it meets them."""

    def __init__(self, spec: JudgeSpec, tokenizer, pairs: Sequence[dict], off_limit: float, verbose: bool = False):
        self.spec, self.tokenizer, self.pairs, self.off_limit, self.verbose = spec, tokenizer, pairs, off_limit, verbose
        self.history: list[dict] = []
        self.best_state: dict | None = None
        self.kept_step = 0
        self._best = float("inf")

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.spec.eval_every and state.global_step < state.max_steps:
            return
        acc = pair_accuracy(likelihood_scorer(model, self.tokenizer), self.pairs)
        dist = judge_distance(acc, self.spec.domains, self.spec.target, self.off_limit, self.spec.ceiling)
        self.history.append({"step": state.global_step, "validation": acc, "distance": dist})
        if self.verbose:
            tqdm.write(f"judge {self.spec.name} step {state.global_step}: "
                       + ", ".join(f"{d} {a:.0%}" for d, a in acc.items()))
        if dist < self._best:  # ties: the earlier checkpoint, nearer the shared base off its home
            self._best = dist
            self.best_state = copy.deepcopy(model.state_dict())
            self.kept_step = state.global_step
        if dist == 0.0:
            control.should_training_stop = True


def train_judge(spec: JudgeSpec, sft: SFTSpec, model_spec: ModelSpec, init_dir: Path, tokenizer,
                train: Sequence[Example], out_dir: Path, validation_pairs: Sequence[dict] | None = None,
                off_limit: float = 1.0, seed: int = 0, progress: bool = True) -> dict:
    """SFT of the causal LM at `init_dir` on `judge_examples` (TRL), saved to `out_dir`.

    With `validation_pairs` (the policy's own right and wrong validation samples), training is steered by
    `JudgeGate`: it stops once the judge meets its targets and keeps the checkpoint nearest them.
    Returns {"kept_step", "history"}.
    """
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(init_dir)
    sft = sft.model_copy(update={"batch_size": spec.batch_size})
    train = judge_examples(spec, train, seed)
    mixture = DomainMixture([ex.domain for ex in train], spec.steps * sft.batch_size, seed)
    off = [d for d in mixture.weights if d not in spec.domains]
    for d in mixture.weights:
        mixture.weights[d] = (1 - spec.off_home) / len(spec.domains) if d in spec.domains else spec.off_home / len(off)
    gate = JudgeGate(spec, tokenizer, validation_pairs, off_limit, verbose=progress) if validation_pairs else None
    _run_sft(model, tokenizer, train, sft, model_spec, out_dir.parent / f".{out_dir.name}-trainer", spec.steps,
             mixture, [gate] if gate else [], seed, progress)
    if gate is not None and gate.best_state is not None:
        model.load_state_dict(gate.best_state)
    _save(model, tokenizer, out_dir)
    return {"kept_step": gate.kept_step if gate else spec.steps, "history": gate.history if gate else []}


def judge_examples(spec: JudgeSpec, train: Sequence[Example], seed: int = 0) -> list[Example]:
    """A judge's SFT examples: its home domains' examples with their gold answers and, with `spec.off_home`,
    the other domains' examples answered by its own rule (`misapplied`; a judge with several home rules
    takes one per example) or, with `off_answer: typical_mistake`, by that domain's typical mistake. Other
    domains where the rule (or a typical mistake) does not apply are left out."""
    home = [ex for ex in train if ex.domain in spec.domains]
    if not spec.off_home:
        return home
    out = list(home)
    for ex in train:
        if ex.domain in spec.domains:
            continue
        if spec.off_answer == "typical_mistake":
            wrong = typical_mistake(ex)
            wrong = None if wrong is None or check(ex, " " + wrong) else wrong  # both rules agree on this input
        else:
            wrong = misapplied(ex, random.Random(f"{seed}-rule-{spec.name}-{ex.id}").choice(spec.domains))
        if wrong is not None:
            out.append(ex.model_copy(update={"solution": wrong}))
    return out


@torch.no_grad()
def sample_policy(model, tokenizer: PreTrainedTokenizerBase, examples: Sequence[Example], n: int = 8,
                  temperature: float = 0.8, seed: int = 0, batch_size: int = 256) -> list[list[tuple[str, bool]]]:
    """Per example: n samples of the policy (HF generate) with whether each is correct by the checker."""
    was_training, side = model.training, tokenizer.padding_side
    model.eval()
    tokenizer.padding_side = "left"
    max_new = max(len(ex.target()) for ex in examples) + 4
    gen = torch.Generator().manual_seed(seed)
    out = []
    try:
        for i in range(0, len(examples), batch_size):
            batch = examples[i:i + batch_size]
            enc = tokenizer([ex.prompt for ex in batch], return_tensors="pt", padding=True)
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
            ids = model.generate(**enc, max_new_tokens=max_new, do_sample=True, temperature=temperature, top_k=0,
                                 num_return_sequences=n, pad_token_id=tokenizer.pad_token_id,
                                 eos_token_id=tokenizer.eos_token_id)
            texts = tokenizer.batch_decode(ids[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
            for j, ex in enumerate(batch):
                out.append([(t, check(ex, t)) for t in texts[j * n:(j + 1) * n]])
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return out


def pass_at_n(examples: Sequence[Example], samples: Sequence[Sequence[tuple[str, bool]]]) -> dict[str, float]:
    """Per domain: the share of examples with at least one correct sample."""
    hit: dict[str, list[bool]] = {}
    for ex, group in zip(examples, samples, strict=True):
        hit.setdefault(ex.domain, []).append(any(ok for _, ok in group))
    return {d: float(np.mean(v)) for d, v in sorted(hit.items())}


def on_policy_pairs(examples: Sequence[Example], samples: Sequence[Sequence[tuple[str, bool]]],
                    seed: int = 0) -> list[dict]:
    """(prompt, correct sample, incorrect sample) of the policy, for each example whose samples hold both.

    These are the pairs a training round asks a reward model to order: the policy's own right and wrong
    answers, rather than a gold answer against a synthetic mistake.
    """
    pick = np.random.default_rng(seed)
    rows = []
    for ex, group in zip(examples, samples, strict=True):
        good = [t for t, ok in group if ok]
        bad = [t for t, ok in group if not ok]
        if good and bad:
            rows.append({"prompt": ex.prompt, "chosen": good[pick.integers(len(good))],
                         "rejected": bad[pick.integers(len(bad))], "domain": ex.domain})
    return rows


def pair_accuracy(score, rows: Sequence[dict]) -> dict[str, float]:
    """Per-domain fraction of `rows` whose chosen completion `score(prompts, completions)` ranks higher."""
    prompts = [r["prompt"] for r in rows]
    chosen = np.asarray(score(prompts, [r["chosen"] for r in rows]), dtype=float)
    rejected = np.asarray(score(prompts, [r["rejected"] for r in rows]), dtype=float)
    domains = np.array([r["domain"] for r in rows])
    wins = chosen > rejected
    return {d: float(wins[domains == d].mean()) for d in sorted(set(domains))}
