"""How the router learns in a round: one class per `round.feedback` mode, chosen once per run.

Each class reads its host (the `Trainer`, or `laser.integrations.trl`'s GRPO callback) for what it needs: the
round, the round settings, the seeded streams, the validation rows, the strategy and its RMs, `ranks` and
`batch_of(examples)`; the update-based ones also the policy, its DPO step and its engine.

A round (`laser.training.loop.Trainer.run_round`) asks its `RouterFeedback` three things, in order:
which validation probes to sample with the training prompts (`draw_probes`, `route_probes`), what the router
learns from them before the training prompts are routed (`learn_from_probes`), and how the round's pairs are
trained and what the router learns from that update (`train`).

- `RouterFeedback` itself: no router to teach (a single RM, an ensemble, random, the oracle): one update a round.
- `RerankProbes` (`rerank_gain`, the default): a few validation prompts a round, scored by the RM the router
  picks for each; the reward is how that RM orders their right and wrong samples. One update a round.
- `GradientGain` (`gradient_gain`): each RM group's validation gain, to first order, from its DPO loss gradient
  before the one update.
- `GroupUpdates` (`validation_gain`, the paper's `train_loss`): one DPO update per RM group, each group rewarded
  by the validation gain it made (or by minus its loss).

Outside the loop, `ProbeHost` and `probe_round` run the probe stage alone: the GRPO callback's rounds, and the
offline prior of a router that starts where it serves (`laser.training.prior`).
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from laser.strategies import Assignment, Batch
from laser.strategies.scoring import CandidateTable, score_assigned
from laser.streams import Streams
from laser.tasks.base import Example
from laser.tasks.checkers import check
from laser.tasks.mistakes import wrong_answer

from .distributed import broadcast_from_main
from .feedback import gold_loglik_per_example, gold_margin_per_example, greedy_correct, local_gain, rerank_gain

if TYPE_CHECKING:
    from .loop import Trainer

Lap = Callable[[str], None]  # closes the round's current stage under a name (its seconds in the metrics line)


@dataclass
class Learned:
    """What the router learned this round: one reward per observation (`observed` marks those it learned from),
    the assignment and domain of each, and the probes' counts when it learned from probes."""

    feedback: np.ndarray
    observed: np.ndarray
    assignment: Assignment
    domains: list[str]
    stats: dict | None = None

    def by_domain(self) -> dict[str, dict[str, float]]:
        """{domain: {rm: mean reward of the observations of that domain that rm earned}}."""
        acc: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        a = self.assignment
        for i, d in enumerate(self.domains):
            if self.observed[i] and a.arms[i] >= 0:
                acc[d][a.rm_names[a.arms[i]]].append(float(self.feedback[i]))
        return {d: {rm: round(float(np.mean(v)), 6) for rm, v in sorted(row.items())}
                for d, row in sorted(acc.items())}


@dataclass
class RoutedProbes:
    """A round's probes after routing: those to sample (and their contexts), the router's picks for them
    (None during the warm-up, when every RM scores every probe), how many were drawn, how many settled and skipped,
    and which settled ones are sampled anyway (`round.retest`: `retest` marks them among the probes)."""

    probes: list[Example]
    contexts: np.ndarray
    chosen: Assignment | None
    drawn: int
    confident: int
    retest: np.ndarray | None = None

    @property
    def retested(self) -> int:
        return 0 if self.retest is None else int(self.retest.sum())


def with_preferences(probes: Sequence[Example], sampled: Sequence[list[str]]) -> list[list[str]]:
    """Each probe's completions: a held-out preference's own two (preferred, rejected), which are not sampled, and
    the policy's samples of the other probes (`sampled`, theirs in order)."""
    rest = iter(sampled)
    out = [[ex.answer, ex.rejected] if ex.is_preference else next(rest) for ex in probes]
    if next(rest, None) is not None:
        raise ValueError("more sampled probes than probes to sample")
    return out


def to_sample(probes: Sequence[Example]) -> list[Example]:
    """The probes whose completions the policy samples (a held-out preference brings its own)."""
    return [ex for ex in probes if not ex.is_preference]


