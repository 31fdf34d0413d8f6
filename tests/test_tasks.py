"""Task suite: deterministic generators, disjoint splits, checkers on their formats, loaders and bad rows."""

from __future__ import annotations

import json

import numpy as np
import pytest

from laser.tasks import (
    DOMAINS,
    DatasetError,
    Example,
    Splits,
    check,
    extract_choice,
    extract_int,
    extract_yes_no,
    facts_for,
    load_hf,
    load_jsonl,
    make_suite,
)


@pytest.fixture(scope="module")
def suite() -> Splits:
    return make_suite(seed=3, train=300, validation=40, test=60, domains=DOMAINS)  # every generator


def test_generators_are_deterministic_per_seed(suite):
    again = make_suite(seed=3, train=300, validation=40, test=60, domains=DOMAINS)
    assert [e.model_dump() for e in again.all()] == [e.model_dump() for e in suite.all()]
    other = make_suite(seed=4, train=300, validation=40, test=60, domains=DOMAINS)
    assert [e.prompt for e in other.test] != [e.prompt for e in suite.test]


def test_splits_are_disjoint_and_sized(suite):
    assert suite.domains() == sorted(DOMAINS)
    for split, n in (("train", 300), ("validation", 40), ("test", 60)):
        exs = getattr(suite, split)
        assert len(exs) == n * len(DOMAINS)
        for d in DOMAINS:
            assert sum(e.domain == d for e in exs) == n
    prompts = {s: {e.prompt for e in getattr(suite, s)} for s in ("train", "validation", "test")}
    assert not prompts["train"] & prompts["test"]
    assert not prompts["train"] & prompts["validation"]
    assert not prompts["validation"] & prompts["test"]
    assert len({e.id for e in suite.all()}) == sum(1 for _ in suite.all())
    with pytest.raises(DatasetError, match="both train and test"):
        Splits(suite.train[:1], (), suite.train[:1])


def test_gold_answers_pass_their_own_checker_and_are_correct(suite):
    facts = {p.name: p for p in facts_for(3)}
    for ex in suite.all():
        assert check(ex, f" {ex.answer}\nQ: next"), ex
        if ex.domain == "arithmetic":
            a, op, b = ex.prompt[3:].split("=")[0].partition("+") if "+" in ex.prompt else \
                ex.prompt[3:].split("=")[0].partition("-")
            assert int(ex.answer) == (int(a) + int(b) if op == "+" else int(a) - int(b))
        word = ex.prompt.split()[-2]  # the string operations' input: the last word before "A:"
        if ex.domain == "reverse":
            assert ex.answer == word[::-1]
        if ex.domain == "caesar":
            word = ex.prompt.split()[2]
            assert ex.answer == "".join("a" if c == "z" else chr(ord(c) + 1) for c in word)
        if ex.domain == "rotate":
            word = ex.prompt.split()[2]
            assert ex.answer == word[1:] + word[0] and len(word) >= 4
        if ex.domain == "double":
            assert ex.answer == "".join(c * 2 for c in word)
        if ex.domain == "swap_ends":
            assert ex.answer == word[-1] + word[1:-1] + word[0]
        if ex.domain == "upper":
            assert ex.answer == word.upper()
        if ex.domain == "sort_digits":
            assert ex.answer == "".join(sorted(word)) and word.isdigit()
        if ex.domain == "max_of_three":
            xs = [int(x) for x in ex.prompt.split()[3:6]]
            assert int(ex.answer) == max(xs) and len(set(xs)) == 3
        if ex.domain == "multiplication":
            a, b = ex.prompt.split()[1], ex.prompt.split()[3]
            assert int(ex.answer) == int(a) * int(b)
        if ex.domain == "yes_no" and "older" in ex.prompt:
            p, q = ex.prompt.split("is ")[1].split(" older than ")
            assert (ex.answer == "yes") == (facts[p].age > facts[q.split("?")[0]].age)
        if ex.domain == "yes_no" and " live in " in ex.prompt:
            name, city = ex.prompt[len("Q: does "):-len("? A:")].split(" live in ")
            assert (ex.answer == "yes") == (facts[name].city == city)
        if ex.domain == "knowledge":
            name, _, rest = ex.prompt[3:].partition(" ")
            truth = facts[name].city if rest.startswith("lives in?") else facts[name].job
            assert f"({ex.answer}) {truth} " in ex.prompt
            assert ex.solution == f"{truth} ({ex.answer})" and check(ex, ex.solution)
        else:
            assert ex.target() == ex.answer


