"""`laser data`: the paper's datasets, from local copies in their published column formats, written as the
train / validation / test JSONL the paper config reads, with no prompt in two splits."""

from __future__ import annotations

import json

import pytest

from laser.cli import main
from laser.tasks import check, load_jsonl


def _gsm8k(root):
    """GSM8K as the hub stores it: main/{train,test}-00000-of-00001.parquet with question / answer."""
    import datasets

    (root / "main").mkdir(parents=True)
    for split, start, n in (("train", 0, 30), ("test", 1000, 6)):
        nums = list(range(start, start + n))
        if split == "test":
            nums[0] = 0  # also a training prompt: dropped from train
        q = [f"Tom has {i} apples and buys {i + 2}. How many?" for i in nums]
        a = [f"{i} + {i + 2} = {2 * i + 2}\n#### {2 * i + 2}" for i in nums]
        datasets.Dataset.from_dict({"question": q, "answer": a}).to_parquet(
            str(root / "main" / f"{split}-00000-of-00001.parquet"))


def _strategyqa(root):
    """StrategyQA (ChilleD's layout): boolean answers, train and test splits, saved with save_to_disk."""
    import datasets

    def part(n, start):
        return datasets.Dataset.from_dict({"qid": [str(i) for i in range(start, start + n)],
                                           "question": [f"Is {i} an even number?" for i in range(start, start + n)],
                                           "answer": [i % 2 == 0 for i in range(start, start + n)]})
    datasets.DatasetDict({"train": part(20, 0), "test": part(4, 100)}).save_to_disk(str(root))


def _mmlu(root):
    """MMLU (cais/mmlu 'all'): question, subject, choices[4], answer index; test, validation, dev, auxiliary_train."""
    import datasets

    def part(n, start):
        return datasets.Dataset.from_dict({
            "question": [f"What is {i} + 1?" for i in range(start, start + n)],
            "subject": ["arithmetic"] * n,
            "choices": [[str(i), str(i + 1), str(i + 2), str(i + 3)] for i in range(start, start + n)],
            "answer": [1] * n})
    datasets.DatasetDict({"test": part(5, 0), "validation": part(3, 50), "dev": part(2, 80),
                          "auxiliary_train": part(10, 200)}).save_to_disk(str(root))


def test_laser_data_writes_the_papers_three_datasets_from_local_copies(tmp_path, capsys):
    _gsm8k(tmp_path / "gsm8k")
    _strategyqa(tmp_path / "sqa")
    _mmlu(tmp_path / "mmlu")
    out = tmp_path / "data" / "paper"
    rc = main(["data", "gsm8k", "strategyqa", "mmlu", "--out", str(out), "--source", f"gsm8k={tmp_path / 'gsm8k'}",
               "--source", f"strategyqa={tmp_path / 'sqa'}", "--source", f"mmlu={tmp_path / 'mmlu'}"])
    io = capsys.readouterr()
    assert rc == 0, io.err
    splits = {s: load_jsonl(out / f"{s}.jsonl")[0] for s in ("train", "validation", "test")}
    by = {s: {d: [e for e in rows if e.domain == d] for d in ("math", "commonsense", "knowledge")}
          for s, rows in splits.items()}
    # GSM8K: no validation split, so 10% of its 30 training rows (3) are held out; one training prompt was a
    # test prompt and is dropped. StrategyQA likewise (2 of 20). MMLU has its own validation split.
    assert (len(by["train"]["math"]) + len(by["validation"]["math"]), len(by["validation"]["math"])) == (29, 3)
    assert len(by["test"]["math"]) == 6 and "1 rows dropped for a prompt also in test" in io.out
    assert (len(by["train"]["commonsense"]), len(by["validation"]["commonsense"]), len(by["test"]["commonsense"])) \
        == (18, 2, 4)
    assert (len(by["train"]["knowledge"]), len(by["validation"]["knowledge"]), len(by["test"]["knowledge"])) \
        == (10, 3, 5)
    prompts = {s: {e.prompt for e in rows} for s, rows in splits.items()}
    assert not (prompts["train"] & prompts["test"]) and not (prompts["train"] & prompts["validation"])
    assert not (prompts["validation"] & prompts["test"])
    ids = [e.id for rows in splits.values() for e in rows]
    assert len(ids) == len(set(ids))                               # unique across datasets and splits
    # Each row carries its checker: GSM8K's last number, StrategyQA's yes/no, MMLU's letter.
    g = by["test"]["math"][1]
    assert g.answer_format == "gsm8k" and check(g, "So he has 2004 apples. #### 2004") and not check(g, "4")
    s = by["test"]["commonsense"][0]
    assert (s.answer_format, s.answer) == ("yes_no", "yes") and check(s, "Yes.")
    m = by["test"]["knowledge"][0]
    assert m.prompt == "Q: What is 0 + 1? (A) 0 (B) 1 (C) 2 (D) 3 A:" and check(m, " (B) 1")
    first = json.loads((out / "test.jsonl").read_text().splitlines()[0])
    assert set(first) == {"id", "prompt", "answer", "domain", "answer_format"}
    # The paper config reads exactly these files.
    from laser.config import load_config

    c = load_config("configs/paper_llama3_8b.yaml", [f"tasks.train={out}/train.jsonl"])
    assert c.tasks.source == "jsonl" and c.tasks.train.endswith("data/paper/train.jsonl")


def test_laser_data_refuses_what_it_cannot_read(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["data", "gsm8k", "--out", str(tmp_path / "o"), "--source", f"gsm8k={tmp_path / 'empty'}"]) == 2
    assert "no save_to_disk dataset and no parquet files" in capsys.readouterr().err
    assert main(["data", "gsm8k", "--out", str(tmp_path / "o"), "--source", "gsm8k"]) == 2
    assert "expected DATASET=PATH" in capsys.readouterr().err
    _mmlu(tmp_path / "mmlu")
    import datasets

    datasets.load_from_disk(str(tmp_path / "mmlu"))["test"].save_to_disk(str(tmp_path / "only-test"))
    assert main(["data", "mmlu", "--out", str(tmp_path / "o"), "--source", f"mmlu={tmp_path / 'only-test'}"]) == 2
    assert "has no test split" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["data", "squad", "--out", str(tmp_path / "o")])
