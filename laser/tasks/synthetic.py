"""The built-in library of synthetic skill domains with checkable answers, generated from a seed.

Skill domains (open answers, no constant-answer floor; each has its own prompt wording so that a
policy's context tells them apart):

- `arithmetic`: a two- or three-digit number plus or minus a digit ("Q: 147+8=? A:" -> "155").
- `multiplication`: a number times a digit ("Q: 23 times 4 A:" -> "92").
- `max_of_three`: the largest of three numbers ("Q: largest of 31 87 45 A:" -> "87").
- `sort_digits`: the digits of a number in increasing order ("Q: sort digits 3914 A:" -> "1349").
- `reverse`: a word backwards ("Q: reverse kodu A:" -> "udok").
- `caesar`: every letter shifted one place down the alphabet ("Q: shift kodu by one A:" -> "lpev").
- `rotate`: the first letter moved to the end ("Q: rotate kodu left A:" -> "oduk").
- `double`: every letter written twice ("Q: double each letter of kod A:" -> "kkoodd").
- `swap_ends`: the first and last letters swapped ("Q: swap the ends of kodu A:" -> "uodk").
- `upper`: the word in capitals ("Q: capitalize kodu A:" -> "KODU").

Optional generators kept from the first embedded world (not in the default, since they have a
constant-answer floor or ask for memorized facts rather than a skill):

- `yes_no`: StrategyQA-like yes/no questions over a generated fact base of people with ages, cities
  and jobs ("is Bako older than Tiru?", "does Bako live in Oslo?").
- `knowledge`: MMLU-like multiple choice over the same fact base ("Bako lives in? (A) Oslo (B) Lima
  (C) Rome (D) Kyiv" -> "B", reference solution "Lima (B)").
- `strings`: three string operations in one domain ("reverse", "sort", "first and last").

Every generator also names the sub-operation of each example ("+" or "-" in arithmetic); the splits
are stratified by it, so that train, validation and test hold every sub-operation in the same share.
Prompts never repeat across splits (checked by `Splits`).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, replace

from .base import DatasetError, Example, Splits

SKILL_DOMAINS = ("arithmetic", "multiplication", "max_of_three", "sort_digits", "reverse", "caesar", "rotate",
                 "double", "swap_ends", "upper")
FACT_DOMAINS = ("yes_no", "knowledge")
DOMAINS = (*SKILL_DOMAINS, *FACT_DOMAINS, "strings")
# The default world's four domains (see `laser.assets.recipe`).
DEFAULT_DOMAINS = ("reverse", "caesar", "rotate", "double")
ANSWER_FORMATS = {"arithmetic": "integer", "multiplication": "integer", "max_of_three": "integer",
                  "sort_digits": "exact", "reverse": "exact", "caesar": "exact", "rotate": "exact", "double": "exact",
                  "swap_ends": "exact", "upper": "exact",
                  "yes_no": "yes_no", "knowledge": "choice", "strings": "exact"}
CITIES = ("Oslo", "Lima", "Rome", "Kyiv", "Baku", "Doha", "Riga", "Bern", "Nice", "Pisa", "Agra", "Cork")
JOBS = ("baker", "nurse", "pilot", "judge", "smith", "guard", "clerk", "tutor", "chef", "miner")
_CONS, _VOWS = "bdfgklmnprstvz", "aeiou"
_LETTERS = "abcdefghiklmnoprstu"


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


@dataclass(frozen=True)
class Generated:
    """One generated example: prompt, gold answer, optional reference solution, its sub-operation, and the word
    a word operation applies to (what `wording="shared"` puts in the one template)."""

    prompt: str
    answer: str
    subop: str
    solution: str | None = None
    subject: str | None = None


def _word(rng: random.Random, lo: int = 4, hi: int = 8) -> str:
    return "".join(rng.choice(_LETTERS) for _ in range(rng.randint(lo, hi)))


def _arithmetic(rng: random.Random, facts: list[Person]) -> Generated:
    a, b = rng.randint(10, 199), rng.randint(1, 9)
    if rng.random() < 0.5:
        return Generated(f"Q: {a}+{b}=? A:", str(a + b), "+")
    return Generated(f"Q: {a}-{b}=? A:", str(a - b), "-")


def _multiplication(rng: random.Random, facts: list[Person]) -> Generated:
    a, b = rng.randint(10, 399), rng.randint(2, 9)
    return Generated(f"Q: {a} times {b} A:", str(a * b), "times")


def _max_of_three(rng: random.Random, facts: list[Person]) -> Generated:
    xs = rng.sample(range(10, 100), 3)
    return Generated(f"Q: largest of {xs[0]} {xs[1]} {xs[2]} A:", str(max(xs)), f"at{xs.index(max(xs))}")


def _sort_digits(rng: random.Random, facts: list[Person]) -> Generated:
    digits = "".join(rng.choice("123456789") for _ in range(rng.randint(4, 7)))
    return Generated(f"Q: sort digits {digits} A:", "".join(sorted(digits)), f"len{len(digits)}")


def _reverse(rng: random.Random, facts: list[Person]) -> Generated:
    w = _word(rng)
    return Generated(f"Q: reverse {w} A:", w[::-1], f"len{len(w)}", subject=w)


def caesar_shift(word: str, k: int = 1) -> str:
    """Every letter of `word` moved `k` places down the alphabet (z wraps to a)."""
    return "".join(chr((ord(c) - 97 + k) % 26 + 97) for c in word)


def _caesar(rng: random.Random, facts: list[Person]) -> Generated:
    w = _word(rng)
    return Generated(f"Q: shift {w} by one A:", caesar_shift(w), f"len{len(w)}", subject=w)


def _rotate(rng: random.Random, facts: list[Person]) -> Generated:
    w = _word(rng)
    return Generated(f"Q: rotate {w} left A:", w[1:] + w[0], f"len{len(w)}", subject=w)


def _double(rng: random.Random, facts: list[Person]) -> Generated:
    w = _word(rng, 3, 6)
    return Generated(f"Q: double each letter of {w} A:", "".join(c + c for c in w), f"len{len(w)}",
                     subject=w)


def _swap_ends(rng: random.Random, facts: list[Person]) -> Generated:
    w = _word(rng)
    return Generated(f"Q: swap the ends of {w} A:", w[-1] + w[1:-1] + w[0], f"len{len(w)}", subject=w)


def _upper(rng: random.Random, facts: list[Person]) -> Generated:
    w = _word(rng)
    return Generated(f"Q: capitalize {w} A:", w.upper(), f"len{len(w)}", subject=w)


def _yes_no(rng: random.Random, facts: list[Person]) -> Generated:
    if rng.random() < 0.25:
        p = rng.choice(facts)
        city = p.city if rng.random() < 0.5 else rng.choice([c for c in CITIES if c != p.city])
        return Generated(f"Q: does {p.name} live in {city}? A:", "yes" if city == p.city else "no", "lives")
    p, q = rng.sample(facts, 2)
    return Generated(f"Q: is {p.name} older than {q.name}? A:", "yes" if p.age > q.age else "no", "older")


def _knowledge(rng: random.Random, facts: list[Person]) -> Generated:
    p = rng.choice(facts)
    if rng.random() < 0.5:
        question, truth, pool, subop = f"{p.name} lives in?", p.city, CITIES, "city"
    else:
        question, truth, pool, subop = f"{p.name} works as?", p.job, JOBS, "job"
    options = [truth, *rng.sample([c for c in pool if c != truth], 3)]
    rng.shuffle(options)
    letters = "ABCD"
    opts = " ".join(f"({letters[i]}) {o}" for i, o in enumerate(options))
    letter = letters[options.index(truth)]
    return Generated(f"Q: {question} {opts} A:", letter, subop, f"{truth} ({letter})")


def _strings(rng: random.Random, facts: list[Person]) -> Generated:
    word = "".join(rng.choice(_LETTERS) for _ in range(rng.randint(3, 6)))
    op = rng.choice(("reverse", "sort", "first"))
    if op == "reverse":
        return Generated(f"Q: reverse {word} A:", word[::-1], op)
    if op == "sort":
        return Generated(f"Q: sort {word} A:", "".join(sorted(word)), op)
    return Generated(f"Q: first and last of {word} A:", word[0] + word[-1], op)


# `wording="shared"`: the word operations in one template, "Q: <verb> <word> A:", told apart by the verb alone.
SHARED_VERBS = {"reverse": "reverse", "caesar": "shift", "rotate": "rotate", "double": "double", "swap_ends": "swap",
                "upper": "capitalize"}
WORDINGS = ("own", "shared")

GENERATORS: dict[str, Callable[[random.Random, list[Person]], Generated]] = {
    "arithmetic": _arithmetic, "multiplication": _multiplication, "max_of_three": _max_of_three,
    "sort_digits": _sort_digits, "reverse": _reverse, "caesar": _caesar, "rotate": _rotate, "double": _double,
    "swap_ends": _swap_ends, "upper": _upper, "yes_no": _yes_no, "knowledge": _knowledge, "strings": _strings,
}


def _stratified(items: list[tuple[str, Generated]]) -> list[tuple[str, Generated]]:
    """`items` reordered so that every prefix and every contiguous chunk holds each sub-operation in its
    overall share (each sub-operation's examples spread evenly over the sequence)."""
    by: dict[str, list[tuple[str, Generated]]] = {}
    for it in items:
        by.setdefault(it[1].subop, []).append(it)
    keyed = [((j + 0.5) / len(group), s, j) for s, group in by.items() for j in range(len(group))]
    return [by[s][j] for _, s, j in sorted(keyed)]


def make_suite(seed: int = 0, train: int = 1500, validation: int = 200, test: int = 200,
               domains: tuple[str, ...] = DEFAULT_DOMAINS, n_people: int = 48, wording: str = "own") -> Splits:
    """Generate `train` / `validation` / `test` examples per domain, deterministically from `seed`, with the
    splits stratified by sub-operation. `wording`: each domain's own prompt wording, or one template for every
    word operation (`shared`: "Q: rotate kodu A:", "Q: shift kodu A:"), where only one word names the task."""
    unknown = sorted(set(domains) - set(GENERATORS))
    if unknown:
        raise ValueError(f"unknown domain(s) {unknown}; choose from {list(GENERATORS)}")
    if wording not in WORDINGS:
        raise ValueError(f"wording must be one of {list(WORDINGS)}, got {wording!r}")
    if wording == "shared" and set(domains) - set(SHARED_VERBS):
        raise ValueError(f"wording 'shared' is for the word operations {list(SHARED_VERBS)}; "
                         f"{sorted(set(domains) - set(SHARED_VERBS))} have no word to put in the template")
    if len(set(domains)) != len(domains):
        raise ValueError(f"domains must not repeat, got {list(domains)}")
    rng = random.Random(seed)
    facts = make_facts(rng, n_people)
    parts: dict[str, list[Example]] = {"train": [], "validation": [], "test": []}
    for domain in domains:
        gen_rng = random.Random(f"{seed}-{domain}")  # a domain's examples do not depend on the others
        need = train + validation + test
        pool: dict[str, Generated] = {}
        attempts = 0
        while len(pool) < need:
            g = GENERATORS[domain](gen_rng, facts)
            if wording == "shared":
                g = replace(g, prompt=f"Q: {SHARED_VERBS[domain]} {g.subject} A:")
            pool.setdefault(g.prompt, g)
            attempts += 1
            if attempts > 50 * need:
                raise DatasetError(f"domain {domain!r} has fewer than {need} distinct prompts; ask for fewer")
        items = list(pool.items())
        gen_rng.shuffle(items)
        items = _stratified(items)
        bounds = {"train": (0, train), "validation": (train, train + validation),
                  "test": (train + validation, need)}
        for split, (lo, hi) in bounds.items():
            parts[split] += [Example(id=f"{domain}-{split}-{i}", prompt=p, answer=g.answer, domain=domain,
                                     answer_format=ANSWER_FORMATS[domain], solution=g.solution)
                             for i, (p, g) in enumerate(items[lo:hi])]
    return Splits(tuple(parts["train"]), tuple(parts["validation"]), tuple(parts["test"]))


def facts_for(seed: int = 0, n_people: int = 48) -> list[Person]:
    """The fact base `make_suite(seed)` uses (for inspection and for building knowledge RMs)."""
    return make_facts(random.Random(seed), n_people)