def test_skill_domains_have_their_own_wording_and_no_constant_answer_floor(suite):
    from laser.tasks.synthetic import DEFAULT_DOMAINS, SKILL_DOMAINS

    assert set(DEFAULT_DOMAINS) <= set(SKILL_DOMAINS) and len(SKILL_DOMAINS) >= 6
    # The words a prompt is made of, numbers and the operand word aside: no two domains share a wording.
    def wording(ex):
        return tuple(w for w in ex.prompt.split() if not w.isdigit() and w not in ex.prompt.split()[-2:-1])
    seen = {}
    for ex in suite.test:
        if ex.domain in SKILL_DOMAINS:
            seen.setdefault(ex.domain, set()).add(wording(ex))
    for d, forms in seen.items():
        others = set().union(*(f for o, f in seen.items() if o != d))
        assert not forms & others, (d, forms & others)
    # Open answers: the most frequent test answer of a domain is rare (always-"no" scored 57.5% in yes/no).
    from collections import Counter

    for d in SKILL_DOMAINS:
        answers = Counter(ex.answer for ex in suite.test if ex.domain == d)
        assert answers.most_common(1)[0][1] / sum(answers.values()) <= 0.05, (d, answers.most_common(3))


def test_shared_wording_leaves_one_verb_to_tell_the_word_operations_apart():
    from laser.tasks.synthetic import DEFAULT_DOMAINS

    own = make_suite(seed=3, train=50, validation=10, test=10, domains=DEFAULT_DOMAINS)
    shared = make_suite(seed=3, train=50, validation=10, test=10, domains=DEFAULT_DOMAINS, wording="shared")
    # The same words and answers; every prompt "Q: <verb> <word> A:", the verb the one word that names the domain.
    for a, b in zip(own.train, shared.train, strict=True):
        assert (a.answer, a.domain, a.id) == (b.answer, b.domain, b.id)
        q, verb, word, tail = b.prompt.split()
        assert (q, tail) == ("Q:", "A:") and word in a.prompt.split() and check(b, b.answer)
    verbs = {d: {ex.prompt.split()[1] for ex in shared.train if ex.domain == d} for d in DEFAULT_DOMAINS}
    assert all(len(v) == 1 for v in verbs.values()) and len(set().union(*verbs.values())) == len(DEFAULT_DOMAINS)
    with pytest.raises(ValueError, match="no word to put in the template"):
        make_suite(seed=3, train=5, validation=2, test=2, domains=("reverse", "arithmetic"), wording="shared")
    with pytest.raises(ValueError, match="wording must be one of"):
        make_suite(seed=3, train=5, validation=2, test=2, wording="mixed")


def test_splits_are_stratified_by_sub_operation():
    s = make_suite(seed=5, train=600, validation=100, test=100, domains=("arithmetic", "reverse", "strings"))

    def share(exs, domain, key):
        keys = [key(e) for e in exs if e.domain == domain]
        return {k: keys.count(k) / len(keys) for k in set(keys)}

    for domain, key in (("arithmetic", lambda e: "+" in e.prompt), ("reverse", lambda e: len(e.answer)),
                        ("strings", lambda e: e.prompt.split()[1])):
        overall = share(list(s.all()), domain, key)
        assert len(overall) >= 2
        for split in (s.train, s.validation, s.test):
            got = share(split, domain, key)
            assert set(got) == set(overall)
            for k, v in overall.items():  # each split holds every sub-operation in its overall share
                assert abs(got[k] - v) <= 0.02, (domain, k, got[k], v)


