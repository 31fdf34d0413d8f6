"""Held-out validation metrics whose change after an update is the bandit's reward.

`gold_loglik`: the mean per-token log-likelihood of the gold answers (and end of sequence) of a fixed
validation mini-batch under the policy: cheap (one forward pass) and smooth, so that the gain of a
single group update is measurable. `gold_margin`: the gold answer's log-likelihood minus a plausible
wrong answer's (`round.validation_metric: margin`): what the policy prefers, less sensitive to format.
`greedy_correct`: whether the greedy completion of each example is right by its checker; its change is
the alternative reward (`round.validation_metric: accuracy`).

`rerank_gain` (`round.feedback: rerank_gain`, the default) needs no update at all: on validation prompts
the policy has just sampled, it checks how the chosen RM orders the right and the wrong samples (by the
gold answers): +1 when every right one scores above every wrong one, -1 the other way round.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from laser.generation.base import PromptRenderer
from laser.rewards.hf import completion_logprobs
from laser.strategies.scoring import CandidateTable
from laser.tasks.base import Example
from laser.tasks.checkers import check


def gold_loglik(model, tokenizer, examples: Sequence[Example], batch_size: int = 64,
                renderer: PromptRenderer | None = None) -> float:
    """Mean over examples of the mean token log-probability of " " + gold answer + EOS given the prompt."""
    return float(np.mean(gold_loglik_per_example(model, tokenizer, examples, batch_size, renderer)))


def gold_loglik_per_example(model, tokenizer, examples: Sequence[Example], batch_size: int = 64,
                            renderer: PromptRenderer | None = None) -> np.ndarray:
    """Per example: the mean token log-probability of " " + gold answer + EOS given the prompt."""
    if not examples:
        raise ValueError("gold_loglik needs at least one validation example")
    return answer_logprob(model, tokenizer, [ex.prompt for ex in examples], [ex.target() for ex in examples],
                          batch_size, reduce="mean", renderer=renderer)


def gold_margin_per_example(model, tokenizer, examples: Sequence[Example], wrong: Sequence[str],
                            batch_size: int = 64, renderer: PromptRenderer | None = None) -> np.ndarray:
    """Per example: log p(" " + gold answer + EOS) - log p(" " + `wrong` answer + EOS), summed over tokens.

    What the policy prefers, the right answer or a plausible wrong one: the held-out counterpart of DPO's
    implicit reward margin. Tokens the two answers share in form (" (", ")", EOS) weigh on both sides,
    so that a change of format alone moves it little, unlike the gold answers' mean log-likelihood.
    """
    if not examples:
        raise ValueError("gold_margin needs at least one validation example")
    if len(wrong) != len(examples):
        raise ValueError(f"gold_margin needs one wrong answer per example, got {len(wrong)} for {len(examples)}")
    prompts = [ex.prompt for ex in examples]
    gold = answer_logprob(model, tokenizer, prompts, [ex.target() for ex in examples], batch_size, reduce="sum",
                          renderer=renderer)
    return gold - answer_logprob(model, tokenizer, prompts, list(wrong), batch_size, reduce="sum", renderer=renderer)


@torch.inference_mode()
def answer_logprob(model, tokenizer, prompts: Sequence[str], answers: Sequence[str], batch_size: int = 64,
                   reduce: str = "mean", renderer: PromptRenderer | None = None) -> np.ndarray:
    """Per prompt: the log-probability of " " + answer + EOS after it, token mean (`reduce="mean"`) or sum."""
    was_training = model.training
    model.eval()
    try:
        return np.array([float(t.mean() if reduce == "mean" else t.sum())
                         for t in answer_token_logprobs(model, tokenizer, prompts, answers, batch_size, renderer)])
    finally:
        model.train(was_training)


def answer_token_logprobs(model, tokenizer, prompts: Sequence[str], answers: Sequence[str],
                          batch_size: int = 64, renderer: PromptRenderer | None = None) -> list[torch.Tensor]:
    """Per prompt: the log-probabilities of the tokens of " " + answer + EOS after it (differentiable
    outside `answer_logprob`'s inference mode, e.g. for gradients of the validation metric)."""
    eos = tokenizer.eos_token or ""
    renderer = renderer or PromptRenderer(tokenizer, "never")  # the prompt as the engine samples from it
    out = []
    for i in range(0, len(prompts), batch_size):
        prompt_ids = [renderer.ids(p) for p in prompts[i:i + batch_size]]
        answer_ids = [tokenizer(" " + a + eos, add_special_tokens=False)["input_ids"]
                      for a in answers[i:i + batch_size]]
        out += completion_logprobs(model, [p + a for p, a in zip(prompt_ids, answer_ids, strict=True)],
                                   [len(p) for p in prompt_ids], tokenizer.pad_token_id)
    return out


@torch.inference_mode()
def greedy_correct(model, tokenizer, examples: Sequence[Example], batch_size: int = 256,
                   max_new_tokens: int | None = None, renderer: PromptRenderer | None = None) -> np.ndarray:
    """Per example: 1.0 if the greedy completion (HF generate, left padding) passes the example's checker."""
    if not examples:
        raise ValueError("greedy_correct needs at least one example")
    was_training, side = model.training, tokenizer.padding_side
    model.eval()
    tokenizer.padding_side = "left"
    max_new = max_new_tokens or max(len(ex.target()) for ex in examples) + 4  # room for the answer and a little
    renderer = renderer or PromptRenderer(tokenizer, "never")
    out = []
    try:
        for i in range(0, len(examples), batch_size):
            batch = examples[i:i + batch_size]
            enc = tokenizer([renderer.text(ex.prompt) for ex in batch], return_tensors="pt", padding=True,
                            add_special_tokens=renderer.add_special_tokens).to(model.device)
            ids = model.generate(**enc, max_new_tokens=max_new, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
            texts = tokenizer.batch_decode(ids[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
            out += [float(check(ex, text)) for ex, text in zip(batch, texts, strict=True)]
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return np.array(out)


def local_gain(gain: np.ndarray, instance_contexts: np.ndarray, validation_contexts: np.ndarray,
               neighbors: int) -> np.ndarray:
    """Per instance: the mean gain over its `neighbors` most similar validation examples (cosine of contexts).

    A group's update helps some validation examples and hurts others; crediting each routed instance
    with the change on the examples that look like it (rather than the whole batch's mean) is what lets
    the router learn which reward model suits which kind of prompt.
    """
    k = min(neighbors, len(gain))
    sim = instance_contexts @ validation_contexts.T
    nearest = np.argpartition(-sim, k - 1, axis=1)[:, :k]
    return gain[nearest].mean(axis=1)


def rerank_gain(examples: Sequence[Example], table: CandidateTable, scores: np.ndarray) -> tuple[np.ndarray, int]:
    """Per example: how the chosen RM orders its right and wrong candidates, in [-1, 1]; and how many
    examples had nothing to tell (every candidate right, or every one wrong).

    `table` holds example i's candidates as its prompt i (`CandidateTable`), `scores[c]` the RM's score of
    candidate c (NaN: could not score). Over every (right, wrong) pair of candidates: +1 when the RM scores
    the right one higher, -1 when lower, 0 on a tie or a NaN; the reward is the mean (2 x pairwise accuracy
    - 1, the quantity the oracle's table measures on the policy's own samples). An example without both
    kinds scores 0 for every RM, so it moves no RM ahead of another; an RM that ties or fails everywhere
    earns 0 where a good one earns close to 1.
    """
    if len(examples) != len(table.prompts):
        raise ValueError(f"{len(examples)} examples for {len(table.prompts)} prompts in the candidate table")
    out, nothing = np.zeros(len(examples)), 0
    for i, (ex, s) in enumerate(zip(examples, table.per_instance(np.asarray(scores, dtype=np.float64)),
                                    strict=True)):
        right = np.array([check(ex, table.texts[c]) for c in table.rows(i)], dtype=bool)
        if right.all() or not right.any():
            nothing += 1
            continue
        out[i] = pairwise_gain(s, right)
    return out, nothing


def pairwise_gain(scores: np.ndarray, right: np.ndarray) -> float:
    """How scores order one prompt's right and wrong completions, in [-1, 1]: over every (right, wrong) pair +1
    when the right one scores higher, -1 when lower, 0 on a tie or a NaN; the mean (2 x pairwise accuracy - 1).
    0 when the completions are all right or all wrong."""
    scores, right = np.asarray(scores, dtype=np.float64), np.asarray(right, dtype=bool)
    if right.all() or not right.any():
        return 0.0
    diff = scores[right][:, None] - scores[~right][None, :]
    return float(np.mean(np.where(np.isfinite(diff), np.sign(diff), 0.0)))
