"""One RM per prompt, chosen by the router: the reward that `laser.integrations.trl` (a GRPO `reward_funcs` entry)
and `laser.integrations.endpoint` (an HTTP reward endpoint for OpenRLHF and verl) share.

Completions arrive flat, several per prompt (GRPO's groups, an RL batch's samples); each distinct prompt is routed
once, from the policy's context of it, and its RM alone scores its completions. Scores are normalized per RM (a
running z-score by default) so that completions scored by different RMs share one scale. A prompt whose RM could
not score any of its completions (a reward server down after its retries) is sent to the next RM the router
ranks there (`fallback`), and counted.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from laser.rewards import RewardModel, ScoreNormalizer
from laser.strategies import Assignment, Batch, RewardStrategy
from laser.strategies.scoring import CandidateTable, route_and_score


def as_text(x) -> str:
    """A prompt or completion as text: as it is, or a conversation's messages' contents, joined."""
    if isinstance(x, str):
        return x
    if isinstance(x, list) and all(isinstance(m, dict) and "content" in m for m in x):
        return "\n".join(str(m["content"]) for m in x)
    raise TypeError(f"expected a string or a list of chat messages, got {type(x).__name__}")


@dataclass
class Scored:
    """One scored batch: `rewards[i]` for completion i (None where no RM could score it); the distinct prompts
    (instances), their contexts, `instance[i]` the instance of completion i (in the order the completions came),
    the RM each instance was scored by, the RM passes."""

    rewards: list[float | None]
    prompts: list[str]
    contexts: np.ndarray
    instance: np.ndarray
    assignment: Assignment
    forward: int
    rerouted: int


class RoutedReward:
    """Scores completions with one RM per prompt, chosen by `router` from `contexts(prompts)`; callable as a TRL
    reward function (see `laser.integrations.trl`).

    `reward_models`: {name: `laser.rewards.RewardModel`}, in the router's order. `router`: a strategy over those
    names (`laser.strategies.make_strategy("laser", ...)`, or any other: `single:<rm>` gives the single-RM
    baseline behind the same function). `contexts`: the policy's embedding of prompts (a
    `laser.generation.ContextEmbedder`, or any callable from a list of prompts to an (n, d) array).
    `domain_column`: a dataset column naming each row's domain, for strategies that read it. `explore`: whether
    prompts are routed exploring (False when the router learns from held-out probes: scoring then uses what it
    knows). `fallback`: send a prompt whose RM scored none of its completions to the next RM the router ranks.
    """

    def __init__(self, reward_models: Mapping[str, RewardModel], router: RewardStrategy, contexts,
                 normalizer: str = "zscore", domain_column: str | None = None, explore: bool = False,
                 fallback: bool = True, name: str = "routed_reward"):
        if list(reward_models) != list(router.rm_names):
            raise ValueError(f"the router's reward models {list(router.rm_names)} differ from "
                             f"{list(reward_models)} (same names, same order)")
        self.reward_models, self.router = dict(reward_models), router
        self.embed: Callable[[list[str]], np.ndarray] = getattr(contexts, "embed", contexts)
        self.normalizer = ScoreNormalizer(normalizer)
        self.domain_column, self.explore, self.fallback = domain_column, explore, fallback
        self.__name__ = name  # TRL names a reward function's metrics after it
        self.calls = 0
        self.picks: Counter = Counter()  # rm -> prompts it scored, over the run
        self.rerouted: Counter = Counter()  # rm -> prompts it could not score and another RM scored instead
        self.rm_forward = 0  # (prompt, completion) pairs the RMs ran, over the run

    def score(self, prompts: Sequence, completions: Sequence, domains: Sequence[str] | None = None,
              explore: bool | None = None) -> Scored:
        """Route each distinct prompt to one RM and score its completions (see the class); `explore` overrides the
        reward's own setting for this call (held-out samples are where a router explores)."""
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts for {len(completions)} completions")
        texts = [as_text(p) for p in prompts]
        order: dict[str, int] = {}  # distinct prompt -> its instance, in first-seen order (GRPO's groups)
        for t in texts:
            order.setdefault(t, len(order))
        unique = list(order)
        groups: list[list[int]] = [[] for _ in unique]
        for i, t in enumerate(texts):
            groups[order[t]].append(i)
        table = CandidateTable.of(unique, [[as_text(completions[i]) for i in g] for g in groups])
        batch = Batch(round=self.calls, domains=None if domains is None else [str(domains[g[0]]) for g in groups],
                      explore=self.explore if explore is None else explore)
        self.calls += 1
        if not unique:
            empty = Assignment(self.router.rm_names, np.zeros((0, self.router.k), dtype=bool), np.zeros(0, int))
            return Scored([], [], np.zeros((0, 1)), np.zeros(0, dtype=np.int64), empty, 0, 0)
        contexts = np.asarray(self.embed(unique))
        routed = route_and_score(self.router, self.reward_models, self.normalizer, table, contexts, batch)
        combined, assignment, forward, rerouted = routed.combined.copy(), routed.assignment, routed.forward, 0
        if self.fallback and assignment.arms.min() >= 0:  # one RM per prompt: another can stand in for it
            combined, assignment, more, rerouted = self._reroute(table, contexts, batch, assignment, combined)
            forward += more
        rewards: list[float | None] = [None] * len(texts)
        for row, i in enumerate(i for g in groups for i in g):
            v = float(combined[row])
            rewards[i] = v if np.isfinite(v) else None
        self.picks.update({rm: int(assignment.mask[:, k].sum()) for k, rm in enumerate(self.router.rm_names)})
        self.rm_forward += forward
        instance = np.array([order[t] for t in texts], dtype=np.int64)
        return Scored(rewards, unique, contexts, instance, assignment, forward, rerouted)

    def _reroute(self, table: CandidateTable, contexts: np.ndarray, batch: Batch, assignment: Assignment,
                 combined: np.ndarray) -> tuple[np.ndarray, Assignment, int, int]:
        """Prompts whose RM scored none of their completions go to the next RM the router ranks there, until one
        scores or none is left. Returns the scores, the assignment as it ended, the RM passes and the prompts
        moved."""
        arms = assignment.arms.copy()
        ranking = self.router.ranking(contexts)
        tried = np.zeros((len(arms), self.router.k), dtype=bool)
        tried[np.arange(len(arms)), arms] = True
        forward = moved = 0
        for _ in range(self.router.k - 1):
            failed = np.array([not np.isfinite(combined[table.rows(i)]).any() for i in range(len(arms))])
            if not failed.any():
                break
            nxt = np.array([next((a for a in ranking[i] if not tried[i, a]), -1) for i in range(len(arms))])
            go = failed & (nxt >= 0)
            if not go.any():
                break
            for i in np.flatnonzero(go):
                self.rerouted[self.router.rm_names[arms[i]]] += 1
            moved += int(go.sum())
            arms[go] = nxt[go]
            tried[np.flatnonzero(go), nxt[go]] = True
            idx = np.flatnonzero(go)  # only these prompts are scored again, by their next RM
            sub = CandidateTable.of([table.prompts[i] for i in idx], [[table.texts[c] for c in table.rows(i)]
                                                                      for i in idx])
            again = route_and_score(self.router, self.reward_models, self.normalizer, sub, contexts[idx],
                                    Batch(round=batch.round, explore=batch.explore),
                                    assignment=self.router._one_per_instance(arms[idx]))
            forward += again.forward
            combined[np.concatenate([table.rows(i) for i in idx])] = again.combined
        return combined, self.router._one_per_instance(arms), forward, moved

    def __call__(self, prompts: Sequence, completions: Sequence, completion_ids=None, log_metric=None,
                 **columns) -> list[float | None]:
        """TRL's reward-function signature: one reward (or None) per completion; picks logged via `log_metric`."""
        domains = columns.get(self.domain_column) if self.domain_column is not None else None
        scored = self.score(prompts, completions, domains)
        if log_metric is not None:  # TRL averages these per logging step
            n = max(len(scored.prompts), 1)
            for k, rm in enumerate(self.router.rm_names):
                log_metric(f"router/share_{rm}", float(scored.assignment.mask[:, k].sum()) / n)
            log_metric("router/rm_forward", float(scored.forward))
        return scored.rewards

    def state_dict(self) -> dict:
        return {"router": self.router.state_dict(), "normalizer": self.normalizer.state_dict(), "calls": self.calls,
                "picks": dict(self.picks), "rerouted": dict(self.rerouted), "rm_forward": self.rm_forward}

    def load_state_dict(self, state: dict) -> None:
        self.router.load_state_dict(state["router"])
        self.normalizer.load_state_dict(state["normalizer"])
        self.calls, self.rm_forward = int(state["calls"]), int(state["rm_forward"])
        self.picks = Counter({k: int(v) for k, v in state["picks"].items()})
        self.rerouted = Counter({k: int(v) for k, v in state.get("rerouted", {}).items()})
