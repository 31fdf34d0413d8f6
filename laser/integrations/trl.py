"""The router inside TRL's GRPO: a reward function that routes each prompt to one reward model, and a callback
that teaches the router from held-out probes and checkpoints it with the trainer.

    reward = RoutedReward(reward_models, router, contexts=make_embedder(model, tokenizer))
    trainer = GRPOTrainer(model=model, reward_funcs=[reward], args=GRPOConfig(...), train_dataset=train,
                          callbacks=[RouterCallback(reward, validation, every=5)])

`RoutedReward` is a plain `reward_funcs` callable (TRL 1.16's signature: `prompts`, `completions`,
`completion_ids`, the dataset's other columns as keyword arguments; one float, or None where the RM could not
score, per completion). For each distinct prompt of the batch it asks the router for one RM, from the policy's
own context of the prompt, and that RM alone scores the prompt's completions (GRPO's group). Scores are
normalized per RM by a running z-score: with GRPO's default `scale_rewards="group"` an RM's scale would not
matter anyway (advantages are standardized within a prompt's group, which one RM scores), but `"batch"` and
`"none"` compare completions of different prompts, hence of different RMs, and need the common scale.

`RouterCallback` is how the router learns (the engine's `rerank_gain`, `laser.training.router_feedback`):
every `every` optimizer steps it samples `probes` held-out validation prompts from the current policy, has the
RM the router picks for each score the samples, and rewards the router by how well that RM orders their right
and wrong answers (by the validation rows' gold answers). Its state is saved beside each trainer checkpoint
(`laser_router.safetensors`, no pickle) and restored when training resumes from one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
from transformers import TrainerCallback

from laser.config import RoundSettings
from laser.rewards import RewardModel, ScoreNormalizer
from laser.statefile import load_state, save_state
from laser.strategies import Batch, RewardStrategy
from laser.strategies.scoring import CandidateTable, route_and_score
from laser.streams import Streams
from laser.tasks.base import Example
from laser.training.router_feedback import RerankProbes, to_sample, with_preferences

ROUTER_STATE = "laser_router.safetensors"  # in each `checkpoint-N/` of the trainer's output_dir


def _text(x) -> str:
    """A prompt or completion as text: as it is, or a conversation's messages' contents, joined."""
    if isinstance(x, str):
        return x
    if isinstance(x, list) and all(isinstance(m, dict) and "content" in m for m in x):
        return "\n".join(str(m["content"]) for m in x)
    raise TypeError(f"expected a string or a list of chat messages, got {type(x).__name__}")


class RoutedReward:
    """A `GRPOTrainer` reward function: one RM per prompt, chosen by `router` from `contexts(prompts)`.

    `reward_models`: {name: `laser.rewards.RewardModel`}, in the router's order. `router`: a strategy over those
    names (`laser.strategies.make_strategy("laser", ...)`, or any other: `single:<rm>` gives the single-RM
    baseline behind the same function). `contexts`: the policy's embedding of prompts (a
    `laser.generation.ContextEmbedder`, or any callable from a list of prompts to an (n, d) array).
    `domain_column`: a dataset column naming each row's domain, for the picks per domain in the logs and for
    strategies that read it. `explore`: whether the training prompts are routed exploring (False when a
    `RouterCallback` teaches the router from probes: the training prompts then use what it knows).
    """

    def __init__(self, reward_models: Mapping[str, RewardModel], router: RewardStrategy, contexts,
                 normalizer: str = "zscore", domain_column: str | None = None, explore: bool = False,
                 name: str = "routed_reward"):
        if list(reward_models) != list(router.rm_names):
            raise ValueError(f"the router's reward models {list(router.rm_names)} differ from "
                             f"{list(reward_models)} (same names, same order)")
        self.reward_models, self.router = dict(reward_models), router
        self.embed: Callable[[list[str]], np.ndarray] = getattr(contexts, "embed", contexts)
        self.normalizer = ScoreNormalizer(normalizer)
        self.domain_column, self.explore = domain_column, explore
        self.__name__ = name  # TRL names a reward function's metrics after it
        self.calls = 0
        self.picks: Counter = Counter()  # rm -> prompts routed to it, over the run
        self.rm_forward = 0  # (prompt, completion) pairs the RMs ran, over the run

    def __call__(self, prompts: Sequence, completions: Sequence, completion_ids=None, log_metric=None,
                 **columns) -> list[float | None]:
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts for {len(completions)} completions")
        texts = [_text(p) for p in prompts]
        order: dict[str, int] = {}  # distinct prompt -> its instance, in first-seen order (GRPO's groups)
        for t in texts:
            order.setdefault(t, len(order))
        unique = list(order)
        groups: list[list[int]] = [[] for _ in unique]
        for i, t in enumerate(texts):
            groups[order[t]].append(i)
        domains = None
        if self.domain_column is not None and self.domain_column in columns:
            column = columns[self.domain_column]
            domains = [str(column[g[0]]) for g in groups]
        table = CandidateTable.of(unique, [[_text(completions[i]) for i in g] for g in groups])
        batch = Batch(round=self.calls, domains=domains, explore=self.explore)
        routed = route_and_score(self.router, self.reward_models, self.normalizer, table, self.embed(unique), batch)
        out: list[float | None] = [None] * len(texts)
        for row, i in enumerate(i for g in groups for i in g):
            v = float(routed.combined[row])
            out[i] = v if np.isfinite(v) else None
        picks = {rm: int(routed.assignment.mask[:, k].sum()) for k, rm in enumerate(self.router.rm_names)}
        self.picks.update(picks)
        self.rm_forward += routed.forward
        self.calls += 1
        if log_metric is not None:  # TRL averages these per logging step
            for rm, n in picks.items():
                log_metric(f"router/share_{rm}", n / max(len(unique), 1))
            log_metric("router/rm_forward", float(routed.forward))
        return out

    def state_dict(self) -> dict:
        return {"router": self.router.state_dict(), "normalizer": self.normalizer.state_dict(), "calls": self.calls,
                "picks": dict(self.picks), "rm_forward": self.rm_forward}

    def load_state_dict(self, state: dict) -> None:
        self.router.load_state_dict(state["router"])
        self.normalizer.load_state_dict(state["normalizer"])
        self.calls, self.rm_forward = int(state["calls"]), int(state["rm_forward"])
        self.picks = Counter({k: int(v) for k, v in state["picks"].items()})


class _ProbeHost:
    """What `RerankProbes` reads of a LASeR trainer, for a GRPO run: the probes' settings and seeded streams, the
    validation rows, the router and its RMs; `round` counts the callback's probe rounds."""

    def __init__(self, reward: RoutedReward, validation: Sequence[Example], settings: RoundSettings, seed: int):
        self.strategy, self.rms, self.settings = reward.router, reward.reward_models, settings
        self.validation, self.streams, self.round, self.ranks = list(validation), Streams(seed), 0, None

    def batch_of(self, examples: Sequence[Example], explore: bool = True) -> Batch:
        return Batch(round=self.round, domains=[ex.domain for ex in examples], explore=explore)


