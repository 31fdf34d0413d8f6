"""The built-in synthetic task suite: four domains with checkable answers, generated from a seed.

- `arithmetic`: multi-digit addition and subtraction ("Q: 347+58=? A:" -> "405"), like GSM8K's last step.
- `yes_no`: StrategyQA-like yes/no questions: "is 91 prime?" and "is Bako older than Tiru?" over a
  generated fact base of people with ages.
- `knowledge`: MMLU-like multiple choice over the same fact base: "where does Bako live?
  (A) Oslo (B) Lima (C) Rome (D) Kyiv" -> "B".
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


def make_facts(rng: random.Random, n_people: int = 40) -> list[Person]:
    """A fact base of people with distinct names and distinct ages."""
    names: set[str] = set()
    while len(names) < n_people:
        names.add("".join(rng.choice(_CONS) + rng.choice(_VOWS) for _ in range(2)).capitalize())
    ages = rng.sample(range(12, 95), n_people)
    return [Person(n, a, rng.choice(CITIES), rng.choice(JOBS)) for n, a in zip(sorted(names), ages, strict=True)]


def _arithmetic(rng: random.Random, facts: list[Person]) -> tuple[str, str]:
    a, b = rng.randint(10, 999), rng.randint(10, 999)
    if rng.random() < 0.5:
        return f"Q: {a}+{b}=? A:", str(a + b)
    a, b = max(a, b), min(a, b)
    return f"Q: {a}-{b}=? A:", str(a - b)


def _is_prime(n: int) -> bool:
    return n > 1 and all(n % p for p in range(2, int(n**0.5) + 1))


def _yes_no(rng: random.Random, facts: list[Person]) -> tuple[str, str]:
    if rng.random() < 0.25:
        n = rng.randint(2, 199)
        return f"Q: is {n} prime? A:", "yes" if _is_prime(n) else "no"
    p, q = rng.sample(facts, 2)
    return f"Q: is {p.name} older than {q.name}? A:", "yes" if p.age > q.age else "no"


def _knowledge(rng: random.Random, facts: list[Person]) -> tuple[str, str]:
    p = rng.choice(facts)
    if rng.random() < 0.5:
        question, truth, pool = f"where does {p.name} live?", p.city, CITIES
    else:
        question, truth, pool = f"what is {p.name}'s job?", p.job, JOBS
    options = [truth, *rng.sample([c for c in pool if c != truth], 3)]
    rng.shuffle(options)
    letters = "ABCD"
    opts = " ".join(f"({letters[i]}) {o}" for i, o in enumerate(options))
    return f"Q: {question} {opts} A:", letters[options.index(truth)]


def _strings(rng: random.Random, facts: list[Person]) -> tuple[str, str]:
    word = "".join(rng.choice("abcdefghiklmnoprstu") for _ in range(rng.randint(3, 6)))
    op = rng.choice(("reverse", "sort", "first"))
    if op == "reverse":
        return f"Q: reverse {word} A:", word[::-1]
    if op == "sort":
        return f"Q: sort {word} A:", "".join(sorted(word))
    return f"Q: first and last of {word} A:", word[0] + word[-1]


GENERATORS: dict[str, Callable[[random.Random, list[Person]], tuple[str, str]]] = {
    "arithmetic": _arithmetic, "yes_no": _yes_no, "knowledge": _knowledge, "strings": _strings,
}


def make_suite(seed: int = 0, train: int = 2000, validation: int = 200, test: int = 200,
               domains: tuple[str, ...] = DOMAINS, n_people: int = 40) -> Splits:
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
        pool: dict[str, str] = {}
        attempts = 0
        while len(pool) < need:
            prompt, answer = GENERATORS[domain](gen_rng, facts)
            pool.setdefault(prompt, answer)
            attempts += 1
            if attempts > 50 * need:
                raise DatasetError(f"domain {domain!r} has fewer than {need} distinct prompts; ask for fewer")
        items = list(pool.items())
        gen_rng.shuffle(items)
        bounds = {"train": (0, train), "validation": (train, train + validation),
                  "test": (train + validation, need)}
        for split, (lo, hi) in bounds.items():
            parts[split] += [Example(id=f"{domain}-{split}-{i}", prompt=p, answer=a, domain=domain,
                                     answer_format=ANSWER_FORMATS[domain])
                             for i, (p, a) in enumerate(items[lo:hi])]
    return Splits(tuple(parts["train"]), tuple(parts["validation"]), tuple(parts["test"]))


def facts_for(seed: int = 0, n_people: int = 40) -> list[Person]:
    """The fact base `make_suite(seed)` uses (for inspection and for building knowledge RMs)."""
    return make_facts(random.Random(seed), n_people)