class RouterFeedback:
    """No router to teach: no probes, and the round's pairs train the policy in one update."""

    # Whether the training prompts are routed exploring (False when the router has learned from probes first).
    explores_training = True

    def __init__(self, trainer: Trainer):
        self.trainer = trainer

    def draw_probes(self, embed: Callable[[list[str]], np.ndarray] | None = None) -> list[Example]:
        """This round's validation probes (`embed`: the policy's contexts of prompts, for a draw that needs them)."""
        return []

    def route_probes(self, probes: Sequence[Example], contexts: np.ndarray) -> RoutedProbes | None:
        return None

    def learn_from_probes(self, routed: RoutedProbes | None, texts: list[list[str]], normalize) \
            -> tuple[Learned | None, int]:
        """(what the router learned from the sampled probes, the RM forward passes that cost)."""
        return None, 0

    def train(self, pairs: list[dict], assignment: Assignment, contexts: np.ndarray, domains: list[str],
              lap: Lap) -> tuple[list[dict], Learned | None]:
        """Train on the round's pairs; (the DPO metrics per update, what the router learned from it)."""
        return self._update_once(pairs, lap), None

    def _update_once(self, pairs: list[dict], lap: Lap) -> list[dict]:
        m = self.trainer.dpo.update(pairs)
        lap("train")
        return [{"arm": "all", "pairs": len(pairs), "loss": m.get("loss")}]


