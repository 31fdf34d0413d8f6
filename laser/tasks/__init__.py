"""Tasks with checkable answers: the built-in synthetic suite and loaders for user data."""

from .base import DatasetError, Example, LoadReport, Splits
from .checkers import CHECKERS, check, extract_choice, extract_int, extract_yes_no
from .loaders import PRESETS, load_hf, load_jsonl
from .synthetic import ANSWER_FORMATS, DOMAINS, facts_for, make_suite

__all__ = [
    "ANSWER_FORMATS", "CHECKERS", "DOMAINS", "PRESETS", "DatasetError", "Example", "LoadReport", "Splits", "check",
    "extract_choice", "extract_int", "extract_yes_no", "facts_for", "load_hf", "load_jsonl", "make_suite",
]
