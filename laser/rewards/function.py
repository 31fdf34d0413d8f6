"""Reward functions as reward models: any Python callable, and verifiers built from the task checkers."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np

from laser.tasks.base import Example
from laser.tasks.checkers import check

from .base import RewardError, RewardModel

RewardFn = Callable[..., Sequence[float | None]]


class FunctionRM(RewardModel):
    """A callable `fn(prompts=..., completions=...) -> list[float | None]`, called like TRL's reward functions.

    `None` (or NaN) marks a completion the function cannot score. Per-prompt data (gold answers) is
    looked up by the function itself, as `verifier` does: rows reach it deduplicated and length-sorted.
    """

    def __init__(self, fn: RewardFn, name: str | None = None, batch_size: int = 1024, cache: bool = False):
        if not callable(fn):
            raise RewardError(f"FunctionRM needs a callable, got {type(fn).__name__}")
        super().__init__(name or getattr(fn, "__name__", "function"), batch_size, 1_000_000 if cache else None)
        self.fn = fn

    def _score_batch(self, prompts: list[str], completions: list[str]) -> tuple[np.ndarray, int]:
        out = self.fn(prompts=prompts, completions=completions)
        return np.array([np.nan if v is None else float(v) for v in out], dtype=np.float64), 0


def verifier(examples: Iterable[Example], name: str = "verifier") -> FunctionRM:
    """1.0 when the completion passes its example's checker, else 0.0; unscorable for unknown prompts."""
    by_prompt: dict[str, Example] = {}
    for ex in examples:
        by_prompt.setdefault(ex.prompt, ex)

    def check_answers(prompts: list[str], completions: list[str]) -> list[float | None]:
        return [None if p not in by_prompt else float(check(by_prompt[p], c))
                for p, c in zip(prompts, completions, strict=True)]

    return FunctionRM(check_answers, name=name, cache=True)
