"""The LASeR round: sample -> contexts -> router feedback on validation probes -> assign RMs -> score -> pairs
-> DPO -> sync.

With the default reward (`round.feedback: rerank_gain`) the router learns from a few validation prompts
sampled with the training prompts: it picks an RM for each, that RM scores the samples, and the reward is
how well it orders the right and wrong ones (`feedback.rerank_gain`); the round then trains
once on all pairs. The update-based rewards (`validation_gain`, the paper's `train_loss`) need one DPO
update per RM group instead, and are observed on the training instances themselves; `gradient_gain`
estimates `validation_gain` to first order from each group's loss gradient and trains once.

One `Trainer` owns the policy (a transformers model the DPO step updates in place), the generation
engine (fed the new weights after every round), the reward models, the strategy and the metrics file.
Every stage is a call to its own module; this file only wires them and keeps the books.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import time
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from laser.config import EvalSettings, RoundSettings
from laser.generation import Candidates, ContextEmbedder, GenerationEngine
from laser.rewards import RewardModel, ScoreNormalizer
from laser.statefile import StateFileError, load_state, save_state
from laser.strategies import Assignment, Batch, RewardStrategy
from laser.strategies.scoring import CandidateTable, route_and_score, score_assigned
from laser.streams import Streams
from laser.tasks.base import Example
from laser.tasks.checkers import check
from laser.tasks.mistakes import wrong_answer

from .distributed import barrier, broadcast_from_main, gather_from_ranks, is_main_process, ranks, world
from .dpo import DPOStep, is_peft
from .evaluation import eval_seed, evaluate_accuracy
from .feedback import gold_loglik_per_example, gold_margin_per_example, greedy_correct, local_gain, rerank_gain
from .pairs import build_pairs, pair_scores

log = logging.getLogger(__name__)

TRAINER_STATE = "trainer_state.safetensors"  # in each checkpoint, beside policy/: see laser.statefile


class Trainer:
    """Runs LASeR rounds (or a baseline's) on a policy, writing one metrics line per round and per eval."""

    def __init__(self, policy, tokenizer, engine: GenerationEngine, embedder: ContextEmbedder,
                 reward_models: Mapping[str, RewardModel], strategy: RewardStrategy, dpo: DPOStep,
                 train: Sequence[Example], validation: Sequence[Example], test: Sequence[Example],
                 settings: RoundSettings, run_dir: str | Path, seed: int = 0, normalizer: str = "zscore",
                 oracle: Mapping[str, str] | None = None, tracker=None, evaluation: EvalSettings | None = None,
                 data_sources: Mapping[str, str] | None = None):
        if list(reward_models) != list(strategy.rm_names):
            raise ValueError(f"the strategy's reward models {list(strategy.rm_names)} differ from the run's "
                             f"{list(reward_models)}")
        if not train:
            raise ValueError("no training prompts")
        if settings.feedback == "rerank_gain" and strategy.learns and not validation:
            raise ValueError("round.feedback: rerank_gain needs validation examples (the router's probes)")
        if strategy.reads_every_rm and settings.feedback != "rerank_gain":
            raise ValueError(f"{strategy.name} learns from every RM's rerank gain on the validation probes: set "
                             f"round.feedback: rerank_gain (it is {settings.feedback!r})")
        self.policy, self.tokenizer, self.engine, self.embedder = policy, tokenizer, engine, embedder
        self.rms, self.strategy, self.dpo, self.settings = dict(reward_models), strategy, dpo, settings
        self.train, self.validation, self.test = list(train), list(validation), list(test)
        # Every draw of the run comes from a named stream of its seed (`laser.streams`), so that none shares another's.
        self.streams = Streams(seed)
        # A fixed, seeded sample of the validation split (splits are often stored domain by domain).
        pick = self.streams.rng("feedback_batch").permutation(len(self.validation))[:settings.feedback_examples]
        self.feedback_batch = [self.validation[i] for i in sorted(pick)]
        # The wrong side of the `margin` metric: one plausible mistake per feedback example, fixed for the run.
        self.feedback_wrong = [wrong_answer(ex, random.Random(f"{seed}-{ex.id}")) for ex in self.feedback_batch] \
            if settings.validation_metric == "margin" else None
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self.lines_written = _count_lines(self.metrics_path)  # lines of metrics.jsonl (a resume truncates it)
        self.seed = seed
        self.rng = self.streams.rng("data_order")  # one permutation per epoch; its state is checkpointed
        self.normalizer = ScoreNormalizer(normalizer)
        self.pair_normalizer = ScoreNormalizer(normalizer)  # combined scores of several RMs (`pair_scores`)
        self.round = 0
        self.reference_round = 0  # the round whose start the DPO reference is the policy of
        self.epoch, self.cursor = 0, 0
        self.order = self.rng.permutation(len(self.train))
        self.picks: Counter = Counter()  # (domain, rm) -> instances assigned
        # {domain: the RM with the best measured accuracy there}: each round reports how often it was picked.
        self.oracle = dict(oracle) if oracle else None
        self.elapsed = 0.0  # seconds spent in rounds and evaluations, across resumes
        self.tracker = tracker  # a `Tracker` (TensorBoard / W&B) fed every metrics line, or None
        self.evaluation = evaluation or EvalSettings()
        self.data_sources = dict(data_sources or {})  # {domain: data source}, for per-source rules
        # Who pays for what: a learning router with an update-based reward needs one DPO update per RM group;
        # with rerank_gain it learns from validation probes; every other strategy just trains once a round.
        self.probing = strategy.learns and settings.feedback == "rerank_gain"
        self.per_group = strategy.learns and settings.feedback in ("validation_gain", "train_loss")
        # gradient_gain: one update a round, each group's gain estimated beforehand from its loss gradient
        self.gradient_gain = strategy.learns and settings.feedback == "gradient_gain"
        # Several processes: each runs its share of the RMs' forward passes (the engine and the embedder, given
        # by `laser.parts`, share theirs); None in one process.
        self.ranks = ranks()

    # --- data --------------------------------------------------------------------------------------
    def next_prompts(self) -> list[Example]:
        """The next `prompts_per_round` training examples: a seeded order, no repeats within an epoch."""
        out = []
        while len(out) < self.settings.prompts_per_round:
            if self.cursor == len(self.order):
                self.epoch += 1
                self.cursor = 0
                self.order = self.rng.permutation(len(self.train))
            take = min(self.settings.prompts_per_round - len(out), len(self.order) - self.cursor)
            out += [self.train[i] for i in self.order[self.cursor:self.cursor + take]]
            self.cursor += take
        return out

    def probe_examples(self) -> list[Example]:
        """This round's `rerank_prompts` validation examples (`rerank_warmup_prompts` in a warm-up round, when set)
        for the router's reward: a seeded draw per round (without replacement within the round), so that a resumed
        run draws the same ones."""
        s = self.settings
        k = s.rerank_warmup_prompts if self.round < s.rerank_warmup and s.rerank_warmup_prompts else s.rerank_prompts
        rng = self.streams.rng("probes", self.round)
        pick = rng.choice(len(self.validation), size=min(k, len(self.validation)), replace=False)
        return [self.validation[i] for i in sorted(pick)]

    # --- one round -----------------------------------------------------------------------------------
    def run_round(self) -> dict:
        """One round; returns (and appends to metrics.jsonl) its metrics line."""
        s = self.settings
        t: dict[str, float] = {}
        clock = time.perf_counter()

        def lap(stage: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            t[stage] = round(t.get(stage, 0.0) + now - clock, 4)
            clock = now

        if self.round % s.rounds_per_iteration == 0:
            self.dpo.start_iteration()
            self.reference_round = self.round
        for rm in self.rms.values():
            rm.on_round(self.round)
        unscorable_before = self._unscorable()
        work_before = self._local_work() if self.ranks is not None else None
        examples = self.next_prompts()
        probes = self.probe_examples() if self.probing else []
        prompts = [ex.prompt for ex in examples]
        n_train = len(prompts)
        # Contexts come from the prompts alone, so the router routes its probes before any is sampled.
        all_contexts = self.embedder.embed(prompts + [ex.prompt for ex in probes])
        contexts = all_contexts[:n_train]
        lap("embed")
        routed_probes = self._route_probes(probes, all_contexts[n_train:]) if probes else None
        probes = routed_probes.probes if probes else []
        # The training prompts and the probes still to be scored in one generation call when they take as many
        # samples (each prompt samples with its own seed, from the round's seed and its place in the call);
        # probes with fewer samples (`rerank_n`) in a second call, of their own seed.
        probe_n = s.rerank_n or s.n
        together = [ex.prompt for ex in probes] if probe_n == s.n else []
        seed = self.streams.seed_for("sampling", self.round)
        sampled = self.engine.sample(prompts + together, n=s.n, temperature=s.temperature, top_p=s.top_p,
                                     max_new_tokens=s.max_new_tokens, seed=seed)
        cands = Candidates(prompts, sampled.samples[:n_train], sampled.prompts_truncated)
        if together:
            probe_texts = [sampled.texts(n_train + j) for j in range(len(probes))]
        elif probes:
            alone = self.engine.sample([ex.prompt for ex in probes], n=probe_n, temperature=s.temperature,
                                       top_p=s.top_p, max_new_tokens=s.max_new_tokens,
                                       seed=self.streams.seed_for("sampling", self.round, 1))
            probe_texts = [alone.texts(j) for j in range(len(probes))]
        else:
            probe_texts = []
        lap("generate")
        if self.engine.sleep_level:  # the engine's last use this round: its memory goes to scoring and the update
            self.engine.sleep()
            lap("sleep")
        forward = 0
        normalize = self._normalizer()
        if routed_probes is not None:  # the router learns first: this round's training instances use it
            feedback, observed, probe_assignment, probe_stats, forward, fb_domains = self._probe_feedback(
                routed_probes, probe_texts, normalize)
            lap("feedback")
        domains = [ex.domain for ex in examples]
        batch = self._batch(examples, explore=not self.probing)
        assignment = broadcast_from_main(self.strategy.assign(contexts, batch))
        by_domain = assignment.picks_by_domain(domains)  # counted once; the totals below are its sums
        self.picks.update({(d, rm): c for d, row in by_domain.items() for rm, c in row.items()})
        # One flat table of the round's candidates, from scoring to pairs.
        table = CandidateTable.of(prompts, [cands.texts(i) for i in range(len(prompts))])
        routed = route_and_score(self.strategy, self.rms, normalize, table, contexts, batch, assignment=assignment,
                                 ranks=self.ranks)
        forward += routed.forward
        lap("score")
        several = bool(assignment.forward_per_instance.max(initial=0) > 1)  # an ensemble's instances
        pairs, pair_stats = build_pairs(table, pair_scores(routed.combined, several, self.pair_normalizer),
                                        rule=s.pair_rule, min_margin=s.min_margin, num_pairs=s.num_pairs,
                                        rng=self._pair_rng(), min_chosen=s.min_chosen)
        pairs = broadcast_from_main(pairs)  # sampling may differ across GPUs: every rank trains on rank 0's pairs
        lap("pairs")
        if self.per_group:
            feedback, observed, dpo_metrics = self._train_per_group(pairs, assignment.arms, contexts)
            lap("train")
        else:
            if self.gradient_gain:  # measured at the weights the round's pairs were built for, before the update
                feedback, observed = self._gradient_gain(pairs, assignment.arms, contexts)
                lap("feedback")
            m = self.dpo.update(pairs)
            dpo_metrics = [{"arm": "all", "pairs": len(pairs), "loss": m.get("loss")}]
            lap("train")
        if self.per_group or self.gradient_gain:  # the router learns from the training instances' own groups
            feedback, observed = broadcast_from_main((feedback, observed))  # every rank's router: rank 0's reward
            if observed.any():
                self.strategy.observe(contexts[observed], assignment.subset(observed), feedback[observed])
            fb_domains, probe_assignment, probe_stats = domains, assignment, None
            lap("feedback")
        elif routed_probes is None:
            feedback, observed, fb_domains, probe_assignment, probe_stats = None, None, [], assignment, None
        sync_s = self.engine.sync_weights(self.policy)
        lap("sync")
        line = {"type": "round", "round": self.round, "epoch": self.epoch, "prompts": len(prompts),
                "candidates": cands.stats, "pairs": pair_stats.as_dict(), "rm_forward": forward,
                "picks": {rm: sum(row.get(rm, 0) for row in by_domain.values()) for rm in assignment.rm_names},
                "picks_by_domain": by_domain,
                "oracle_match": self._oracle_match(domains, assignment),
                "feedback_mean": float(np.mean(feedback[observed])) if feedback is not None and observed.any()
                else None,
                "feedback_by_domain": _mean_by(fb_domains, probe_assignment, feedback, observed)
                if feedback is not None else {},
                "dpo": dpo_metrics, "sync_s": round(sync_s, 4), "seconds": t}
        if probe_stats is not None:
            line["probes"] = probe_stats
        if self.strategy.reads_every_rm:  # what its choices are made from: each RM's mean gain so far, per domain
            line["validation_gain"] = self.strategy.validation_means()
        forgotten = self.strategy.take_forgotten()
        if forgotten:  # the router's change detector: these RMs earned clearly less than it expected, and start over
            line["router_forgot"] = forgotten
        # candidates an RM could not score this round (NaN or inf, a failed row, a server down after its
        # retries): left out of the pairs and the rewards, counted here per RM
        unscorable = {name: n - unscorable_before[name] for name, n in self._unscorable().items()}
        if any(unscorable.values()):
            line["rm_unscorable"] = {name: n for name, n in unscorable.items() if n}
        if self.ranks is not None:  # what each rank did of the round's sampling and RM forward passes
            work = {k: v - work_before[k] for k, v in self._local_work().items()}
            by_rm = {k.split(".", 1)[1]: work.pop(k) for k in list(work) if k.startswith("rm_forward_by_rm.")}
            line["ranks"] = gather_from_ranks({**work, "rm_forward_by_rm": by_rm})
        self.round += 1
        self.elapsed += sum(t.values())
        self._write(line)
        return line

    def _local_work(self) -> dict[str, int]:
        """This process's running counts of prompts sampled and (prompt, completion) pairs run through its RMs, in
        all and per RM (`rm_forward_by_rm`: with models.rm_placement shard, only the RMs this process holds)."""
        by_rm = {name: getattr(getattr(rm, "stats", None), "computed", 0) for name, rm in self.rms.items()}
        return {"prompts_sampled": self.engine.stats.prompts, "rm_forward": sum(by_rm.values()),
                **{f"rm_forward_by_rm.{name}": n for name, n in by_rm.items()}}

    def _unscorable(self) -> dict[str, int]:
        """Each RM's running count of candidates it could not score."""
        return {name: getattr(getattr(rm, "stats", None), "unscorable", 0) for name, rm in self.rms.items()}

    def _oracle_match(self, domains: Sequence[str], assignment: Assignment) -> float | None:
        """The share of this round's RM assignments that went to the oracle's RM of each instance's domain
        (1 or 0 per instance for one RM per instance; 1/K for an ensemble, which asks every RM)."""
        if self.oracle is None:
            return None
        share = []
        for i, d in enumerate(domains):
            best = self.oracle.get(d)
            row = assignment.mask[i]
            share.append(row[assignment.rm_names.index(best)] / max(row.sum(), 1) if best in assignment.rm_names
                         else 0.0)
        return float(np.mean(share))

    def _pair_rng(self) -> np.random.Generator:
        """This round's stream for `max_random` pairs: seeded by (seed, round) alone, so it is the same on every
        rank and after a resume, and drawing pairs never moves the data order (`self.rng`, epochs only)."""
        return self.streams.rng("pairs", self.round)

    def _normalizer(self):
        """This round's score normalizer: the run's, plus `score_noise` (on raw or normalized scores) when set."""
        sigma = self.settings.score_noise
        if not sigma:
            return self.normalizer
        rng = self.streams.rng("score_noise", self.round)

        def noisy(rm: str, values, update: bool = True) -> np.ndarray:
            if self.settings.score_noise_on == "raw":
                values = np.asarray(values, dtype=np.float64)
                return self.normalizer(rm, values + rng.normal(0.0, sigma, values.shape), update)
            out = self.normalizer(rm, values, update)
            return out + rng.normal(0.0, sigma, out.shape)

        return noisy

    def _route_probes(self, probes: Sequence[Example], contexts: np.ndarray) -> _RoutedProbes:
        """Which of this round's probes are sampled and scored, and by which RM, decided from their contexts.

        During the warm-up (always, for a strategy that `reads_every_rm`) every probe is sampled and every RM
        scores it. After it the router picks one RM per probe (exploring); a probe where it is already sure of
        its pick (the picked RM's lower bound above every other RM's upper bound, `rerank_skip_settled`) could not
        change what it does there: it is neither sampled nor scored; nor, with `rerank_good_enough`, is a probe
        whose pick's lower bound reaches that rerank gain. A `retest` share of those skipped is sampled and
        scored anyway, drawn each round, so that a pick that got worse is seen."""
        drawn, batch = len(probes), self._batch(probes)
        if self.round < self.settings.rerank_warmup or self.strategy.reads_every_rm:
            return _RoutedProbes(list(probes), contexts, None, drawn, 0)
        chosen = broadcast_from_main(self.strategy.assign(contexts, batch))
        keep = np.ones(drawn, dtype=bool)
        if self.settings.rerank_skip_settled and chosen.separation is not None:
            keep = ~(chosen.separation > 0)
        good = self.settings.rerank_good_enough
        if good is not None and chosen.lower is not None:
            keep &= ~(chosen.lower >= good)
        # A share of the skipped probes is re-tested: the router's sure picks are checked against what they earn now.
        retest = ~keep & (self.streams.rng("retest", self.round).random(drawn) < self.settings.retest)
        keep |= retest
        return _RoutedProbes([p for p, k in zip(probes, keep, strict=True) if k], contexts[keep], chosen.subset(keep),
                             drawn, int((~keep).sum()), int(retest.sum()))

    def _probe_choices(self, chosen: Assignment) -> list[tuple[Assignment, np.ndarray]]:
        """The RMs that score the sampled probes after the warm-up, each as (assignment, the probes it covers): the
        router's pick on every probe; with `rerank_rms` > 1, up to that many RMs in all, the others in order of their
        upper confidence bound among those the router has not ruled out there (upper bound at or above the pick's
        lower bound). On a probe it does not cover, an assignment repeats the pick, at no RM pass."""
        out = [(chosen, np.ones(len(chosen.arms), dtype=bool))]
        if self.settings.rerank_rms == 1 or chosen.upper is None or chosen.lower is None:
            return out
        rows = np.arange(len(chosen.arms))
        upper = chosen.upper.copy()
        upper[rows, chosen.arms] = -np.inf
        order = np.argsort(-upper, axis=1, kind="stable")
        for rank in range(min(self.settings.rerank_rms, self.strategy.k) - 1):
            arms = order[:, rank]
            covers = upper[rows, arms] >= chosen.lower
            if not covers.any():
                break
            out.append((self.strategy._one_per_instance(np.where(covers, arms, chosen.arms)), covers))
        return out

    def _batch(self, examples: Sequence[Example], explore: bool = True) -> Batch:
        """What a strategy may know of `examples` this round: their domains and data sources."""
        domains = [ex.domain for ex in examples]
        sources = [self.data_sources.get(d, d) for d in domains] if self.data_sources else None
        return Batch(round=self.round, domains=domains, explore=explore, sources=sources)

    def _probe_feedback(self, routed: _RoutedProbes, texts: list[list[str]], normalize):
        """The router's reward from this round's sampled probes. Only a probe whose samples are partly right
        and partly wrong (by the gold answers) can tell one RM from another: its RM (every RM during the
        warm-up) alone scores the samples, and the reward is `rerank_gain`, how it orders the right and wrong
        ones (an RM that ties or fails on them earns 0, a good one up to 1). The other probes cost no RM
        pass. Returns (feedback, observed, assignment, stats, RM forward passes, domains), all but the
        stats and the passes over the informative probes."""
        mixed = np.array([0 < sum(check(ex, t) for t in cands) < len(cands)
                          for ex, cands in zip(routed.probes, texts, strict=True)], dtype=bool)
        probes = [p for p, m in zip(routed.probes, mixed, strict=True) if m]
        texts = [t for t, m in zip(texts, mixed, strict=True) if m]
        contexts = routed.contexts[mixed]
        warmup = routed.chosen is None  # the warm-up, or a strategy that reads every RM on every probe
        stats = {"prompts": routed.drawn, "sampled": len(routed.probes), "confident": routed.confident,
                 "retested": routed.retested,
                 "informative": len(probes), "rm_forward": 0, "every_rm": warmup}
        if warmup:  # every RM on every probe: one assignment per RM, each observed
            every = np.ones(len(probes), dtype=bool)
            choices = [(self.strategy._one_per_instance(np.full(len(probes), k)), every)
                       for k in range(self.strategy.k)]
        else:
            choices = [(a.subset(mixed), covers[mixed]) for a, covers in self._probe_choices(routed.chosen)
                       if covers[mixed].any()]
        if not probes:
            choices = []
        batch = self._batch(probes)
        table = CandidateTable.of([ex.prompt for ex in probes], texts)
        forward, observations = 0, []
        if choices:  # one scoring call for every choice: in the warm-up the RMs (remote ones too) score at once
            union = Assignment(self.strategy.rm_names, np.logical_or.reduce([a.mask for a, _ in choices]),
                               np.full(len(probes), -1, dtype=np.int64))
            scores, forward, _ = score_assigned(self.rms, normalize, table, union, ranks=self.ranks)
        for assignment, covers in choices:
            feedback, _ = rerank_gain(probes, table, self.strategy.combine(scores, assignment, table.instance))
            feedback = broadcast_from_main(feedback)  # every rank's router sees rank 0's reward
            observations.append((contexts[covers], assignment.subset(covers), feedback[covers]))
        # The warm-up's rewards arrive together: no RM's are normalized against a shorter history for coming first.
        self.strategy.observe_all(observations, batch)
        # One row per (probe, RM) observed: the metrics line reports every observation.
        k = self.strategy.k
        assignment = Assignment(self.strategy.rm_names,
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
        return feedback, np.ones(len(feedback), dtype=bool), assignment, stats, forward, domains

    @staticmethod
    def _groups(pairs: list[dict], arms: np.ndarray) -> dict[int, list[dict]]:
        """The round's pairs by the RM (arm) that scored their instance, in arm order."""
        groups: dict[int, list[dict]] = defaultdict(list)
        for r in pairs:
            groups[int(arms[r["instance"]])].append(r)
        return dict(sorted(groups.items()))

    def _credit(self, gain: np.ndarray, contexts: np.ndarray, val_contexts: np.ndarray | None) -> np.ndarray:
        """Each instance's share of a per-feedback-example gain: the mean over its `feedback_neighbors` nearest
        examples, or over all of them."""
        if val_contexts is None:
            return np.full(len(contexts), gain.mean())
        return local_gain(gain, contexts, val_contexts, self.settings.feedback_neighbors)

    def _gradient_gain(self, pairs: list[dict], arms: np.ndarray,
                       contexts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per instance: the validation gain its RM group's update would make, to first order, without making it.

        One DPO loss gradient per group (TRL's loss on the group's pairs); the gain on feedback example j of a step
        down group k's gradient is the inner product -<grad m_j, g_k / |g_k|>, taken as a central difference of the
        validation metric at weights moved by +-eps along the direction (eps: a small share of one optimizer step,
        learning_rate * sqrt(#parameters)). 2K forward passes of the feedback batch and K backward passes of the
        pairs, instead of K updates; the round then trains once on all pairs."""
        n = len(arms)
        feedback, observed = np.zeros(n), np.zeros(n, dtype=bool)
        groups = self._groups(pairs, arms)
        if not groups:
            return feedback, observed
        grads = self.dpo.gradients(list(groups.values()))
        params = self.dpo.trainable()
        # 3% of an optimizer step's size: central differences there matched autograd's inner products within 0.1%
        # on the quick world's policy (a whole step: 9% off, the metric curves; 0.1%: float32 rounding shows)
        eps = 0.03 * self.dpo.settings.learning_rate * float(np.sqrt(sum(p.numel() for p in params)))
        saved = [p.detach().clone() for p in params]
        val_contexts = self.embedder.embed([ex.prompt for ex in self.feedback_batch]) \
            if self.settings.feedback_neighbors else None
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
                    moved.append(self._validation_metric())
                gain = (moved[1] - moved[0]) / (2 * eps)  # -d m / d(step along g): descending the group's loss
                idx = sorted({r["instance"] for r in rows})
                feedback[idx] = self._credit(gain, contexts[idx], val_contexts)
                observed[idx] = True
        finally:
            with torch.no_grad():
                for p, p0 in zip(params, saved, strict=True):
                    p.copy_(p0)
        return feedback, observed

    def _train_per_group(self, pairs: list[dict], arms: np.ndarray,
                         contexts: np.ndarray) -> tuple[np.ndarray, np.ndarray, list]:
        """DPO on the pairs, one update per RM group; each instance's reward is its group's validation gain
        (over the whole validation mini-batch, or over the `feedback_neighbors` examples nearest to it)."""
        s = self.settings
        n = len(arms)
        feedback = np.zeros(n)
        trained = np.zeros(n, dtype=bool)
        groups = self._groups(pairs, arms)
        local = s.feedback == "validation_gain" and s.feedback_neighbors
        val_contexts = self.embedder.embed([ex.prompt for ex in self.feedback_batch]) if local and groups else None
        metrics = []
        for arm, rows in groups.items():
            idx = sorted({r["instance"] for r in rows})
            if s.feedback == "validation_gain":
                before = self._validation_metric()
                m = self.dpo.update(rows)
                feedback[idx] = self._credit(self._validation_metric() - before, contexts[idx], val_contexts)
            else:
                m = self.dpo.update(rows)
                feedback[idx] = -m["loss"]
            trained[idx] = True
            metrics.append({"arm": arm, "pairs": len(rows), "loss": m.get("loss"),
                            "reward": float(feedback[idx].mean())})
        return feedback, trained, metrics

    def _validation_metric(self) -> np.ndarray:
        """Per feedback example: the `round.validation_metric` of the policy now."""
        metric = self.settings.validation_metric
        if metric == "accuracy":
            return greedy_correct(self.policy, self.tokenizer, self.feedback_batch, renderer=self.engine.renderer)
        if metric == "margin":
            return gold_margin_per_example(self.policy, self.tokenizer, self.feedback_batch, self.feedback_wrong,
                                           renderer=self.engine.renderer)
        return gold_loglik_per_example(self.policy, self.tokenizer, self.feedback_batch, renderer=self.engine.renderer)

    # --- evaluation ----------------------------------------------------------------------------------
    def evaluate(self, examples: Sequence[Example] | None = None) -> dict:
        """Test accuracy per domain (and mean) by the `eval` settings, answers cut off by the length limit per
        domain, RM picks per domain so far, forward passes so far."""
        t0 = time.perf_counter()
        examples = list(examples if examples is not None else self.test)
        acc, cut = evaluate_accuracy(self.engine, examples, self.evaluation, self.settings.max_new_tokens,
                                 seed=eval_seed(self.seed, self.round))
        picks: dict[str, dict[str, int]] = defaultdict(dict)
        for (d, rm), c in sorted(self.picks.items()):
            picks[d][rm] = c
        line = {"type": "eval", "round": self.round, "accuracy": acc,
                "mean_accuracy": float(np.mean(list(acc.values()))),
                "truncated": cut, "picks": dict(picks),
                "rm_forward_total": sum(rm.stats.forward for rm in self.rms.values()), "processes": world()[1]}
        self.elapsed += time.perf_counter() - t0
        line["elapsed_s"] = round(self.elapsed, 2)
        self._write(line)
        return line

    # --- checkpoints ---------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything a resumed run needs to continue exactly as if it had not stopped (the policy aside)."""
        return {"round": self.round, "epoch": self.epoch, "cursor": self.cursor, "order": self.order.tolist(),
                "rng": self.rng.bit_generator.state, "picks": [[d, rm, c] for (d, rm), c in self.picks.items()],
                "strategy": self.strategy.state_dict(), "normalizer": self.normalizer.state_dict(),
                "pair_normalizer": self.pair_normalizer.state_dict(),
                "dpo": self.dpo.state_dict(), "reward_models": {n: rm.state_dict() for n, rm in self.rms.items()},
                "torch_rng": torch.get_rng_state(), "cuda_rng": _cuda_rng_states(),
                "metrics_lines": self.lines_written,
                "elapsed": self.elapsed, "reference_round": self.reference_round}

    def load_state_dict(self, state: dict) -> None:
        self.round, self.epoch, self.cursor = state["round"], state["epoch"], state["cursor"]
        self.order = np.array(state["order"], dtype=np.int64)
        self.rng.bit_generator.state = state["rng"]
        self.picks = Counter({(d, rm): c for d, rm, c in state["picks"]})
        self.elapsed = state.get("elapsed", 0.0)
        self.strategy.load_state_dict(state["strategy"])
        self.normalizer.load_state_dict(state["normalizer"])
        if "pair_normalizer" in state:  # absent from checkpoints written before it existed
            self.pair_normalizer.load_state_dict(state["pair_normalizer"])
        self.reference_round = state.get("reference_round", 0)
        reference = None
        if state["dpo"].get("reference") == "copy" and self._reference_needed():
            reference = self.run_dir / "checkpoints" / _reference_name(self.reference_round)
            if not (reference / "model.safetensors").is_file():
                raise StateFileError(f"{reference} is missing: the checkpoint of round {self.round} needs the DPO "
                                     f"reference of the iteration that started at round {self.reference_round}")
        self.dpo.load_state_dict(state["dpo"], reference=reference)
        for n, rm_state in state["reward_models"].items():
            self.rms[n].load_state_dict(rm_state)
        torch.set_rng_state(state["torch_rng"])
        _set_cuda_rng_states(state.get("cuda_rng", []))
        if is_main_process():  # lines written after the checkpoint are redone
            _truncate_lines(self.metrics_path, state["metrics_lines"])
        self.lines_written = state["metrics_lines"]

    def save_checkpoint(self) -> Path:
        """Write `checkpoints/round-NNNNNN/` for the round completed last, and point `latest` at it.

        Crash-safe: everything is written into a temporary directory, flushed to disk (fsync), and only then renamed
        to its name, so a name always holds a complete checkpoint; `latest` is replaced the same way. A crash or a
        second Ctrl-C during the write leaves the previous checkpoint as it was. Every rank returns once rank 0 is
        done (a barrier), so no rank runs ahead of the checkpoint or exits before it is written."""
        ckpt_root = self.run_dir / "checkpoints"
        final = ckpt_root / f"round-{self.round:06d}"
        if is_main_process():
            ckpt_root.mkdir(exist_ok=True)
            tmp = ckpt_root / f".{final.name}.tmp-{os.getpid()}"
            try:
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir()
                self.policy.save_pretrained(tmp / "policy")  # with LoRA, the adapters only
                self.tokenizer.save_pretrained(tmp / "policy")
                if self.dpo.ref_model is not None and self._reference_needed():
                    # A full fine-tuning reference is written once per iteration, beside the checkpoints that share
                    # it; not at all when the next round starts a new iteration (it makes its own).
                    ref = ckpt_root / _reference_name(self.reference_round)
                    if not (ref / "model.safetensors").is_file():
                        ref_tmp = ckpt_root / f".{ref.name}.tmp-{os.getpid()}"
                        try:
                            shutil.rmtree(ref_tmp, ignore_errors=True)
                            self.dpo.save_reference(ref_tmp)
                            _publish(ref_tmp, ref)
                        finally:
                            shutil.rmtree(ref_tmp, ignore_errors=True)
                save_state(self.state_dict(), tmp / TRAINER_STATE)
                _publish(tmp, final)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)  # only left when the write did not finish
            _replace_text(ckpt_root / "latest", final.name)
        barrier()
        return final

    def _reference_needed(self) -> bool:
        """Whether the next round continues the current iteration (and so needs its DPO reference on resume)."""
        return self.round % self.settings.rounds_per_iteration != 0

    def load_checkpoint(self, path: str | Path | None = None) -> Path:
        """Restore the newest checkpoint (or `path`): policy weights, trainer state, and the engine's weights."""
        path = latest_checkpoint(self.run_dir) if path is None else Path(path)
        if is_peft(self.policy):  # the checkpoint holds the adapters only
            from peft import set_peft_model_state_dict
            from safetensors.torch import load_file

            set_peft_model_state_dict(self.policy, load_file(path / "policy" / "adapter_model.safetensors"))
        else:
            from transformers import AutoModelForCausalLM

            self.policy.load_state_dict(AutoModelForCausalLM.from_pretrained(path / "policy").state_dict())
        self.load_state_dict(read_trainer_state(path))
        self.engine.sync_weights(self.policy)
        return path

    def _write(self, line: dict) -> None:
        if not is_main_process():  # one metrics file per run
            return
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(line) + "\n")
            f.flush()
            os.fsync(f.fileno())  # a line written is kept, whatever happens to the process or the machine next
        self.lines_written += 1
        if self.tracker is not None:
            self.tracker.log(line, index=self.lines_written)


@dataclass
class _RoutedProbes:
    """A round's probes after routing: those to sample (and their contexts), the router's picks for them
    (None during the warm-up, when every RM scores every probe), how many were drawn, how many settled and skipped,
    and how many settled ones were sampled anyway (`round.retest`)."""

    probes: list[Example]
    contexts: np.ndarray
    chosen: Assignment | None
    drawn: int
    confident: int
    retested: int = 0


def _reference_name(round_: int) -> str:
    """The directory (under checkpoints/) of the full fine-tuning reference of the iteration that started then."""
    return f"reference-{round_:06d}"


def latest_checkpoint(run_dir: str | Path) -> Path:
    """The checkpoint directory `checkpoints/latest` names (or, if a crash left `latest` naming a directory that is
    not there, the newest complete `round-*` directory)."""
    ckpt_root = Path(run_dir) / "checkpoints"
    named = ckpt_root / (ckpt_root / "latest").read_text().strip() if (ckpt_root / "latest").is_file() else None
    if named is not None and named.is_dir():
        return named  # read_trainer_state says what is wrong with it, if anything is
    complete = sorted(p for p in ckpt_root.glob("round-*") if (p / TRAINER_STATE).is_file())
    if not complete:
        raise FileNotFoundError(f"{ckpt_root} has no checkpoint to resume from (no checkpoints/latest)")
    return complete[-1]


def _publish(tmp: Path, final: Path) -> None:
    """Flush the directory `tmp` to disk and rename it to `final`, replacing what was there only once the new one
    is complete (the old one is renamed aside first and removed last)."""
    for path in sorted(tmp.rglob("*")):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
    for d in [tmp, *(p for p in tmp.rglob("*") if p.is_dir())]:
        _fsync_dir(d)
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(tmp, final)
    _fsync_dir(final.parent)
    shutil.rmtree(old, ignore_errors=True)


def _replace_text(path: Path, text: str) -> None:
    """Replace the file `path` with `text` all at once: written beside it, flushed to disk, renamed over it."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    """Flush a directory's entries (the names created or renamed in it) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_trainer_state(checkpoint: str | Path) -> dict:
    """The trainer state of a checkpoint directory, read without running any code.

    A `trainer.pt` (the pickle format of earlier versions) is never unpickled: unpickling a file can run
    whatever code it holds, and a run directory may come from someone else.
    """
    checkpoint = Path(checkpoint)
    path = checkpoint / TRAINER_STATE
    if not path.is_file() and (checkpoint / "trainer.pt").exists():
        raise StateFileError(f"{checkpoint} holds its trainer state as a pickle (trainer.pt, an earlier version's "
                             f"format), which is not loaded because unpickling can run code; start the run again "
                             f"(its metrics.jsonl stays) or resume it with the version that wrote it")
    return load_state(path)


def _cuda_rng_states() -> list:
    """Each visible GPU's torch generator state (none on a CPU-only machine)."""
    return list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else []


def _set_cuda_rng_states(states: list) -> None:
    """Restore what `_cuda_rng_states` saved; a checkpoint moved to a machine with other GPUs says so."""
    if not states:
        return
    have = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if have != len(states):
        log.warning("the checkpoint holds the random state of %d GPU(s) and this process sees %d: the resumed run "
                    "samples differently from an uninterrupted one", len(states), have)
        return
    torch.cuda.set_rng_state_all(states)


def _count_lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def _truncate_lines(path: Path, n: int) -> None:
    if path.exists():
        lines = path.read_text().splitlines(keepends=True)
        if len(lines) > n:
            _replace_text(path, "".join(lines[:n]))


def _mean_by(domains: Sequence[str], assignment: Assignment, feedback: np.ndarray,
             trained: np.ndarray) -> dict[str, dict[str, float]]:
    """{domain: {rm: mean bandit reward of the trained instances of that domain routed to that rm}}."""
    acc: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for i, d in enumerate(domains):
        if trained[i] and assignment.arms[i] >= 0:
            acc[d][assignment.rm_names[assignment.arms[i]]].append(float(feedback[i]))
    return {d: {rm: round(float(np.mean(v)), 6) for rm, v in sorted(row.items())} for d, row in sorted(acc.items())}