class RerankProbes(RouterFeedback):
    """`rerank_gain`: the router learns from validation probes before the training prompts are routed."""

    explores_training = False

    def draw_probes(self, embed: Callable[[list[str]], np.ndarray] | None = None) -> list[Example]:
        """This round's `rerank_prompts` validation examples (`rerank_warmup_prompts` in a warm-up round, when set):
        a seeded draw per round (without replacement within the round), so that a resumed run draws the same ones.
        In a round that relearns after a forgotten RM (with `embed`), the draw is from the 2k rows whose contexts
        are nearest (cosine) to where the RM's rewards changed: that is where the router no longer knows (it embeds
        the whole validation split, once per relearning round). Every rank draws from rank 0's rows."""
        t = self.trainer
        s = t.settings
        k = s.rerank_warmup_prompts if t.round < s.rerank_warmup and s.rerank_warmup_prompts else s.rerank_prompts
        rng = t.streams.rng("probes", t.round)
        rows = np.arange(len(t.validation))
        if embed is not None and self.relearning():
            where = t.strategy.change_context
            if where is not None:
                ctx = np.asarray(embed([ex.prompt for ex in t.validation]), dtype=np.float64)
                near = ctx @ where / np.maximum(np.linalg.norm(ctx, axis=1) * np.linalg.norm(where), 1e-12)
                rows = np.sort(np.argsort(-near, kind="stable")[:2 * k])
            rows = broadcast_from_main(rows)  # rank 0's: the ranks' routers may place the change apart
        pick = rng.choice(rows, size=min(k, len(rows)), replace=False)
        return [t.validation[i] for i in sorted(pick)]

    def relearning(self) -> bool:
        """Whether this is one of the `relearn_rounds` after the router forgot an RM (its `last_change`), as rank 0's
        router says (the ranks' collective calls depend on it)."""
        t, s = self.trainer, self.trainer.settings
        change = t.strategy.last_change
        return bool(broadcast_from_main(change is not None and change < t.round <= change + s.relearn_rounds))

    def every_rm_round(self) -> bool:
        """Whether every RM scores this round's probes: a warm-up round, or one that relearns after a forget."""
        return self.trainer.round < self.trainer.settings.rerank_warmup or self.relearning()

    def route_probes(self, probes: Sequence[Example], contexts: np.ndarray) -> RoutedProbes:
        """Which of this round's probes are sampled and scored, and by which RM, decided from their contexts.

        During the warm-up (always, for a strategy that `reads_every_rm`) every probe is sampled and every RM
        scores it. After it the router picks one RM per probe (exploring); a probe where it is already sure of
        its pick (the picked RM's lower bound above every other RM's upper bound, `rerank_skip_settled`) could not
        change what it does there: it is neither sampled nor scored; nor, with `rerank_good_enough`, is a probe
        whose pick's lower bound reaches that rerank gain. A `retest` share of those skipped is sampled and
        scored anyway, drawn each round, so that a pick that got worse is seen."""
        t = self.trainer
        s, drawn, batch = t.settings, len(probes), t.batch_of(probes)
        if self.every_rm_round() or t.strategy.reads_every_rm:
            return RoutedProbes(list(probes), contexts, None, drawn, 0)
        chosen = broadcast_from_main(t.strategy.assign(contexts, batch))
        keep = np.ones(drawn, dtype=bool)
        if s.rerank_skip_settled and chosen.separation is not None:
            keep = ~(chosen.separation > 0)
        if s.rerank_good_enough is not None and chosen.lower is not None:
            keep &= ~(chosen.lower >= s.rerank_good_enough)
        # A share of the skipped probes is re-tested: the router's sure picks are checked against what they earn now.
        retest = ~keep & (t.streams.rng("retest", t.round).random(drawn) < s.retest)
        keep |= retest
        return RoutedProbes([p for p, k in zip(probes, keep, strict=True) if k], contexts[keep], chosen.subset(keep),
                            drawn, int((~keep).sum()), retest[keep])

    def learn_from_probes(self, routed: RoutedProbes, texts: list[list[str]], normalize) -> tuple[Learned, int]:
        """The router's reward from this round's sampled probes. Only a probe whose samples are partly right
        and partly wrong (by the gold answers) can tell one RM from another: its RM (every RM during the
        warm-up) alone scores the samples, and the reward is `rerank_gain`, how it orders the right and wrong
        ones (an RM that ties or fails on them earns 0, a good one up to 1). The other probes cost no RM
        pass. A held-out preference's completions are its own pair (`with_preferences`): its reward is +1 when the
        RM prefers the preferred one, -1 when not. Returns what the router learned (one row per (probe, RM)
        observed) and the RM forward passes."""
        t = self.trainer
        strategy = t.strategy
        right = [np.array([check(ex, c) for c in cands], dtype=bool)
                 for ex, cands in zip(routed.probes, texts, strict=True)]
        mixed = np.array([0 < r.sum() < len(r) for r in right], dtype=bool)
        warmup = routed.chosen is None  # the warm-up, or a strategy that reads every RM on every probe
        probes = [p for p, m in zip(routed.probes, mixed, strict=True) if m]
        # A probe the router's pick alone scores is a spot check of that RM: a few of its samples tell how the RM
        # orders them (`rerank_draws`; `retest_draws` for a re-tested probe, which looks for a sure pick that got
        # clearly worse). Every sample is scored in an every-RM round and by a strategy that reads every RM.
        retest = routed.retest[mixed] if routed.retest is not None else np.zeros(len(probes), dtype=bool)
        texts = draw_scored([r for r, m in zip(right, mixed, strict=True) if m],
                            [c for c, m in zip(texts, mixed, strict=True) if m],
                            [None if warmup else t.settings.retest_draws if r else t.settings.rerank_draws
                             for r in retest], t.streams.rng("probes", t.round, 1))
        contexts = routed.contexts[mixed]
        stats = {"prompts": routed.drawn, "sampled": len(routed.probes), "confident": routed.confident,
                 "retested": routed.retested, "informative": len(probes), "rm_forward": 0, "every_rm": warmup}
        if warmup:  # every RM on every probe: one assignment per RM, each observed
            every = np.ones(len(probes), dtype=bool)
            choices = [(strategy._one_per_instance(np.full(len(probes), k)), every) for k in range(strategy.k)]
        else:
            # The router's pick; with `rerank_rms` > 1 the RMs it has not ruled out there, up to that many in all.
            every = np.ones(len(routed.chosen.arms), dtype=bool)
            choices = [(a.subset(mixed), covers[mixed])
                       for a, covers in [(routed.chosen, every), *routed.chosen.runners_up(t.settings.rerank_rms - 1)]
                       if covers[mixed].any()]
        if not probes:
            choices = []
        batch = t.batch_of(probes)
        table = CandidateTable.of([ex.prompt for ex in probes], texts)
        forward, observations = 0, []
        if choices:  # one scoring call for every choice: in the warm-up the RMs (remote ones too) score at once
            union = Assignment(strategy.rm_names, np.logical_or.reduce([a.mask for a, _ in choices]),
                               np.full(len(probes), -1, dtype=np.int64))
            scores, forward, _ = score_assigned(t.rms, normalize, table, union, ranks=t.ranks)
        for assignment, covers in choices:
            feedback, _ = rerank_gain(probes, table, strategy.combine(scores, assignment, table.instance))
            feedback = broadcast_from_main(feedback)  # every rank's router sees rank 0's reward
            observations.append((contexts[covers], assignment.subset(covers), feedback[covers]))
        # The warm-up's rewards arrive together: no RM's are normalized against a shorter history for coming first.
        strategy.observe_all(observations, batch)
        k = strategy.k
        assignment = Assignment(strategy.rm_names,
                                np.concatenate([a.mask for _, a, _ in observations]) if observations
                                else np.zeros((0, k), dtype=bool),
                                np.concatenate([a.arms for _, a, _ in observations]) if observations
                                else np.zeros(0, dtype=np.int64))
        feedback = np.concatenate([g for _, _, g in observations]) if observations else np.zeros(0)
        domains = [d for _, covers in choices for d, c in zip(batch.domains, covers, strict=True) if c]
        stats["rm_forward"] = forward
        stats["picks"] = {rm: int(assignment.mask[:, j].sum()) for j, rm in enumerate(assignment.rm_names)}
        if not warmup:
            stats["second_opinions"] = int(sum(c.sum() for _, c in choices[1:]))
        return Learned(feedback, np.ones(len(feedback), dtype=bool), assignment, domains, stats), forward