@pytest.mark.parametrize("fmt,gold,good,bad", [
    ("integer", "405", [" 405", "405\n12", "the answer is 405", "\n405"], ["", "40", "abc", "-405", "4\n405"]),
    ("yes_no", "yes", ["yes", " Yes.", "true", "yes no"], ["", "no", "maybe", "yesterday"]),
    ("choice", "B", ["B", " (B) Lima", "B)", "answer: B"], ["", "A", "Bako", "(E)", "b"]),
    ("exact", "udok", ["udok", " udok\nmore"], ["udo", "udok!", "", "UDOK"]),
    ("gsm8k", "Natalia sold 48/2 = 24 clips.\n#### 72", ["so 48+24 = 72", "#### 72", "...72.\n"], ["71", "72 or 73"]),
])
def test_checkers_parse_their_formats(fmt, gold, good, bad):
    ex = Example(id="x", prompt="Q: ? A:", answer=gold, answer_format=fmt)
    for text in good:
        assert check(ex, text), (fmt, text)
    for text in bad:
        assert not check(ex, text), (fmt, text)


def test_extractors_never_raise_on_garbage():
    for junk in ["", "\x00\x01", "((((", "-", "#### ", "9" * 400, None]:
        extract_int(junk or "")
        extract_yes_no(junk or "")
        extract_choice(junk or "")
        assert check(Example(id="i", prompt="p", answer="3", answer_format="integer"), junk) in (True, False)


def _write(path, lines):
    path.write_bytes(b"\n".join(x if isinstance(x, bytes) else x.encode() for x in lines) + b"\n")
    return path


def test_load_jsonl_reads_rows_and_names_bad_ones(tmp_path):
    good = _write(tmp_path / "good.jsonl", [json.dumps({"prompt": "Q: 1+1=? A:", "answer": 2, "domain": "math",
                                                       "answer_format": "integer"}),
                                           "", json.dumps({"prompt": "Q: sky blue? A:", "answer": True})])
    exs, report = load_jsonl(good)
    assert [e.answer for e in exs] == ["2", "yes"] and exs[0].domain == "math" and exs[1].domain == "default"
    assert exs[0].id == "good-1" and report.kept == 2 and not report.skipped
    cases = [
        ('{"prompt": "x"}', r"bad\.jsonl:2: field 'answer' is missing"),
        ('{"prompt": "", "answer": "a"}', r"bad\.jsonl:2: field 'prompt': .*non-empty"),
        ("{not json", r"bad\.jsonl:2: not valid JSON"),
        ("[1, 2]", r"bad\.jsonl:2: expected a JSON object"),
        (b'{"prompt": "\xff", "answer": "a"}', r"bad\.jsonl:2: not valid UTF-8"),
        ('{"prompt": "p", "answer": "a", "answer_format": "regex"}', r"bad\.jsonl:2: answer_format 'regex'"),
    ]
    for row, msg in cases:
        bad = _write(tmp_path / "bad.jsonl", [json.dumps({"prompt": "ok", "answer": "a"}), row])
        with pytest.raises(DatasetError, match=msg):
            load_jsonl(bad)
        exs, report = load_jsonl(bad, skip_bad_rows=True)
        assert len(exs) == 1 and [line for line, _ in report.skipped] == [2]
    with pytest.raises(DatasetError, match="no such file"):
        load_jsonl(tmp_path / "missing.jsonl")
    mapped, _ = load_jsonl(_write(tmp_path / "m.jsonl", [json.dumps({"q": "a?", "a": "b"})]),
                           fields={"prompt": "q", "answer": "a"})
    assert mapped[0].prompt == "a?" and mapped[0].answer == "b"


def test_held_out_preferences_load_as_validation_rows_that_only_their_preferred_completion_passes(tmp_path):
    rows = [json.dumps({"prompt": "Be kind?", "chosen": "Sure, gladly.", "rejected": "No.", "domain": "chat"})]
    (ex,), _ = load_jsonl(_write(tmp_path / "prefs.jsonl", rows))
    assert ex.is_preference and ex.answer_format == "preference" and ex.rejected == "No." and ex.domain == "chat"
    assert check(ex, " Sure, gladly. ") and not check(ex, "No.") and not check(ex, "Sure")
    for row, msg in [({"prompt": "p", "chosen": "a", "rejected": " a "}, "same text as the preferred answer"),
                     ({"prompt": "p", "answer": "a", "rejected": "b"}, "both or neither"),
                     ({"prompt": "p", "chosen": "a"}, "a preference row: 'chosen' and 'rejected'")]:
        with pytest.raises(DatasetError, match=msg):
            load_jsonl(_write(tmp_path / "bad.jsonl", [json.dumps(row)]))


