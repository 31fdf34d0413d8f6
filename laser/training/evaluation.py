"""Test accuracy of the policy an engine serves, by a run's `eval` settings (what every run and soup reports)."""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Sequence

import numpy as np

from laser.config import EvalSettings
from laser.generation import GenerationEngine, Sample
from laser.streams import Streams
from laser.tasks.base import Example
from laser.tasks.checkers import check

log = logging.getLogger(__name__)


def eval_seed(seed: int, round: int) -> int:
    """The sampling seed of the evaluation a run of `seed` makes at `round` (used when `eval.temperature` > 0)."""
    return Streams(seed).seed_for("evaluation", round)


def evaluate_accuracy(engine: GenerationEngine, examples: Sequence[Example], evaluation: EvalSettings,
                  max_new_tokens: int, seed: int = 0) -> tuple[dict[str, float], dict[str, int]]:
    """(accuracy per domain, answers cut off by the length limit per domain) of the engine's answers to
    `examples`: greedy (or one sample seeded by `seed` at `evaluation.temperature`), one engine call per
    answer length, each answer judged by the example's checker or `evaluation.checker`."""
    examples = list(examples)
    by_length: dict[int, list[int]] = defaultdict(list)  # one engine call per answer length
    for i, ex in enumerate(examples):
        by_length[evaluation.tokens_for(ex.domain, max_new_tokens)].append(i)
    answers: list[Sample | None] = [None] * len(examples)
    for tokens, idx in sorted(by_length.items()):
        prompts = [examples[i].prompt for i in idx]
        out = engine.greedy(prompts, max_new_tokens=tokens) if evaluation.temperature == 0 else \
            engine.sample(prompts, n=1, temperature=evaluation.temperature, max_new_tokens=tokens, seed=seed)
        for i, group in zip(idx, out.samples, strict=True):
            answers[i] = max(group, key=lambda s: s.count)
    hits: dict[str, list[bool]] = defaultdict(list)
    cut: Counter = Counter()
    for ex, answer in zip(examples, answers, strict=True):
        judged = ex if evaluation.checker is None else ex.model_copy(update={"answer_format": evaluation.checker})
        hits[ex.domain].append(check(judged, answer.text))
        cut[ex.domain] += answer.finish_reason == "length"
    acc = {d: float(np.mean(v)) for d, v in sorted(hits.items())}
    if sum(cut.values()):
        log.warning("evaluation: %d of %d answers reached the length limit and were judged cut off (%s); "
                    "raise eval.max_new_tokens if answers are longer", sum(cut.values()), len(examples),
                    ", ".join(f"{d} {c}" for d, c in sorted(cut.items()) if c))
    return acc, {d: int(cut[d]) for d in acc}
