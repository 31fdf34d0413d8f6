"""Preference pairs for training and evaluating the embedded reward models.

A pair is (prompt, chosen, rejected) in TRL's explicit-prompt preference format, where completions
start with a space as the policy writes them ("Q: 47+58=? A:" + " 105"). Wrong answers are the
mistakes a partly trained model makes: digits off by one or ten, a flipped yes/no, another option of
the question, a swapped / dropped / doubled character.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable

from laser.tasks.base import Example

_OPTION = re.compile(r"\(([A-D])\) (\S+)")
# Filler that makes an answer longer without changing what the checkers read from it.
VERBOSE_SUFFIXES = (" please", " thanks", " sure!", " I think", " of course", "!!", " :)")


def wrong_answer(example: Example, rng: random.Random) -> str:
    """A plausible incorrect completion for `example` (without the leading space), in the policy's format."""
    gold = example.answer
    fmt = example.answer_format
    if fmt == "integer":
        value = int(gold)
        mirrored = int(str(abs(value))[::-1]) * (-1 if value < 0 else 1)  # digits in the wrong order
        while True:
            candidate = rng.choice([value + rng.choice((-1, 1, -2, 2, -10, 10, -11, 11, 9, -9)), mirrored,
                                    rng.randint(min(value, 0) - 10, abs(value) + 20)])
            if candidate != value:
                return str(candidate)
    if fmt == "yes_no":
        return "no" if gold.strip().lower() in ("yes", "true") else "yes"
    if fmt == "choice":
        options = [(letter, text) for letter, text in _OPTION.findall(example.prompt) if letter != gold]
        if options:
            letter, text = rng.choice(options)
            return f"{text} ({letter})" if example.solution is not None else letter
        return rng.choice([c for c in "ABCD" if c != gold])
    chars = list(gold)
    for _ in range(20):
        x = list(chars)
        edit = rng.randrange(4)
        if edit == 0 and len(x) > 1:
            i = rng.randrange(len(x) - 1)
            x[i], x[i + 1] = x[i + 1], x[i]
        elif edit == 1 and len(x) > 1:
            del x[rng.randrange(len(x))]
        elif edit == 2:
            i = rng.randrange(len(x))
            x.insert(i, x[i])
        else:
            rng.shuffle(x)
        if "".join(x) != gold:
            return "".join(x)
    return gold + gold[-1]


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
