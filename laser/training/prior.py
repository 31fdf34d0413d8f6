"""An offline prior for a router that starts fresh where it serves (`laser bon --prior`, `laser serve-router
--prior`): before the first request, the policy samples completions of held-out rows, every RM scores those with
right and wrong samples, and the router observes each RM's `rerank_gain` on each: the probe stage's warm-up
round (`laser.training.router_feedback`), run once over more rows. BayesianRouter (arXiv 2510.02850) seeds its
Thompson sampling with each RM's held-out accuracy per cluster of contexts; here the router's own kernel or linear
model generalizes from the held-out contexts, with no clustering to choose. The router then adapts online.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from laser.config import RoundSettings
from laser.tasks.base import Example

from .router_feedback import ProbeHost, RerankProbes, probe_round


def learn_prior(strategy, rms: dict, normalize, engine, embed: Callable[[list[str]], np.ndarray],
                validation: Sequence[Example], rows: int = 200, n: int = 8, temperature: float = 0.8,
                max_new_tokens: int = 16, seed: int = 0) -> dict:
    """Teach `strategy` (a fresh router over `rms`) from `rows` held-out rows (a seeded draw of `validation`, all of
    them when fewer), each scored by every RM. Returns the round's counts: rows drawn, informative (right and wrong
    samples, or a held-out preference), `rm_forward` passes, and the mean gain per domain and RM."""
    if not validation:
        raise ValueError("an offline prior needs held-out rows with gold answers (or chosen/rejected): none given")
    if rows < 1:
        raise ValueError(f"an offline prior needs at least one held-out row, got rows={rows}")
    settings = RoundSettings(rerank_prompts=rows, rerank_warmup=1, rerank_warmup_prompts=rows, n=max(n, 2),
                             temperature=temperature, max_new_tokens=max_new_tokens)
    stage = RerankProbes(ProbeHost(strategy, rms, validation, settings, seed))
    learned, _ = probe_round(stage, engine, embed, normalize)
    return {**learned.stats, "feedback_by_domain": learned.by_domain()}
