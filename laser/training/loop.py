"""The LASeR round, stage by stage, as `Trainer.run_round` reads:

    contexts -> (the router learns from its probes) -> route -> sample -> score -> pairs -> update -> sync

How the router learns is chosen once per run (`laser.training.router_feedback`): from a few validation probes a
round before routing (`rerank_gain`, the default), from each RM group's update (`validation_gain`, `train_loss`,
`gradient_gain`), or not at all for a strategy without a router. The data order (`data_order`), the checkpoint
files (`checkpoints`) and the evaluation (`evaluation`) are modules of their own.

One `Trainer` owns the policy (a transformers model the DPO step updates in place), the generation
engine (fed the new weights after every round), the reward models, the strategy and the metrics file.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from laser.config import EvalSettings, RoundSettings
from laser.generation import Candidates, ContextEmbedder, GenerationEngine
from laser.rewards import RewardModel, ScoreNormalizer
from laser.statefile import StateFileError
from laser.strategies import Assignment, Batch, RewardStrategy
from laser.strategies.scoring import CandidateTable, route_and_score
from laser.streams import Streams
from laser.tasks.base import Example

from .checkpoints import (
    TRAINER_STATE,
    count_lines,
    cuda_rng_states,
    latest_checkpoint,
    load_checkpoint,
    read_trainer_state,
    reference_name,
    save_checkpoint,
    set_cuda_rng_states,
    truncate_lines,
)
from .data_order import DataOrder
from .distributed import broadcast_from_main, gather_from_ranks, is_main_process, ranks, world
from .dpo import DPOStep
from .evaluation import eval_seed, evaluate_accuracy
from .pairs import build_pairs, pair_scores
from .router_feedback import Learned, make_router_feedback, to_sample, with_preferences

log = logging.getLogger(__name__)

__all__ = ["TRAINER_STATE", "Trainer", "latest_checkpoint", "read_trainer_state"]


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
        for split, rows in (("train", train), ("test", test)):
            if any(ex.is_preference for ex in rows):
                raise ValueError(f"the {split} split holds preference rows (chosen / rejected): they can only judge "
                                 f"reward models, so they belong in the validation split")
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
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self.lines_written = count_lines(self.metrics_path)  # lines of metrics.jsonl (a resume truncates it)
        self.seed = seed
        self.normalizer = ScoreNormalizer(normalizer)
        self.pair_normalizer = ScoreNormalizer(normalizer)  # combined scores of several RMs (`pair_scores`)
        self.round = 0
        self.reference_round = 0  # the round whose start the DPO reference is the policy of
        self.data = DataOrder(len(self.train), self.streams.rng("data_order"))  # checkpointed with the trainer
        self.picks: Counter = Counter()  # (domain, rm) -> instances assigned
        # {domain: the RM with the best measured accuracy there}: each round reports how often it was picked.
        self.oracle = dict(oracle) if oracle else None
        self.elapsed = 0.0  # seconds spent in rounds and evaluations, across resumes
        self.tracker = tracker  # a `Tracker` (TensorBoard / W&B) fed every metrics line, or None
        self.evaluation = evaluation or EvalSettings()
        self.data_sources = dict(data_sources or {})  # {domain: data source}, for per-source rules
        # How the router learns (`round.feedback`), chosen once: probes, update gains, or nothing to learn.
        self.feedback = make_router_feedback(self)
        # Several processes: each runs its share of the RMs' forward passes (the engine and the embedder, given
        # by `laser.parts`, share theirs); None in one process.
        self.ranks = ranks()

    # --- data --------------------------------------------------------------------------------------
    def next_prompts(self) -> list[Example]:
        """The next `prompts_per_round` training examples: a seeded order, no repeats within an epoch."""
        return [self.train[i] for i in self.data.take(self.settings.prompts_per_round)]

    @property
    def epoch(self) -> int:
        return self.data.epoch

    # --- one round -----------------------------------------------------------------------------------
    def run_round(self) -> dict:
        """One round, as its stages; returns (and appends to metrics.jsonl) its metrics line."""
        clock = _Clock()
        before = self._start_round()
        examples = self.next_prompts()
        probes = self.feedback.draw_probes(self.embedder.embed)
        contexts, probe_contexts = self._contexts(examples, probes)
        clock.lap("embed")
        # Contexts come from the prompts alone, so the router routes its probes before any is sampled.
        routed_probes = self.feedback.route_probes(probes, probe_contexts) if probes else None
        routed = routed_probes.probes if routed_probes else []
        cands, sampled = self._sample(examples, to_sample(routed))
        probe_texts = with_preferences(routed, sampled)
        clock.lap("generate")
        if self.engine.sleep_level:  # the engine's last use this round: its memory goes to scoring and the update
            self.engine.sleep()
            clock.lap("sleep")
        normalize = self._normalizer()
        learned, forward = self.feedback.learn_from_probes(routed_probes, probe_texts, normalize)
        if routed_probes is not None:  # the router learned first: this round's training instances use it
            clock.lap("feedback")
        domains = [ex.domain for ex in examples]
        assignment, by_domain = self._route(examples, contexts)
        table = CandidateTable.of([ex.prompt for ex in examples], [cands.texts(i) for i in range(len(examples))])
        routed = route_and_score(self.strategy, self.rms, normalize, table, contexts,
                                 self.batch_of(examples, explore=self.feedback.explores_training),
                                 assignment=assignment, ranks=self.ranks)
        forward += routed.forward
        clock.lap("score")
        pairs, pair_stats = self._pairs(table, routed.combined, assignment)
        clock.lap("pairs")
        dpo_metrics, from_update = self.feedback.train(pairs, assignment, contexts, domains, clock.lap)
        learned = from_update or learned
        sync_s = self.engine.sync_weights(self.policy)
        clock.lap("sync")
        line = {"type": "round", "round": self.round, "epoch": self.epoch, "prompts": len(examples),
                "candidates": cands.stats, "pairs": pair_stats.as_dict(), "rm_forward": forward,
                "picks": {rm: sum(row.get(rm, 0) for row in by_domain.values()) for rm in assignment.rm_names},
                "picks_by_domain": by_domain, "oracle_match": self._oracle_match(domains, assignment),
                **_learned_fields(learned), "dpo": dpo_metrics, "sync_s": round(sync_s, 4), "seconds": clock.seconds}
        if learned is not None and learned.stats is not None:
            line["probes"] = learned.stats
        self._finish_round(line, before)
        return line

    def _start_round(self) -> dict:
        """A new DPO iteration when one is due, each RM told the round, and the running counts the line reports
        as this round's differences."""
        if self.round % self.settings.rounds_per_iteration == 0:
            self.dpo.start_iteration()
            self.reference_round = self.round
        for rm in self.rms.values():
            rm.on_round(self.round)
        return {"unscorable": self._unscorable(),
                "work": self._local_work() if self.ranks is not None else None}

    def _contexts(self, examples: Sequence[Example], probes: Sequence[Example]) -> tuple[np.ndarray, np.ndarray]:
        """The policy's contexts of the training prompts and of the probes, in one embedding call."""
        both = self.embedder.embed([ex.prompt for ex in examples] + [ex.prompt for ex in probes])
        return both[:len(examples)], both[len(examples):]

    def _sample(self, examples: Sequence[Example], probes: Sequence[Example]) -> tuple[Candidates, list[list[str]]]:
        """The training prompts' candidates, and the samples of the probes still to be scored: in one generation
        call when they take as many samples (each prompt samples with its own seed, from the round's seed and its
        place in the call); probes with fewer samples (`rerank_n`) in a second call, of their own seed."""
        s = self.settings
        prompts = [ex.prompt for ex in examples]
        n_train = len(prompts)
        probe_n = s.rerank_n or s.n
        together = [ex.prompt for ex in probes] if probe_n == s.n else []
        seed = self.streams.seed_for("sampling", self.round)
        sampled = self.engine.sample(prompts + together, n=s.n, temperature=s.temperature, top_p=s.top_p,
                                     max_new_tokens=s.max_new_tokens, seed=seed)
        cands = Candidates(prompts, sampled.samples[:n_train], sampled.prompts_truncated)
        if together:
            return cands, [sampled.texts(n_train + j) for j in range(len(probes))]
        if not probes:
            return cands, []
        alone = self.engine.sample([ex.prompt for ex in probes], n=probe_n, temperature=s.temperature, top_p=s.top_p,
                                   max_new_tokens=s.max_new_tokens,
                                   seed=self.streams.seed_for("sampling", self.round, 1))
        return cands, [alone.texts(j) for j in range(len(probes))]

    def _route(self, examples: Sequence[Example], contexts: np.ndarray) -> tuple[Assignment, dict]:
        """The RM (or RMs) of each training instance, and the picks per domain (counted once: the totals are sums)."""
        batch = self.batch_of(examples, explore=self.feedback.explores_training)
        assignment = broadcast_from_main(self.strategy.assign(contexts, batch))
        by_domain = assignment.picks_by_domain(batch.domains)
        self.picks.update({(d, rm): c for d, row in by_domain.items() for rm, c in row.items()})
        return assignment, by_domain

    def _pairs(self, table: CandidateTable, combined: np.ndarray, assignment: Assignment) -> tuple[list[dict], object]:
        """The round's preference pairs from the scored candidates (every rank trains on rank 0's pairs: sampling
        may differ across GPUs)."""
        s = self.settings
        several = bool(assignment.forward_per_instance.max(initial=0) > 1)  # an ensemble's instances
        pairs, stats = build_pairs(table, pair_scores(combined, several, self.pair_normalizer), rule=s.pair_rule,
                                   min_margin=s.min_margin, num_pairs=s.num_pairs, rng=self._pair_rng(),
                                   min_chosen=s.min_chosen)
        return broadcast_from_main(pairs), stats

    def _finish_round(self, line: dict, before: dict) -> None:
        """The line's bookkeeping (router state, unscorable candidates, each rank's work), then the next round."""
        if self.strategy.reads_every_rm:  # what its choices are made from: each RM's mean gain so far, per domain
            line["validation_gain"] = self.strategy.validation_means()
        forgotten = self.strategy.take_forgotten()
        if forgotten:  # the router's change detector: these RMs earned clearly less than it expected, and start over
            line["router_forgot"] = forgotten
        # candidates an RM could not score this round (NaN or inf, a failed row, a server down after its
        # retries): left out of the pairs and the rewards, counted here per RM
        unscorable = {name: n - before["unscorable"][name] for name, n in self._unscorable().items()}
        if any(unscorable.values()):
            line["rm_unscorable"] = {name: n for name, n in unscorable.items() if n}
        if self.ranks is not None:  # what each rank did of the round's sampling and RM forward passes
            work = {k: v - before["work"][k] for k, v in self._local_work().items()}
            by_rm = {k.split(".", 1)[1]: work.pop(k) for k in list(work) if k.startswith("rm_forward_by_rm.")}
            line["ranks"] = gather_from_ranks({**work, "rm_forward_by_rm": by_rm})
        self.round += 1
        self.elapsed += sum(line["seconds"].values())
        self._write(line)

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

    def batch_of(self, examples: Sequence[Example], explore: bool = True) -> Batch:
        """What a strategy may know of `examples` this round: their domains and data sources."""
        domains = [ex.domain for ex in examples]
        sources = [self.data_sources.get(d, d) for d in domains] if self.data_sources else None
        return Batch(round=self.round, domains=domains, explore=explore, sources=sources)

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
        return {"round": self.round, **self.data.state_dict(),
                "picks": [[d, rm, c] for (d, rm), c in self.picks.items()],
                "strategy": self.strategy.state_dict(), "normalizer": self.normalizer.state_dict(),
                "pair_normalizer": self.pair_normalizer.state_dict(),
                "dpo": self.dpo.state_dict(), "reward_models": {n: rm.state_dict() for n, rm in self.rms.items()},
                "torch_rng": torch.get_rng_state(), "cuda_rng": cuda_rng_states(),
                "metrics_lines": self.lines_written,
                "elapsed": self.elapsed, "reference_round": self.reference_round}

    def load_state_dict(self, state: dict) -> None:
        self.round = state["round"]
        self.data.load_state_dict(state)
        self.picks = Counter({(d, rm): c for d, rm, c in state["picks"]})
        self.elapsed = state.get("elapsed", 0.0)
        self.strategy.load_state_dict(state["strategy"])
        self.normalizer.load_state_dict(state["normalizer"])
        if "pair_normalizer" in state:  # absent from checkpoints written before it existed
            self.pair_normalizer.load_state_dict(state["pair_normalizer"])
        self.reference_round = state.get("reference_round", 0)
        reference = None
        if state["dpo"].get("reference") == "copy" and self.reference_needed():
            reference = self.run_dir / "checkpoints" / reference_name(self.reference_round)
            if not (reference / "model.safetensors").is_file():
                raise StateFileError(f"{reference} is missing: the checkpoint of round {self.round} needs the DPO "
                                     f"reference of the iteration that started at round {self.reference_round}")
        self.dpo.load_state_dict(state["dpo"], reference=reference)
        for n, rm_state in state["reward_models"].items():
            self.rms[n].load_state_dict(rm_state)
        torch.set_rng_state(state["torch_rng"])
        set_cuda_rng_states(state.get("cuda_rng", []))
        if is_main_process():  # lines written after the checkpoint are redone
            truncate_lines(self.metrics_path, state["metrics_lines"])
        self.lines_written = state["metrics_lines"]

    def save_checkpoint(self) -> Path:
        """Write `checkpoints/round-NNNNNN/` for the round completed last (crash-safe: `laser.training.checkpoints`)."""
        return save_checkpoint(self)

    def reference_needed(self) -> bool:
        """Whether the next round continues the current iteration (and so needs its DPO reference on resume)."""
        return self.round % self.settings.rounds_per_iteration != 0

    def load_checkpoint(self, path: str | Path | None = None) -> Path:
        """Restore the newest checkpoint (or `path`): policy weights, trainer state, and the engine's weights."""
        return load_checkpoint(self, path)

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


class _Clock:
    """Seconds per stage of a round: `lap(stage)` adds the time since the last lap to that stage."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.seconds[stage] = round(self.seconds.get(stage, 0.0) + now - self.last, 4)
        self.last = now


def _learned_fields(learned: Learned | None) -> dict:
    """The metrics line's account of what the router learned this round."""
    if learned is None:
        return {"feedback_mean": None, "feedback_by_domain": {}}
    observed = learned.observed
    return {"feedback_mean": float(np.mean(learned.feedback[observed])) if observed.any() else None,
            "feedback_by_domain": learned.by_domain()}
