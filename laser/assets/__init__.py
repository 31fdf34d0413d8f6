"""Builders of the embedded default: a character tokenizer, a tiny SFT policy, specialist RMs and judge LMs."""

from .build import Assets, AssetsError, build_assets, default_cache_dir, format_report
from .recipe import AssetRecipe, JudgeSpec, ModelSpec, RewardModelSpec, RMTrainingSpec, SFTSpec, SuiteSpec, quick_recipe
from .tokenizer import DEFAULT_ALPHABET, SPECIAL_TOKENS, build_char_tokenizer, save_char_tokenizer

__all__ = [
    "DEFAULT_ALPHABET", "SPECIAL_TOKENS", "AssetRecipe", "Assets", "AssetsError", "JudgeSpec", "ModelSpec",
    "RMTrainingSpec",
    "RewardModelSpec", "SFTSpec", "SuiteSpec", "build_assets", "build_char_tokenizer", "default_cache_dir",
    "format_report", "quick_recipe", "save_char_tokenizer",
]
