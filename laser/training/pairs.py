"""Preference pairs from scored candidates: which completion of a prompt is chosen over which.

Rules (per prompt, over its distinct candidates with a finite score):
- `max_min`: the best against the worst (LASeR's description).
- `top_vs_rest`: the best against each of the next `num_pairs` ranks (LASeR's code).
- `max_random`: the best against a random other candidate.
A pair needs the chosen score to beat the rejected one by more than `min_margin` (so ties never become
pairs) and two different texts; with `min_chosen` set, the chosen score must also be at least that (on the
normalized scale, where 0 is the RM's running mean: a prompt whose best candidate the RM still scores low
teaches the chosen side's NLL term an answer that is likely wrong). A prompt without such a pair is skipped
and counted.

`pair_scores` says what scale that is: one RM's normalized score as it is; a score combined from several RMs
(an ensemble's mean, a scalarization) normalized again by its own running statistics, since a mean of K
normalized scores spreads less than each of them (the ensemble of the default world's five judges would
otherwise reach 0.5 on one prompt in ten and train on a seventh of LASeR's pairs).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from laser.strategies.scoring import CandidateTable

RULES = ("max_min", "top_vs_rest", "max_random")


@dataclass
class PairStats:
    """What pair building did with one round's candidates."""

    prompts: int = 0
    pairs: int = 0
    skipped_no_pair: int = 0       # prompts where no two candidates differ by more than the margin
    skipped_low_chosen: int = 0    # of those, prompts whose best candidate scored below min_chosen
    unscorable: int = 0            # candidates without a finite score (left out)
    skipped_prompts: list[int] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"prompts": self.prompts, "pairs": self.pairs, "skipped_no_pair": self.skipped_no_pair,
                "skipped_low_chosen": self.skipped_low_chosen, "unscorable": self.unscorable}


def pair_scores(combined: np.ndarray, several: bool, normalizer) -> np.ndarray:
    """The scores a round's pairs are built from: `combined` (one score per candidate), normalized again by
    `normalizer(name, values)` (a `laser.rewards.ScoreNormalizer` of the run's kind, kept for the run) when
    `several` RMs' scores were combined into it. The order within a round is unchanged; what changes is what
    `min_chosen` and `min_margin` measure against: the spread of the score pairs are built from, for every
    strategy alike."""
    return normalizer("combined", combined) if several else np.asarray(combined, dtype=np.float64)


def build_pairs(table: CandidateTable, scores: np.ndarray, rule: str = "max_min", min_margin: float = 0.0,
                num_pairs: int = 1, rng: np.random.Generator | None = None,
                min_chosen: float | None = None) -> tuple[list[dict], PairStats]:
    """Rows {prompt, chosen, rejected, instance, margin} in TRL's preference format, and the counts.

    `table` holds every prompt's candidates (`laser.strategies.scoring.CandidateTable`) and `scores[c]` is
    candidate c's combined score (NaN: unscorable).
    """
    if rule not in RULES:
        raise ValueError(f"unknown pair rule {rule!r}; choose one of {list(RULES)}")
    if min_margin < 0:
        raise ValueError(f"min_margin must be >= 0, got {min_margin}")
    if num_pairs < 1:
        raise ValueError(f"num_pairs must be >= 1, got {num_pairs}")
    rng = rng if rng is not None else np.random.default_rng(0)
    rows: list[dict] = []
    stats = PairStats(prompts=len(table.prompts))
    for i, s in enumerate(table.per_instance(np.asarray(scores, dtype=np.float64))):
        prompt, cands = table.prompts[i], [table.texts[c] for c in table.rows(i)]
        ok = np.flatnonzero(np.isfinite(s))
        stats.unscorable += len(s) - len(ok)
        # Highest score first; among equal scores the earlier candidate (stable sort).
        order = ok[np.argsort(-s[ok], kind="stable")]
        made = 0
        low = len(order) >= 2 and min_chosen is not None and s[order[0]] < min_chosen
        stats.skipped_low_chosen += int(low)
        if len(order) >= 2 and not low:
            best = order[0]
            if rule == "max_min":
                others = [order[-1]]
            elif rule == "top_vs_rest":
                others = list(order[1:1 + num_pairs])
            else:
                others = [rng.choice(order[1:])]
            for j in others:
                margin = s[best] - s[j]
                if margin > min_margin and cands[best] != cands[j]:
                    rows.append({"prompt": prompt, "chosen": cands[best], "rejected": cands[j], "instance": i,
                                 "margin": float(margin)})
                    made += 1
        if made == 0:
            stats.skipped_no_pair += 1
            stats.skipped_prompts.append(i)
        stats.pairs += made
    return rows, stats
