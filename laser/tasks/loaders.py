"""Loaders for user data: JSONL files and Hugging Face datasets (by hub name or local path).

Bad rows raise `DatasetError` naming the file, line (or row index) and field; with
`skip_bad_rows=True` they are skipped and listed in the returned `LoadReport` instead.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .base import DatasetError, Example, LoadReport
from .checkers import CHECKERS


def _row_to_example(row: Any, where: str, default_id: str, answer_format: str,
                    fields: dict[str, str]) -> Example:
    if not isinstance(row, dict):
        raise DatasetError(f"{where}: expected a JSON object with 'prompt' and 'answer', got {type(row).__name__}")
    values: dict[str, Any] = {}
    for target, source in fields.items():
        if source in row and row[source] is not None:
            values[target] = row[source]
    if "answer" not in values and "chosen" in values and "rejected" in values:  # a held-out preference
        values["answer"], values["answer_format"] = values.pop("chosen"), "preference"
    values.pop("chosen", None)
    for required in ("prompt", "answer"):
        if required not in values:
            instead = " (a preference row: 'chosen' and 'rejected')" if required == "answer" else ""
            raise DatasetError(f"{where}: field {fields[required]!r} is missing (it holds the {required}){instead}")
    answer = values["answer"]
    if isinstance(answer, bool):
        answer = "yes" if answer else "no"  # StrategyQA stores booleans
    elif isinstance(answer, int | float):
        answer = str(answer)
    values["answer"] = answer
    fmt = values.pop("answer_format", None) or answer_format
    if fmt not in CHECKERS:
        raise DatasetError(f"{where}: answer_format {fmt!r} is unknown; choose one of {sorted(CHECKERS)}")
    try:
        return Example(id=str(values.get("id", default_id)), prompt=values["prompt"], answer=values["answer"],
                       domain=str(values.get("domain", "default")), answer_format=fmt,
                       rejected=values.get("rejected"))
    except ValidationError as e:
        err = e.errors()[0]
        field = err["loc"][0] if err["loc"] else "row"
        source = fields.get(str(field), field)
        raise DatasetError(f"{where}: field {source!r}: {err['msg']}") from None


def load_jsonl(path: str | os.PathLike, answer_format: str = "exact", skip_bad_rows: bool = False,
               fields: dict[str, str] | None = None) -> tuple[list[Example], LoadReport]:
    """Read examples from a JSONL file: one object per line with `prompt`, `answer`, optional `domain`,
    `id` and `answer_format`; or, for a held-out preference (validation only), `prompt`, `chosen` and `rejected`.
    `fields` maps those names to other column names."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such file")
    cols = {"prompt": "prompt", "answer": "answer", "domain": "domain", "id": "id",
            "answer_format": "answer_format", "chosen": "chosen", "rejected": "rejected", **(fields or {})}
    report = LoadReport(str(path))
    examples: list[Example] = []
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            where = f"{path}:{lineno}"
            try:
                line = raw.decode("utf-8")
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DatasetError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
                examples.append(_row_to_example(row, where, f"{path.stem}-{lineno}", answer_format, cols))
            except UnicodeDecodeError:
                err = DatasetError(f"{where}: not valid UTF-8")
                if not skip_bad_rows:
                    raise err from None
                report.skipped.append((lineno, str(err)))
            except DatasetError as err:
                if not skip_bad_rows:
                    raise
                report.skipped.append((lineno, str(err)))
    report.kept = len(examples)
    return examples, report


def _mmlu_row(row: dict[str, Any]) -> dict[str, Any]:
    """MMLU rows (question, choices[4], answer index) -> a lettered multiple-choice prompt."""
    choices = row.get("choices")
    if not isinstance(choices, list | tuple) or len(choices) != 4:
        return row  # left as is: the missing/odd field is reported by the row check
    opts = " ".join(f"({'ABCD'[i]}) {c}" for i, c in enumerate(choices))
    ans = row.get("answer")
    letter = "ABCD"[ans] if isinstance(ans, int) and 0 <= ans < 4 else ans
    return {**row, "prompt": f"Q: {row.get('question', '')} {opts} A:", "answer": letter}


# Field mappings and answer formats of the published datasets (hub layouts).
PRESETS: dict[str, dict[str, Any]] = {
    "gsm8k": {"prompt_field": "question", "answer_field": "answer", "answer_format": "gsm8k", "domain": "math"},
    "strategyqa": {"prompt_field": "question", "answer_field": "answer", "answer_format": "yes_no",
                   "domain": "commonsense"},
    "mmlu": {"prompt_field": "prompt", "answer_field": "answer", "answer_format": "choice", "domain": "knowledge",
             "transform": _mmlu_row},
}


def load_hf(name_or_path: str, split: str = "train", prompt_field: str = "prompt", answer_field: str = "answer",
            domain: str | None = None, domain_field: str | None = None, answer_format: str = "exact",
            config: str | None = None, skip_bad_rows: bool = False, limit: int | None = None,
            preset: str | None = None) -> tuple[list[Example], LoadReport]:
    """Read examples from a Hugging Face dataset: a hub name, a directory saved with `save_to_disk`, or
    a local data file that `datasets.load_dataset` reads; fields are mapped by name. `preset` ("gsm8k",
    "strategyqa", "mmlu") sets the field names and answer format of that dataset's published layout."""
    import datasets

    transform = None
    if preset is not None:
        if preset not in PRESETS:
            raise DatasetError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
        p = dict(PRESETS[preset])
        transform = p.pop("transform", None)
        prompt_field, answer_field, answer_format = p["prompt_field"], p["answer_field"], p["answer_format"]
        domain = domain or p["domain"]

    path = Path(name_or_path)
    if path.is_dir() and ((path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()):
        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            ds = ds[split]
    elif path.is_file():
        kind = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}.get(path.suffix)
        if kind is None:
            raise DatasetError(f"{path}: unsupported file type {path.suffix!r} (use .jsonl, .json, .csv, .parquet)")
        ds = datasets.load_dataset(kind, data_files=str(path), split="train")
    else:
        ds = datasets.load_dataset(name_or_path, config, split=split)
    needed = ("question", "choices", "answer") if transform else (prompt_field, answer_field)
    missing = [f for f in (*needed, domain_field) if f and f not in ds.column_names]
    if missing:
        raise DatasetError(f"{name_or_path}: column(s) {missing} not found; columns are {ds.column_names}")
    cols = {"prompt": prompt_field, "answer": answer_field, "id": "id", "answer_format": "answer_format"}
    if domain_field:
        cols["domain"] = domain_field
    report = LoadReport(f"{name_or_path}[{split}]")
    examples: list[Example] = []
    for i, row in enumerate(ds):
        if limit is not None and len(examples) >= limit:
            break
        if transform is not None:
            row = transform(row)
        if domain and not domain_field:
            row = {**row, "__domain": domain}
            cols["domain"] = "__domain"
        try:
            examples.append(_row_to_example(row, f"{name_or_path}[{split}] row {i}", f"{path.name}-{i}",
                                            answer_format, cols))
        except DatasetError as err:
            if not skip_bad_rows:
                raise
            report.skipped.append((i, str(err)))
    report.kept = len(examples)
    return examples, report
