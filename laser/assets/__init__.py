"""Builders of the embedded default: the tokenizer (more assets build on it)."""

from .tokenizer import DEFAULT_ALPHABET, SPECIAL_TOKENS, build_char_tokenizer, save_char_tokenizer

__all__ = ["DEFAULT_ALPHABET", "SPECIAL_TOKENS", "build_char_tokenizer", "save_char_tokenizer"]