class RouterCallback(TrainerCallback):
    """Teaches a `RoutedReward`'s router from held-out probes every `every` optimizer steps, and checkpoints it.

    `validation`: held-out rows with gold answers (`laser.tasks.Example`, e.g. from `laser.tasks.load_jsonl`).
    Each probe round draws `probes` of them (the first `warmup` rounds `warmup_probes`, scored by every RM: the
    router has seen each RM before it routes), samples `n` completions of each from the trainer's model as it is
    then (`temperature`, `max_new_tokens`), and rewards the router by `rerank_gain` on those with right and wrong
    samples (`laser.training.router_feedback.RerankProbes`, the iterative-DPO loop's own probe stage).
    """

    def __init__(self, reward: RoutedReward, validation: Sequence[Example], every: int = 5, probes: int = 12,
                 n: int = 8, max_new_tokens: int = 16, temperature: float = 0.8, warmup: int = 1,
                 warmup_probes: int | None = 24, seed: int = 0):
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        if not validation:
            raise ValueError("the router learns from held-out validation rows: none were given")
        settings = RoundSettings(rerank_prompts=probes, n=n, max_new_tokens=max_new_tokens, temperature=temperature,
                                 rerank_warmup=warmup, rerank_warmup_prompts=warmup_probes)
        self.reward, self.every = reward, every
        self.host = _ProbeHost(reward, validation, settings, seed)
        self.probe_stage = RerankProbes(self.host)
        self.engine = None  # an HFEngine over the trainer's model, made at the first probe round
        self.lines: list[dict] = []  # one per probe round: what the router was told

    def on_train_begin(self, args, state, control, model=None, processing_class=None, **kwargs):
        """A run resumed from `checkpoint-N` (state.global_step == N) takes the router saved there."""
        path = Path(args.output_dir) / f"checkpoint-{state.global_step}" / ROUTER_STATE
        if state.global_step > 0 and path.is_file():
            self.load_state_dict(load_state(path))
        if state.global_step == 0 and self.host.round == 0:  # the warm-up, before the first routed batch
            self._probe_round(model, processing_class, state)

    def on_step_end(self, args, state, control, model=None, processing_class=None, **kwargs):
        if state.global_step % self.every == 0:
            self._probe_round(model, processing_class, state)

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            save_state(self.state_dict(), Path(args.output_dir) / f"checkpoint-{state.global_step}" / ROUTER_STATE)

    def _probe_round(self, model, tokenizer, state) -> None:
        from laser.generation.hf_engine import HFEngine

        if model is None or tokenizer is None:
            raise ValueError("RouterCallback needs the trainer's model and processing_class (a tokenizer)")
        if self.engine is None or self.engine.model is not model:
            self.engine = HFEngine.wrap(model, tokenizer)
        s, host = self.host.settings, self.host
        probes = self.probe_stage.draw_probes()
        contexts = np.asarray(self.reward.embed([ex.prompt for ex in probes]))
        routed = self.probe_stage.route_probes(probes, contexts)
        was_training = model.training
        model.eval()
        sample = to_sample(routed.probes)
        try:
            sampled = self.engine.sample([ex.prompt for ex in sample], n=s.n, temperature=s.temperature,
                                         max_new_tokens=s.max_new_tokens,
                                         seed=host.streams.seed_for("sampling", host.round))
        finally:
            model.train(was_training)
        texts = with_preferences(routed.probes, [sampled.texts(j) for j in range(len(sample))])
        learned, forward = self.probe_stage.learn_from_probes(routed, texts, self.reward.normalizer)
        self.reward.rm_forward += forward
        self.lines.append({"step": state.global_step, "probe_round": host.round, **learned.stats,
                           "feedback_by_domain": learned.by_domain()})
        host.round += 1

    def state_dict(self) -> dict:
        return {"reward": self.reward.state_dict(), "probe_round": self.host.round}

    def load_state_dict(self, state: dict) -> None:
        self.reward.load_state_dict(state["reward"])
        self.host.round = int(state["probe_round"])
