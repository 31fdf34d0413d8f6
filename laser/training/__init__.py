"""Training: preference pairs from scored candidates, the TRL DPO step, bandit feedback, the round loop."""

from .pairs import RULES, PairStats, build_pairs, pair_scores

__all__ = ["RULES", "PairStats", "build_pairs", "pair_scores"]
