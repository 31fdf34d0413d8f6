"""Prompts for `laser bon`: a JSONL file, one object per line.

Each row needs `prompt` (a non-empty string); `id` (default: the line number), `answer`, `domain` and
`answer_format` are optional. Rows with an answer are checked (accuracy in the summary, `gold` feedback
for an online router); the oracle routes by `domain`. A bad row raises `BonInputError` naming the line,
or, with `skip_bad_rows`, is listed in the returned skips (to be written to a side file) instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from laser.tasks.base import Example
from laser.tasks.checkers import CHECKERS

from .rerank import BonError


class BonInputError(BonError):
    """A row of the prompts file cannot be used; the message names the file, line and field."""


@dataclass(frozen=True)
class PromptRow:
    """One prompt to answer."""

    id: str
    prompt: str
    answer: str | None = None
    domain: str | None = None
    answer_format: str = "exact"
    line: int = 0

    def example(self) -> Example | None:
        """The row as a checkable `Example`, when it has an answer."""
        if self.answer is None:
            return None
        return Example(id=self.id, prompt=self.prompt, answer=self.answer, domain=self.domain or "default",
                       answer_format=self.answer_format)


def _text(row: dict, key: str, where: str, required: bool = False) -> str | None:
    v = row.get(key)
    if v is None:
        if required:
            raise BonInputError(f"{where}: field {key!r} is missing")
        return None
    if isinstance(v, bool):
        v = "yes" if v else "no"
    elif isinstance(v, int | float):
        v = str(v)
    if not isinstance(v, str):
        raise BonInputError(f"{where}: field {key!r} must be a string, got {type(v).__name__}")
    if not v.strip():
        raise BonInputError(f"{where}: field {key!r} is empty")
    return v


def parse_row(raw: bytes, lineno: int, source: str, answer_format: str = "exact") -> PromptRow | None:
    """One line of the prompts file (None for a blank line)."""
    where = f"{source}:{lineno}"
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BonInputError(f"{where}: not valid UTF-8 (byte {e.start}); re-encode the file as UTF-8") from None
    if not line.strip():
        return None
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        raise BonInputError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(row, dict):
        raise BonInputError(f"{where}: expected a JSON object with a 'prompt', got {type(row).__name__}")
    fmt = _text(row, "answer_format", where) or answer_format
    if fmt not in CHECKERS:
        raise BonInputError(f"{where}: answer_format {fmt!r} is unknown; choose one of {sorted(CHECKERS)}")
    return PromptRow(id=_text(row, "id", where) or str(lineno), prompt=_text(row, "prompt", where, required=True),
                     answer=_text(row, "answer", where), domain=_text(row, "domain", where), answer_format=fmt,
                     line=lineno)


def read_prompts(path: str | Path, skip_bad_rows: bool = False,
                 answer_format: str = "exact") -> tuple[list[PromptRow], list[dict]]:
    """The rows of a prompts file and the bad rows skipped ({"line", "error", "raw"}; empty unless
    `skip_bad_rows`). Ids must be unique: `--resume` finds finished rows by id."""
    path = Path(path)
    if not path.is_file():
        raise BonInputError(f"--input {path}: no such file")
    rows: list[PromptRow] = []
    skipped: list[dict] = []
    seen: dict[str, int] = {}
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                row = parse_row(raw, lineno, str(path), answer_format)
                if row is None:
                    continue
                if row.id in seen:
                    raise BonInputError(f"{path}:{lineno}: id {row.id!r} is already used on line {seen[row.id]}; "
                                        "ids must be unique")
                seen[row.id] = lineno
                rows.append(row)
            except BonInputError as e:
                if not skip_bad_rows:
                    raise
                skipped.append({"line": lineno, "error": str(e), "raw": raw.decode("utf-8", "replace").rstrip("\n")})
    return rows, skipped
