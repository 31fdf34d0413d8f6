"""Plausible wrong answers for an example, by its answer format (the mistakes a partly trained model makes).

Used to build the embedded reward models' training pairs and, at training time, the wrong side of the
`margin` validation metric (the policy's log-likelihood of the gold answer minus that of a wrong one).
"""

from __future__ import annotations

import random
import re

from .base import Example
from .checkers import check

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


# The rules of the skill domains on strings (`laser.tasks.synthetic`), applicable to any word.
RULES = {
    "reverse": lambda w: w[::-1],
    "rotate": lambda w: w[1:] + w[0],
    "caesar": lambda w: "".join(chr((ord(c) - 97 + 1) % 26 + 97) for c in w),
    "double": lambda w: "".join(c + c for c in w),
    "swap_ends": lambda w: w[-1] + w[1:-1] + w[0],
    "upper": str.upper,
    "sort_digits": lambda w: "".join(sorted(w.replace(" ", ""))),
    "max_of_three": lambda w: max(w.split(), key=int) if " " in w else max(w),
}


# The neighbouring rule whose answer is a domain's typical mistake.
_NEIGHBOUR = {"reverse": "rotate", "rotate": "reverse", "swap_ends": "upper", "upper": "swap_ends"}


def operand(example: Example) -> str | None:
    """What a string-rule domain's prompt asks to transform: its word, or the three numbers of
    `max_of_three` (None for other domains)."""
    if example.domain not in RULES:
        return None
    words = example.prompt.split()
    if example.domain == "max_of_three":
        return " ".join(words[3:6])
    return words[2] if example.domain in ("caesar", "rotate") else words[-2]


def misapplied(example: Example, rule: str) -> str | None:
    """What domain `rule`'s rule answers on `example`'s word: the confident mistake of a judge that applies
    its own rule to a prompt that asks for another (None where either has no string rule, or where the
    result happens to pass the example's checker)."""
    w = operand(example)
    if w is None or rule not in RULES or len(w) < 2:
        return None
    out = RULES[rule](w)
    return None if check(example, " " + out) else out


def typical_mistake(example: Example) -> str | None:
    """The one systematic mistake of a skill domain: the answer of a neighbouring rule on the same input
    (reverse <-> rotate, swap_ends <-> upper, the other sign in arithmetic, ...); None for other domains.

    A partly trained policy that confuses a rule with its neighbour makes this mistake, and a judge of
    the neighbouring rule prefers it: the embedded world's policy learns it in SFT (`SFTSpec.mistake_rate`).
    """
    p, d = example.prompt, example.domain
    words = p.split()
    if d in _NEIGHBOUR:
        return RULES[_NEIGHBOUR[d]](operand(example))
    if d in ("caesar", "double"):
        w = operand(example)
        return "".join(chr((ord(c) - 98) % 26 + 97) for c in w) if d == "caesar" else w + w
    if d == "arithmetic":
        a, op, b = p[3:].split("=")[0].partition("+") if "+" in p else p[3:].split("=")[0].partition("-")
        return str(int(a) - int(b) if op == "+" else int(a) + int(b))
    if d == "multiplication":
        return str(int(words[1]) * (int(words[3]) - 1))
    if d == "max_of_three":
        return str(min(int(x) for x in words[3:6]))
    if d == "sort_digits":
        return "".join(sorted(words[-2], reverse=True))
    return None