def test_load_hf_from_disk_and_data_files_with_presets(tmp_path):
    import datasets

    gsm = datasets.Dataset.from_dict({"question": ["Tom has 3 apples and buys 4. How many?"],
                                      "answer": ["3 + 4 = 7\n#### 7"]})
    gsm.save_to_disk(str(tmp_path / "gsm"))
    exs, _ = load_hf(str(tmp_path / "gsm"), preset="gsm8k")
    assert exs[0].answer_format == "gsm8k" and exs[0].domain == "math"
    assert check(exs[0], "She has 3+4 = 7 apples.") and not check(exs[0], "8")

    sqa = tmp_path / "sqa.jsonl"
    _write(sqa, [json.dumps({"question": "Can a fish climb a tree?", "answer": False})])
    exs, _ = load_hf(str(sqa), preset="strategyqa")
    assert exs[0].answer == "no" and check(exs[0], "No, it cannot.") and not check(exs[0], "yes")

    mmlu = datasets.Dataset.from_dict({"question": ["2+2?"], "choices": [["3", "4", "5", "6"]], "answer": [1]})
    mmlu.save_to_disk(str(tmp_path / "mmlu"))
    exs, _ = load_hf(str(tmp_path / "mmlu"), preset="mmlu")
    assert exs[0].prompt == "Q: 2+2? (A) 3 (B) 4 (C) 5 (D) 6 A:" and exs[0].answer == "B"
    assert check(exs[0], " (B) 4") and not check(exs[0], "A")

    plain = datasets.Dataset.from_dict({"q": ["a", "b", ""], "gold": ["x", "y", "z"]})
    plain.save_to_disk(str(tmp_path / "plain"))
    with pytest.raises(DatasetError, match=r"row 2: field 'q'"):
        load_hf(str(tmp_path / "plain"), prompt_field="q", answer_field="gold")
    exs, report = load_hf(str(tmp_path / "plain"), prompt_field="q", answer_field="gold", domain="d",
                          skip_bad_rows=True)
    assert [e.domain for e in exs] == ["d", "d"] and [i for i, _ in report.skipped] == [2]
    missing = r"column\(s\) \['prompt', 'answer'\] not found; columns are \['q', 'gold'\]"
    with pytest.raises(DatasetError, match=missing):
        load_hf(str(tmp_path / "plain"))


