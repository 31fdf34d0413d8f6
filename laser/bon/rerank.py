"""Best-of-n reranking: route each prompt to one RM (or several), score its candidates, keep the best.

`rerank` works on candidates you already have; `best_of_n` samples them with a generation engine
first. Any `RewardStrategy` routes: LASeR's bandit (it needs the prompts' contexts), a single RM, a
random RM, an ensemble, the sequential cycle or the oracle (it needs each prompt's domain).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from laser.generation import Candidates, ContextEmbedder, GenerationEngine
from laser.rewards import RewardModel, ScoreNormalizer
from laser.strategies import Assignment, BanditStrategy, Batch, RewardStrategy
from laser.strategies.scoring import CandidateTable, route_and_score


class BonError(ValueError):
    """Bad input to best-of-n (prompts, candidates, options); the message says what to fix."""


@dataclass
class Choice:
    """The response kept for one prompt."""

    index: int                              # position of the chosen candidate in the prompt's candidate list
    text: str
    rms: tuple[str, ...]                    # the RM(s) that judged this prompt (none when it had one candidate)
    scores: list[float | None]              # combined score of every candidate (None: not scored / unscorable)
    rm_scores: dict[str, list[float | None]]  # each judging RM's normalized score of every candidate


@dataclass
class Reranked:
    """The choices of one `rerank` / `best_of_n` call and what they cost."""

    choices: list[Choice]
    assignment: Assignment
    rm_calls: int                           # (candidate, RM) scorings asked for: the cost without a cache
    forward: int                            # pairs actually run through an RM (cache misses)
    contexts: np.ndarray
    candidates: Candidates | None = None    # the samples, when `best_of_n` drew them

    def __len__(self) -> int:
        return len(self.choices)

    def __getitem__(self, i: int) -> Choice:
        return self.choices[i]

    @property
    def texts(self) -> list[str]:
        return [c.text for c in self.choices]

    @property
    def indices(self) -> list[int]:
        return [c.index for c in self.choices]


def _as_mapping(rms: Mapping[str, RewardModel] | Sequence[RewardModel]) -> dict[str, RewardModel]:
    return dict(rms) if isinstance(rms, Mapping) else {rm.name: rm for rm in rms}


def _check_candidates(prompts: Sequence[str], candidates) -> tuple[list[list[str]], list[np.ndarray]]:
    if isinstance(candidates, Candidates):
        texts = [candidates.texts(i) for i in range(len(candidates))]
        counts = [np.array([s.count for s in g], dtype=np.int64) for g in candidates.samples]
    else:
        texts = [list(g) for g in candidates]
        counts = [np.ones(len(g), dtype=np.int64) for g in texts]
    if len(texts) != len(prompts):
        raise BonError(f"got {len(prompts)} prompts and {len(texts)} candidate lists (one list per prompt)")
    for i, group in enumerate(texts):
        if not group:
            raise BonError(f"prompt {i} has no candidates; best-of-n needs at least one per prompt")
        bad = [j for j, t in enumerate(group) if not isinstance(t, str)]
        if bad:
            raise BonError(f"candidate {bad[0]} of prompt {i} is {type(group[bad[0]]).__name__}, expected str")
    return texts, counts


def _pick(scores: np.ndarray, counts: np.ndarray) -> int:
    """The best-scored candidate; ties (and a prompt no RM could score) go to the most often drawn."""
    s = np.where(np.isfinite(scores), scores, -np.inf)
    tied = np.flatnonzero(s == s.max())
    return int(tied[np.argmax(counts[tied])])


def _listed(v: np.ndarray) -> list[float | None]:
    return [float(x) if np.isfinite(x) else None for x in v]


def rerank(prompts: Sequence[str], candidates, strategy: RewardStrategy,
           rms: Mapping[str, RewardModel] | Sequence[RewardModel], contexts: np.ndarray | None = None,
           normalizer: ScoreNormalizer | None = None, domains: Sequence[str] | None = None,
           round: int = 0) -> Reranked:
    """Choose one candidate per prompt.

    `candidates`: a list of candidate texts per prompt, or the `Candidates` of an engine (then ties
    go to the most often drawn text). `contexts` (n, d): the prompts' embeddings, needed by a LASeR
    router. `normalizer` puts every RM on one scale before an ensemble combines them (default: a
    fresh per-RM z-score over this call's scores). A prompt with a single candidate costs no RM pass.
    """
    if isinstance(prompts, str):
        raise BonError("prompts must be a list of strings, not one string")
    prompts = list(prompts)
    texts, counts = _check_candidates(prompts, candidates)
    rms = _as_mapping(rms)
    if set(rms) != set(strategy.rm_names):
        raise BonError(f"the strategy routes between {list(strategy.rm_names)} but the reward models given are "
                       f"{sorted(rms)}")
    rms = {name: rms[name] for name in strategy.rm_names}
    if contexts is None:
        if isinstance(strategy, BanditStrategy):
            raise BonError("a LASeR router needs the prompts' contexts: pass contexts= (or an embedder to "
                           "best_of_n)")
        contexts = np.zeros((len(prompts), 0), dtype=np.float32)
    contexts = np.asarray(contexts)
    if len(contexts) != len(prompts):
        raise BonError(f"got {len(contexts)} contexts for {len(prompts)} prompts")
    routed = route_and_score(strategy, rms, normalizer or ScoreNormalizer("zscore"), CandidateTable.of(prompts, texts),
                             contexts, Batch(round=round, domains=list(domains) if domains is not None else None),
                             skip_single=True)
    choices = []
    for i, scores in enumerate(routed.per_instance()):
        judged = tuple(rm for k, rm in enumerate(strategy.rm_names) if routed.assignment.mask[i, k]) \
            if len(texts[i]) > 1 else ()
        j = _pick(scores, counts[i])
        rm_scores = {rm: _listed(routed.scores[rm][routed.instance == i]) for rm in judged if rm in routed.scores}
        choices.append(Choice(j, texts[i][j], judged, _listed(scores), rm_scores))
    return Reranked(choices, routed.assignment, routed.rm_calls, routed.forward, contexts)


def best_of_n(engine: GenerationEngine, prompts: Sequence[str], n: int, strategy: RewardStrategy,
              rms: Mapping[str, RewardModel] | Sequence[RewardModel], embedder: ContextEmbedder | None = None,
              normalizer: ScoreNormalizer | None = None, domains: Sequence[str] | None = None,
              temperature: float = 0.8, top_p: float = 1.0, max_new_tokens: int = 64, seed: int | None = None,
              round: int = 0) -> Reranked:
    """Sample `n` completions of each prompt with `engine`, then `rerank` them (see there)."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise BonError(f"n must be an integer >= 1 (candidates per prompt), got {n!r}")
    if isinstance(prompts, str):
        raise BonError("prompts must be a list of strings, not one string")
    prompts = list(prompts)
    cands = engine.sample(prompts, n=n, temperature=temperature, top_p=top_p,
                          max_new_tokens=max_new_tokens, seed=seed)
    contexts = embedder.embed(prompts) if embedder is not None else None
    out = rerank(prompts, cands, strategy, rms, contexts=contexts, normalizer=normalizer, domains=domains,
                 round=round)
    out.candidates = cands
    return out
