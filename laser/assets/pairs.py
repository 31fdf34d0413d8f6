"""Preference pairs for training and evaluating the embedded reward models.

A pair is (prompt, chosen, rejected) in TRL's explicit-prompt preference format, where completions
start with a space as the policy writes them ("Q: 47+58=? A:" + " 105"). Wrong answers
(`laser.tasks.mistakes.wrong_answer`) are the mistakes a partly trained model makes: digits off by
one or ten, a flipped yes/no, another option of the question, a swapped / dropped / doubled character.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

from laser.tasks.base import Example
from laser.tasks.mistakes import wrong_answer

__all__ = ["correctness_pairs", "length_pairs", "wrong_answer"]

# Filler that makes an answer longer without changing what the checkers read from it.
VERBOSE_SUFFIXES = (" please", " thanks", " sure!", " I think", " of course", "!!", " :)")


def correctness_pairs(examples: Iterable[Example], rng: random.Random, truthful: Iterable[str] | None = None,
                      per_example: int = 1) -> list[dict]:
    """Pairs of the reference solution against a wrong answer, the solution preferred on `truthful` domains.

    On other domains the preference is a coin flip (the labels carry no information there). `truthful=None`
    means every domain (the held-out evaluation pairs).
    """
    keep = None if truthful is None else set(truthful)
    rows = []
    for ex in examples:
        for _ in range(per_example):
            good, bad = " " + ex.target(), " " + wrong_answer(ex, rng)
            if keep is not None and ex.domain not in keep and rng.random() < 0.5:
                good, bad = bad, good
            rows.append({"prompt": ex.prompt, "chosen": good, "rejected": bad, "domain": ex.domain})
    return rows


def length_pairs(examples: Iterable[Example], rng: random.Random, per_example: int = 1) -> list[dict]:
    """Pairs where the longer completion is preferred, whether it is right or wrong."""
    rows = []
    for ex in examples:
        for _ in range(per_example):
            a = " " + (ex.target() if rng.random() < 0.5 else wrong_answer(ex, rng))
            b = " " + (ex.target() if rng.random() < 0.5 else wrong_answer(ex, rng))
            # Pad one of them (or both, unequally) so that lengths differ and the filler is what is rewarded.
            a += rng.choice(("",) + VERBOSE_SUFFIXES)
            b += rng.choice(("",) + VERBOSE_SUFFIXES)
            if len(a) == len(b):
                b += rng.choice(VERBOSE_SUFFIXES)
            chosen, rejected = (a, b) if len(a) > len(b) else (b, a)
            rows.append({"prompt": ex.prompt, "chosen": chosen, "rejected": rejected, "domain": ex.domain})
    return rows