def draw_scored(right: Sequence[np.ndarray], texts: list[list[str]], draws: Sequence[int | None],
                rng: np.random.Generator) -> list[list[str]]:
    """The samples of each informative probe that its RMs score (`round.rerank_draws`, `round.retest_draws`): with a
    number k of draws for it, k of its right samples and k of its wrong ones (`right`: which of its samples its gold
    answer accepts; all of a kind it has fewer of), drawn without replacement from what was sampled (a completion
    sampled twice is twice as likely to be drawn), so that the mean over the drawn (right, wrong) pairs is an
    unbiased estimate of the mean over all of them; None: every sample."""
    out = []
    for good, cands, k in zip(right, texts, draws, strict=True):
        if k is None:
            out.append(cands)
            continue
        drawn = [int(i) for kind in (good, ~good) for i in
                 np.sort(rng.choice(np.flatnonzero(kind), size=min(k, int(kind.sum())), replace=False))]
        out.append([cands[i] for i in drawn])
    return out


class _UpdateFeedback(RouterFeedback):
    """Rewards measured on the policy itself around an update: a fixed, seeded `feedback_examples` batch of the
    validation split (splits are often stored domain by domain) and its metric (`round.validation_metric`)."""

    def __init__(self, trainer: Trainer):
        super().__init__(trainer)
        s, validation = trainer.settings, trainer.validation
        pick = trainer.streams.rng("feedback_batch").permutation(len(validation))[:s.feedback_examples]
        self.batch = [validation[i] for i in sorted(pick)]
        # The wrong side of the `margin` metric: one plausible mistake per feedback example, fixed for the run.
        self.wrong = [wrong_answer(ex, random.Random(f"{trainer.seed}-{ex.id}")) for ex in self.batch] \
            if s.validation_metric == "margin" else None

    def metric(self) -> np.ndarray:
        """Per feedback example: the `round.validation_metric` of the policy now."""
        t = self.trainer
        metric, renderer = t.settings.validation_metric, t.engine.renderer
        if metric == "accuracy":
            return greedy_correct(t.policy, t.tokenizer, self.batch, renderer=renderer)
        if metric == "margin":
            return gold_margin_per_example(t.policy, t.tokenizer, self.batch, self.wrong, renderer=renderer)
        return gold_loglik_per_example(t.policy, t.tokenizer, self.batch, renderer=renderer)

    def _batch_contexts(self) -> np.ndarray:
        return self.trainer.embedder.embed([ex.prompt for ex in self.batch])

    def _credit(self, gain: np.ndarray, contexts: np.ndarray, val_contexts: np.ndarray | None) -> np.ndarray:
        """Each instance's share of a per-feedback-example gain: the mean over its `feedback_neighbors` nearest
        examples, or over all of them."""
        if val_contexts is None:
            return np.full(len(contexts), gain.mean())
        return local_gain(gain, contexts, val_contexts, self.trainer.settings.feedback_neighbors)

    def _learned(self, feedback: np.ndarray, observed: np.ndarray, assignment: Assignment, contexts: np.ndarray,
                 domains: list[str], lap: Lap) -> Learned:
        """The router learns from the training instances' own groups (every rank from rank 0's reward)."""
        feedback, observed = broadcast_from_main((feedback, observed))
        if observed.any():
            self.trainer.strategy.observe(contexts[observed], assignment.subset(observed), feedback[observed])
        lap("feedback")
        return Learned(feedback, observed, assignment, domains)