def test_a_rule_misapplied_gives_that_rules_answer_on_another_domains_word(suite):
    from laser.assets.judges import judge_examples
    from laser.assets.recipe import JudgeSpec
    from laser.tasks.mistakes import RULES, misapplied, operand

    by = {d: [ex for ex in suite.train if ex.domain == d] for d in DOMAINS}
    rot = by["rotate"][0]
    w = rot.prompt.split()[2]
    assert operand(rot) == w and misapplied(rot, "reverse") == w[::-1]  # a mirror asked to rotate reverses
    assert misapplied(rot, "double") == "".join(c + c for c in w) and misapplied(rot, "rotate") is None
    mx = by["max_of_three"][0]
    nums = mx.prompt.split()[3:6]
    assert operand(mx) == " ".join(nums) and misapplied(by["sort_digits"][0], "max_of_three") == max(
        operand(by["sort_digits"][0]))
    for d in ("arithmetic", "multiplication", "yes_no", "knowledge", "strings"):
        assert operand(by[d][0]) is None and misapplied(by[d][0], "reverse") is None  # no word to transform
    for d in RULES:  # a rule misapplied is never the right answer of the other domain
        for ex in by[d][:40]:
            for rule in RULES:
                out = misapplied(ex, rule)
                assert out is None or (out != ex.answer and not check(ex, " " + out)), (d, rule, ex.prompt)
    # A judge's SFT data: its home examples with their gold answers, and with `off_home` the other domains'
    # prompts answered by its own rule (domains where it does not apply are left out).
    train = [ex for ex in suite.train if ex.domain in ("reverse", "rotate", "arithmetic")]
    home_only = judge_examples(JudgeSpec(name="mirror", domains=("reverse",), off_home=0.0), train)
    assert home_only == [ex for ex in train if ex.domain == "reverse"]
    rows = judge_examples(JudgeSpec(name="mirror", domains=("reverse",), off_home=0.4), train)
    assert rows[:len(home_only)] == home_only
    off = rows[len(home_only):]
    assert {ex.domain for ex in off} == {"rotate"} and 0.95 * len(by["rotate"]) <= len(off) <= len(by["rotate"])
    assert all(ex.target() == operand(ex)[::-1] and ex.answer != ex.target() for ex in off)
    # `off_answer: typical_mistake`: the other domains' prompts answered by their own typical mistake, also
    # where the judge's rule gives nothing like their answers (a digit rule on a word).
    from laser.tasks.mistakes import typical_mistake

    words = [ex for ex in suite.train if ex.domain in ("swap_ends", "upper", "max_of_three", "arithmetic")]
    sorter = JudgeSpec(name="sorter", domains=("max_of_three",), off_home=0.4, off_answer="typical_mistake")
    rows = judge_examples(sorter, words)
    home = [ex for ex in words if ex.domain == "max_of_three"]
    assert rows[:len(home)] == home
    off = rows[len(home):]
    assert {ex.domain for ex in off} == {"swap_ends", "upper", "arithmetic"}
    assert all(ex.target() == typical_mistake(ex) and not check(ex, " " + ex.target()) for ex in off)
    upper = next(ex for ex in off if ex.domain == "upper")
    assert upper.target() == RULES["swap_ends"](operand(upper))  # upper's typical mistake: its ends swapped
    assert len(off) >= 0.95 * (len(words) - len(home))


def test_typical_mistakes_are_wrong_and_are_the_neighbouring_rule(suite):
    from laser.assets.policy import DomainMixture, with_mistakes
    from laser.tasks.mistakes import typical_mistake
    from laser.tasks.synthetic import SKILL_DOMAINS

    for ex in suite.all():
        wrong = typical_mistake(ex)
        if ex.domain not in SKILL_DOMAINS:
            assert wrong is None
            continue
        assert wrong and not check(ex, " " + wrong) or wrong == ex.answer  # a rare input where both rules agree
    rev = next(ex for ex in suite.test if ex.domain == "reverse")
    rot = next(ex for ex in suite.test if ex.domain == "rotate")
    w, v = rev.prompt.split()[2], rot.prompt.split()[2]
    assert typical_mistake(rev) == w[1:] + w[0] and typical_mistake(rot) == v[::-1]  # each other's rule
    # The SFT data of the policy: every example once with its gold answer and once with its typical mistake;
    # the sampler draws the mistake on about `rate` of the visits of an example, so that the policy learns
    # to be right about that often on every prompt (not right on some prompts and wrong on others).
    rows, alternates = with_mistakes(suite.train)
    assert rows[:len(suite.train)] == list(suite.train) and len(alternates) == len(suite.train)
    for ex, alt in zip(suite.train, alternates, strict=True):
        if typical_mistake(ex) is None:
            assert alt is None
        else:
            assert rows[alt].target() == typical_mistake(ex) and rows[alt].prompt == ex.prompt
            assert rows[alt].answer == ex.answer  # the gold answer is kept for the checker
    mixture = DomainMixture([ex.domain for ex in suite.train], 4000, seed=0, alternates=alternates,
                            alternate_rate=0.5)
    drawn = list(mixture)
    assert drawn == list(DomainMixture([ex.domain for ex in suite.train], 4000, seed=0, alternates=alternates,
                                       alternate_rate=0.5))  # seeded
    is_mistake = np.array([i >= len(suite.train) for i in drawn])
    of_domain = np.array([rows[i].domain for i in drawn])
    for d in ("reverse", "arithmetic", "upper"):
        assert 0.4 <= is_mistake[of_domain == d].mean() <= 0.6, d
    assert not is_mistake[np.isin(of_domain, ["yes_no", "knowledge"])].any()  # no typical mistake there
