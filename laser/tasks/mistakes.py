"""Plausible wrong answers for an example, by its answer format (the mistakes a partly trained model makes).

Used to build the embedded reward models' training pairs and, at training time, the wrong side of the
`margin` validation metric (the policy's log-likelihood of the gold answer minus that of a wrong one).
"""

from __future__ import annotations

import random
import re

from .base import Example

_OPTION = re.compile(r"\(([A-D])\) (\S+)")


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
