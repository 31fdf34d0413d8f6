"""Answer checkers: did a generated text get the gold answer? Malformed output is wrong, never an error.

Each answer format has an `extract_*` that finds the answer in free text (or None) and the checker
compares it with the gold answer. `check(example, completion)` dispatches on `example.answer_format`.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from .base import Example

_INT = re.compile(r"-?\d[\d,]*")
_YES_NO = re.compile(r"\b(yes|no|true|false)\b", re.I)
_CHOICE = re.compile(r"(?:^|[\s(\[:])([A-D])(?=$|[\s).\]:,])")


def first_line(text: str) -> str:
    """The completion up to its first newline, stripped (a model's direct answer)."""
    return text.strip().split("\n", 1)[0].strip() if text else ""


def extract_int(text: str, where: str = "first_line") -> int | None:
    """The last integer in the first line (`where="first_line"`) or in the whole text (`"last"`)."""
    scope = first_line(text) if where == "first_line" else (text or "")
    found = _INT.findall(scope)
    if not found:
        return None
    try:
        return int(found[-1].replace(",", ""))
    except ValueError:
        return None


def extract_yes_no(text: str) -> str | None:
    """'yes' or 'no' from the first yes/no/true/false word of the first line."""
    m = _YES_NO.search(first_line(text))
    if not m:
        return None
    return "yes" if m.group(1).lower() in ("yes", "true") else "no"


def extract_choice(text: str) -> str | None:
    """The first standalone option letter A-D of the first line: 'B', '(B)', 'B)', 'answer: B'."""
    m = _CHOICE.search(first_line(text))
    return m.group(1) if m else None


def check_integer(completion: str, gold: str) -> bool:
    """Integer answers: the last integer of the first line equals the gold integer."""
    got = extract_int(completion)
    try:
        return got is not None and got == int(str(gold).replace(",", "").strip())
    except ValueError:
        return False


def check_yes_no(completion: str, gold: str) -> bool:
    """Yes/no answers (true/false accepted as synonyms)."""
    return extract_yes_no(completion) == extract_yes_no(gold)


def check_choice(completion: str, gold: str) -> bool:
    """Multiple-choice letter answers."""
    got = extract_choice(completion)
    return got is not None and got == str(gold).strip().upper()


def check_exact(completion: str, gold: str) -> bool:
    """The first line equals the gold answer exactly (after stripping spaces)."""
    return first_line(completion) == str(gold).strip()


def check_gsm8k(completion: str, gold: str) -> bool:
    """GSM8K: gold is the solution ending in '#### 72'; the prediction is the last number in the text."""
    gold_num = gold.rsplit("####", 1)[-1] if "####" in gold else gold
    got = extract_int(completion.rsplit("####", 1)[-1] if "####" in completion else completion, where="last")
    try:
        return got is not None and got == int(gold_num.replace(",", "").strip())
    except ValueError:
        return False


CHECKERS: dict[str, Callable[[str, str], bool]] = {
    "integer": check_integer,
    "yes_no": check_yes_no,
    "choice": check_choice,
    "exact": check_exact,
    "gsm8k": check_gsm8k,
    # A held-out preference: the preferred completion is right, anything else wrong (`Example.rejected`).
    "preference": lambda completion, preferred: completion.strip() == preferred.strip(),
}


def check(example: Example, completion: str) -> bool:
    """Whether `completion` answers `example` correctly, by the example's answer format."""
    try:
        checker = CHECKERS[example.answer_format]
    except KeyError:
        raise ValueError(f"unknown answer_format {example.answer_format!r}; choose one of {sorted(CHECKERS)}") from None
    return bool(checker(completion if isinstance(completion, str) else "", example.answer))
