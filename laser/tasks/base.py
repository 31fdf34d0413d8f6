"""Examples, splits and the errors a dataset can raise."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, field_validator, model_validator


class DatasetError(ValueError):
    """A dataset row or file is malformed; the message names the file, line and field to fix."""


class Example(BaseModel):
    """One instance: a prompt, its gold answer, its domain and a stable id.

    `solution` is the reference completion a model imitates in SFT (the gold answer when not given), for
    answers that are better written with their reasoning: "Lima (B)" for the gold letter "B".

    A held-out preference (`answer_format="preference"`, as in RewardBench or UltraFeedback) holds the preferred
    completion as `answer` and the other as `rejected`: where no checker can judge an answer (chat, safety), the
    router's reward is whether the RM it picked prefers `answer` (its pairwise agreement). Validation rows only.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    prompt: str
    answer: str
    domain: str = "default"
    answer_format: str = "exact"
    solution: str | None = None
    rejected: str | None = None

    @property
    def is_preference(self) -> bool:
        return self.rejected is not None

    @model_validator(mode="after")
    def _preference_complete(self) -> Example:
        if (self.answer_format == "preference") != (self.rejected is not None):
            raise ValueError("a preference row has answer_format 'preference', its preferred completion as the "
                             "answer and the other as rejected (both or neither)")
        if self.rejected is not None and self.rejected.strip() == self.answer.strip():
            raise ValueError("rejected is the same text as the preferred answer: nothing to prefer")
        return self

    def target(self) -> str:
        """The completion to imitate: the solution, or else the gold answer."""
        return self.solution if self.solution is not None else self.answer

    @field_validator("prompt", "answer", "id", "domain")
    @classmethod
    def _not_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must be a non-empty string")
        return v


@dataclass
class LoadReport:
    """What a loader read: rows kept and rows skipped (with the reason), for the metrics."""

    source: str
    kept: int = 0
    skipped: list[tuple[int, str]] = field(default_factory=list)

    def summary(self) -> str:
        """One line for logs."""
        return f"{self.source}: {self.kept} rows kept, {len(self.skipped)} skipped"


@dataclass(frozen=True)
class Splits:
    """Disjoint train / validation / test examples."""

    train: tuple[Example, ...]
    validation: tuple[Example, ...]
    test: tuple[Example, ...]

    def __post_init__(self) -> None:
        seen: dict[str, str] = {}
        for name in ("train", "validation", "test"):
            for ex in getattr(self, name):
                key = ex.prompt
                if key in seen and seen[key] != name:
                    raise DatasetError(f"prompt {key!r} is in both {seen[key]} and {name}: splits must not overlap")
                seen[key] = name

    def domains(self) -> list[str]:
        """Sorted domain names present in any split."""
        return sorted({ex.domain for ex in self.all()})

    def all(self) -> Iterable[Example]:
        """Every example of every split."""
        yield from self.train
        yield from self.validation
        yield from self.test
