"""The built-in synthetic task suite: four domains with checkable answers, generated from a seed.

- `arithmetic`: a two- or three-digit number plus or minus a digit ("Q: 147+8=? A:" -> "155"), like
  GSM8K's last step.
- `yes_no`: StrategyQA-like yes/no questions that combine facts: "is Bako older than Tiru?" and
  "does Bako live in Oslo?" over a generated fact base of people with ages, cities and jobs.
- `knowledge`: MMLU-like multiple choice over the same fact base: "Bako lives in? (A) Oslo (B) Lima
  (C) Rome (D) Kyiv" -> "B" (reference solution "Lima (B)": recall the fact, then name its option).
- `strings`: string manipulation: "reverse kodu" -> "udok", "sort kodu" -> "dkou".

The fact base is the suite's "world knowledge": train, validation and test ask different questions
(different pairs, option orders) about the same people, so a model can only answer test questions by
having learned the facts in training. Prompts never repeat across splits (checked by `Splits`).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from .base import DatasetError, Example, Splits

DOMAINS = ("arithmetic", "yes_no", "knowledge", "strings")
ANSWER_FORMATS = {"arithmetic": "integer", "yes_no": "yes_no", "knowledge": "choice", "strings": "exact"}
CITIES = ("Oslo", "Lima", "Rome", "Kyiv", "Baku", "Doha", "Riga", "Bern", "Nice", "Pisa", "Agra", "Cork")
JOBS = ("baker", "nurse", "pilot", "judge", "smith", "guard", "clerk", "tutor", "chef", "miner")
_CONS, _VOWS = "bdfgklmnprstvz", "aeiou"


@dataclass(frozen=True)
class Person:
    """One entry of the fact base."""

    name: str
    age: int
    city: str
    job: str


def make_facts(rng: random.Random, n_people: int = 48) -> list[Person]:
    """A fact base of people with distinct names and distinct ages."""
    names: set[str] = set()
    while len(names) < n_people:
        names.add("".join(rng.choice(_CONS) + rng.choice(_VOWS) for _ in range(2)).capitalize())
    ages = rng.sample(range(12, 95), n_people)
    return [Person(n, a, rng.choice(CITIES), rng.choice(JOBS)) for n, a in zip(sorted(names), ages, strict=True)]


Generated = tuple[str, str] | tuple[str, str, str]  # prompt, answer[, solution]


def _arithmetic(rng: random.Random, facts: list[Person]) -> Generated:
    a, b = rng.randint(10, 199), rng.randint(1, 9)
    if rng.random() < 0.5:
        return f"Q: {a}+{b}=? A:", str(a + b)
    return f"Q: {a}-{b}=? A:", str(a - b)


def _yes_no(rng: random.Random, facts: list[Person]) -> Generated:
    if rng.random() < 0.25:
        p = rng.choice(facts)
        city = p.city if rng.random() < 0.5 else rng.choice([c for c in CITIES if c != p.city])
        return f"Q: does {p.name} live in {city}? A:", "yes" if city == p.city else "no"
    p, q = rng.sample(facts, 2)
    return f"Q: is {p.name} older than {q.name}? A:", "yes" if p.age > q.age else "no"


def _knowledge(rng: random.Random, facts: list[Person]) -> Generated:
    p = rng.choice(facts)
    if rng.random() < 0.5:
        question, truth, pool = f"{p.name} lives in?", p.city, CITIES
    else:
        question, truth, pool = f"{p.name} works as?", p.job, JOBS
    options = [truth, *rng.sample([c for c in pool if c != truth], 3)]
    rng.shuffle(options)
    letters = "ABCD"
    opts = " ".join(f"({letters[i]}) {o}" for i, o in enumerate(options))
    letter = letters[options.index(truth)]
    return f"Q: {question} {opts} A:", letter, f"{truth} ({letter})"


def _strings(rng: random.Random, facts: list[Person]) -> Generated:
    word = "".join(rng.choice("abcdefghiklmnoprstu") for _ in range(rng.randint(3, 6)))
    op = rng.choice(("reverse", "sort", "first"))
    if op == "reverse":
        return f"Q: reverse {word} A:", word[::-1]
    if op == "sort":
        return f"Q: sort {word} A:", "".join(sorted(word))
    return f"Q: first and last of {word} A:", word[0] + word[-1]


GENERATORS: dict[str, Callable[[random.Random, list[Person]], Generated]] = {
    "arithmetic": _arithmetic, "yes_no": _yes_no, "knowledge": _knowledge, "strings": _strings,
}


def make_suite(seed: int = 0, train: int = 1500, validation: int = 200, test: int = 200,
               domains: tuple[str, ...] = DOMAINS, n_people: int = 48) -> Splits:
    """Generate `train` / `validation` / `test` examples per domain, deterministically from `seed`."""
    unknown = sorted(set(domains) - set(GENERATORS))
    if unknown:
        raise ValueError(f"unknown domain(s) {unknown}; choose from {list(GENERATORS)}")
    rng = random.Random(seed)
    facts = make_facts(rng, n_people)
    parts: dict[str, list[Example]] = {"train": [], "validation": [], "test": []}
    for domain in domains:
        gen_rng = random.Random(f"{seed}-{domain}")  # a domain's examples do not depend on the others
        need = train + validation + test
        pool: dict[str, tuple[str, ...]] = {}
        attempts = 0
        while len(pool) < need:
            prompt, *answer = GENERATORS[domain](gen_rng, facts)
            pool.setdefault(prompt, tuple(answer))
            attempts += 1
            if attempts > 50 * need:
                raise DatasetError(f"domain {domain!r} has fewer than {need} distinct prompts; ask for fewer")
        items = list(pool.items())
        gen_rng.shuffle(items)
        bounds = {"train": (0, train), "validation": (train, train + validation),
                  "test": (train + validation, need)}
        for split, (lo, hi) in bounds.items():
            parts[split] += [Example(id=f"{domain}-{split}-{i}", prompt=p, answer=a[0], domain=domain,
                                     answer_format=ANSWER_FORMATS[domain], solution=a[1] if len(a) > 1 else None)
                             for i, (p, a) in enumerate(items[lo:hi])]
    return Splits(tuple(parts["train"]), tuple(parts["validation"]), tuple(parts["test"]))


def facts_for(seed: int = 0, n_people: int = 48) -> list[Person]:
    """The fact base `make_suite(seed)` uses (for inspection and for building knowledge RMs)."""
    return make_facts(random.Random(seed), n_people)