def _groups(pairs: list[dict], arms: np.ndarray) -> dict[int, list[dict]]:
    """The round's pairs by the RM (arm) that scored their instance, in arm order."""
    groups: dict[int, list[dict]] = defaultdict(list)
    for r in pairs:
        groups[int(arms[r["instance"]])].append(r)
    return dict(sorted(groups.items()))


class GradientGain(_UpdateFeedback):
    """`gradient_gain`: each group's validation gain estimated to first order before the round's one update."""

    def train(self, pairs: list[dict], assignment: Assignment, contexts: np.ndarray, domains: list[str],
              lap: Lap) -> tuple[list[dict], Learned]:
        feedback, observed = self.gains(pairs, assignment.arms, contexts)  # at the weights the pairs were built for
        lap("feedback")
        metrics = self._update_once(pairs, lap)
        return metrics, self._learned(feedback, observed, assignment, contexts, domains, lap)

    def gains(self, pairs: list[dict], arms: np.ndarray, contexts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per instance: the validation gain its RM group's update would make, to first order, without making it.

        One DPO loss gradient per group (TRL's loss on the group's pairs); the gain on feedback example j of a step
        down group k's gradient is the inner product -<grad m_j, g_k / |g_k|>, taken as a central difference of the
        validation metric at weights moved by +-eps along the direction (eps: a small share of one optimizer step,
        learning_rate * sqrt(#parameters)). 2K forward passes of the feedback batch and K backward passes of the
        pairs, instead of K updates; the round then trains once on all pairs."""
        dpo = self.trainer.dpo
        n = len(arms)
        feedback, observed = np.zeros(n), np.zeros(n, dtype=bool)
        groups = _groups(pairs, arms)
        if not groups:
            return feedback, observed
        grads = dpo.gradients(list(groups.values()))
        params = dpo.trainable()
        # 3% of an optimizer step: central differences there match autograd's inner products (docs/router.md).
        eps = 0.03 * dpo.settings.learning_rate * float(np.sqrt(sum(p.numel() for p in params)))
        saved = [p.detach().clone() for p in params]
        val_contexts = self._batch_contexts() if self.trainer.settings.feedback_neighbors else None
        try:
            for rows, g in zip(groups.values(), grads, strict=True):
                norm = float(g.norm())
                if not np.isfinite(norm) or norm == 0:
                    continue  # nothing to learn from this group: its instances stay unobserved
                moved = []
                for sign in (1.0, -1.0):
                    with torch.no_grad():
                        offset = 0
                        for p, p0 in zip(params, saved, strict=True):
                            step = g[offset:offset + p.numel()].view_as(p).to(p.device, p.dtype)
                            p.copy_(p0 + sign * eps / norm * step)
                            offset += p.numel()
                    moved.append(self.metric())
                gain = (moved[1] - moved[0]) / (2 * eps)  # -d m / d(step along g): descending the group's loss
                idx = sorted({r["instance"] for r in rows})
                feedback[idx] = self._credit(gain, contexts[idx], val_contexts)
                observed[idx] = True
        finally:
            with torch.no_grad():
                for p, p0 in zip(params, saved, strict=True):
                    p.copy_(p0)
        return feedback, observed


class GroupUpdates(_UpdateFeedback):
    """`validation_gain` / `train_loss`: one DPO update per RM group, each rewarded by what it did."""

    def train(self, pairs: list[dict], assignment: Assignment, contexts: np.ndarray, domains: list[str],
              lap: Lap) -> tuple[list[dict], Learned]:
        feedback, trained, metrics = self.update_groups(pairs, assignment.arms, contexts)
        lap("train")
        return metrics, self._learned(feedback, trained, assignment, contexts, domains, lap)

    def update_groups(self, pairs: list[dict], arms: np.ndarray,
                      contexts: np.ndarray) -> tuple[np.ndarray, np.ndarray, list]:
        """DPO on the pairs, one update per RM group; each instance's reward is its group's validation gain
        (over the whole validation mini-batch, or over the `feedback_neighbors` examples nearest to it)."""
        s, dpo = self.trainer.settings, self.trainer.dpo
        n = len(arms)
        feedback = np.zeros(n)
        trained = np.zeros(n, dtype=bool)
        groups = _groups(pairs, arms)
        local = s.feedback == "validation_gain" and s.feedback_neighbors
        val_contexts = self._batch_contexts() if local and groups else None
        metrics = []
        for arm, rows in groups.items():
            idx = sorted({r["instance"] for r in rows})
            if s.feedback == "validation_gain":
                before = self.metric()
                m = dpo.update(rows)
                feedback[idx] = self._credit(self.metric() - before, contexts[idx], val_contexts)
            else:
                m = dpo.update(rows)
                feedback[idx] = -m["loss"]
            trained[idx] = True
            metrics.append({"arm": arm, "pairs": len(rows), "loss": m.get("loss"),
                            "reward": float(feedback[idx].mean())})
        return feedback, trained, metrics


def make_router_feedback(trainer: Trainer) -> RouterFeedback:
    """The run's way of teaching its router: none for a strategy that does not learn, else by `round.feedback`."""
    if not trainer.strategy.learns:
        return RouterFeedback(trainer)
    return {"rerank_gain": RerankProbes, "gradient_gain": GradientGain, "validation_gain": GroupUpdates,
            "train_loss": GroupUpdates}[trainer.settings.feedback](trainer)


class ProbeHost:
    """What `RerankProbes` reads of a trainer, for probe rounds outside the iterative-DPO loop: the probes' settings
    and seeded streams, the held-out rows, the router and its RMs; `round` counts the probe rounds run."""

    def __init__(self, strategy, rms: dict, validation: Sequence[Example], settings, seed: int = 0):
        self.strategy, self.rms, self.settings = strategy, rms, settings
        self.validation, self.streams, self.round, self.ranks = list(validation), Streams(seed), 0, None

    def batch_of(self, examples: Sequence[Example], explore: bool = True) -> Batch:
        return Batch(round=self.round, domains=[ex.domain for ex in examples], explore=explore)


def probe_round(stage: RerankProbes, engine, embed: Callable[[list[str]], np.ndarray], normalize) \
        -> tuple[Learned, int]:
    """One probe round of `stage` (over a `ProbeHost`): draw the round's held-out rows, route them from their
    contexts (`embed`), sample the policy's completions of those to be sampled with `engine`, and teach the router
    from them. Returns (what it learned, the RM forward passes it cost)."""
    host, s = stage.trainer, stage.trainer.settings
    probes = stage.draw_probes(embed)
    routed = stage.route_probes(probes, np.asarray(embed([ex.prompt for ex in probes])))
    sample = to_sample(routed.probes)
    sampled = engine.sample([ex.prompt for ex in sample], n=s.n, temperature=s.temperature,
                            max_new_tokens=s.max_new_tokens, seed=host.streams.seed_for("sampling", host.round))
    texts = with_preferences(routed.probes, [sampled.texts(j) for j in range(len(sample))])
    learned, forward = stage.learn_from_probes(routed, texts, normalize)
    host.round += 1
    return learned, forward
