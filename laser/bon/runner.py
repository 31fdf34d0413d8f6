"""`laser bon`'s engine room: prompts in batches -> best-of-n -> one JSONL row per prompt, streamed.

Every finished batch is appended to the output file (flushed and synced) before the next starts, and
the router's state is saved beside it (`<out>.state.safetensors`, no pickle: `laser.statefile`), so a
crash loses no finished row and `resume=True` continues with the rows not yet in the file and the router as it was.

An online router learns after every batch from the feedback on the responses it chose:
`nll`: the chosen response's mean token log-probability under the policy (the negative, length-
normalized NLL: the LASeR paper's signal when no answer is known); `gold`: 1 if the chosen response is
right by the row's answer, else 0 (rows without an answer give none); `none`: the router stays frozen.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from laser.config import BonSettings
from laser.generation import Candidates, ContextEmbedder, GenerationEngine, Sample
from laser.rewards import RewardModel, ScoreNormalizer
from laser.statefile import StateFileError, load_state, save_state
from laser.strategies import RewardStrategy, StrategyError
from laser.streams import Streams
from laser.tasks.checkers import check

from .inputs import PromptRow
from .rerank import BonError, rerank


def choice_feedback(kind: str, chosen: Sequence[Sample], rows: Sequence[PromptRow]) -> tuple[np.ndarray, np.ndarray]:
    """(reward, has_reward) per prompt for the chosen responses (see the module docstring)."""
    values, ok = np.zeros(len(rows)), np.zeros(len(rows), dtype=bool)
    for i, (smp, row) in enumerate(zip(chosen, rows, strict=True)):
        if kind == "nll" and smp.cumulative_logprob is not None and smp.token_ids:
            values[i], ok[i] = smp.cumulative_logprob / len(smp.token_ids), True
        elif kind == "gold" and row.answer is not None:
            values[i], ok[i] = float(check(row.example(), smp.text)), True
    return values, ok


class BonRunner:
    """Best-of-n over batches of prompt rows with one strategy; learns online when `settings.feedback` says so."""

    def __init__(self, engine: GenerationEngine, strategy: RewardStrategy, rms: Mapping[str, RewardModel],
                 settings: BonSettings | None = None, embedder: ContextEmbedder | None = None,
                 normalizer: ScoreNormalizer | None = None):
        self.engine, self.strategy, self.rms = engine, strategy, dict(rms)
        self.settings = settings or BonSettings()
        self.embedder = embedder
        self.normalizer = normalizer or ScoreNormalizer("zscore")
        self.elapsed = 0.0
        self.observed = 0

    def step(self, rows: Sequence[PromptRow], batch_index: int = 0) -> list[dict]:
        """Best-of-n on one batch of rows; returns one output row per prompt (and learns, if online)."""
        return self.choose(rows, self.sample(rows, batch_index), batch_index)

    def sample(self, rows: Sequence[PromptRow], batch_index: int = 0) -> Candidates:
        """The n candidates of each row (seeded by the batch's position, so a resumed run draws the same)."""
        s = self.settings
        t0 = time.perf_counter()
        seed = Streams(s.seed).seed_for("sampling", batch_index)
        cands = self.engine.sample([r.prompt for r in rows], n=s.n, temperature=s.temperature, top_p=s.top_p,
                                   max_new_tokens=s.max_new_tokens, seed=seed, logprobs=s.feedback == "nll")
        self.elapsed += time.perf_counter() - t0
        return cands

    def choose(self, rows: Sequence[PromptRow], candidates: Candidates, batch_index: int = 0) -> list[dict]:
        """Rerank the rows' candidates, learn from the feedback on the choices (if online), and return one
        output row per prompt."""
        s = self.settings
        t0 = time.perf_counter()
        domains = [r.domain for r in rows]
        prompts = [r.prompt for r in rows]
        try:
            rr = rerank(prompts, candidates, self.strategy, self.rms,
                        contexts=self.embedder.embed(prompts) if self.embedder is not None else None,
                        normalizer=self.normalizer, domains=domains if all(domains) else None, round=batch_index)
        except StrategyError as e:
            if self.strategy.name == "oracle":
                raise BonError(f"--strategy oracle: {e} (every row needs a 'domain' the oracle table knows)") from e
            raise
        rr.candidates = candidates
        chosen = [rr.candidates.samples[i][c.index] for i, c in enumerate(rr.choices)]
        values, ok = choice_feedback(s.feedback, chosen, rows)
        if ok.any():
            self.strategy.observe(rr.contexts[ok], rr.assignment.subset(ok), values[ok])
            self.observed += int(ok.sum())
        out = []
        for i, (row, choice, smp) in enumerate(zip(rows, rr.choices, chosen, strict=True)):
            group = rr.candidates.samples[i]
            line = {"id": row.id, "prompt": row.prompt, "response": choice.text, "index": choice.index,
                    "n_distinct": len(group), "rms": list(choice.rms),
                    "score": choice.scores[choice.index], "rm_calls": len(choice.rms) * len(group),
                    "finish_reason": smp.finish_reason}
            if row.domain is not None:
                line["domain"] = row.domain
            if row.answer is not None:
                line["answer"] = row.answer
                line["correct"] = bool(check(row.example(), choice.text))
            if ok[i]:
                line["feedback"] = float(values[i])
            if s.keep_candidates:
                line["candidates"] = [{"text": c.text, "count": c.count, "score": sc}
                                      for c, sc in zip(group, choice.scores, strict=True)]
            out.append(line)
        self.elapsed += time.perf_counter() - t0
        return out

    def state_dict(self) -> dict:
        return {"strategy": self.strategy.state_dict(), "normalizer": self.normalizer.state_dict(),
                "elapsed": self.elapsed, "observed": self.observed,
                "reward_models": {n: rm.stats.__dict__.copy() for n, rm in self.rms.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.strategy.load_state_dict(state["strategy"])
        self.normalizer.load_state_dict(state["normalizer"])
        self.elapsed, self.observed = state["elapsed"], state["observed"]
        for n, stats in state["reward_models"].items():
            if n in self.rms:
                self.rms[n].stats.__dict__.update(stats)


def _done_ids(out: Path) -> set[str]:
    """Ids of the rows already in `out`; a torn last line (a crash mid-write) is cut off."""
    if not out.exists():
        return set()
    data = out.read_bytes()
    keep = data[:data.rfind(b"\n") + 1]  # complete lines only
    if len(keep) != len(data):
        with open(out, "r+b") as f:
            f.truncate(len(keep))
    return {json.loads(x)["id"] for x in keep.decode("utf-8").splitlines() if x.strip()}


def state_path(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".state.safetensors")


def run_bon(runner: BonRunner, rows: Sequence[PromptRow], out: str | Path, resume: bool = False,
            progress: bool = True) -> dict:
    """Answer every row not yet in `out`, appending as it goes; returns the summary of the whole file."""
    out = Path(out)
    if out.exists() and not resume:
        raise BonError(f"--out {out} already exists; pass --resume to continue it, or choose another path")
    done = _done_ids(out) if resume else set()
    if resume and state_path(out).exists():
        try:
            runner.load_state_dict(load_state(state_path(out)))
        except StateFileError as e:
            raise BonError(f"--resume: {e}") from None
    out.parent.mkdir(parents=True, exist_ok=True)
    b = runner.settings.batch_size
    bar = tqdm(total=len(rows), initial=sum(r.id in done for r in rows), desc=f"best-of-{runner.settings.n}",
               unit="prompt", disable=not progress)
    with open(out, "a", encoding="utf-8") as f:
        for start in range(0, len(rows), b):
            todo = [r for r in rows[start:start + b] if r.id not in done]
            if not todo:
                continue
            lines = runner.step(todo, batch_index=start // b)
            f.write("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines))
            f.flush()
            os.fsync(f.fileno())
            save_state(runner.state_dict(), state_path(out))
            bar.update(len(todo))
    bar.close()
    return summarize(out, runner)


def summarize(out: str | Path, runner: BonRunner | None = None) -> dict:
    """Counts, accuracy per domain (rows with an answer), RM picks and RM scorings of an output file."""
    rows = [json.loads(x) for x in Path(out).read_text(encoding="utf-8").splitlines() if x.strip()]
    hits: dict[str, list[bool]] = defaultdict(list)
    picks: Counter = Counter()
    for r in rows:
        if "correct" in r:
            hits[r.get("domain", "default")].append(r["correct"])
        picks.update(r["rms"])
    acc = {d: float(np.mean(v)) for d, v in sorted(hits.items())}
    summary = {"rows": len(rows), "answered": sum(len(v) for v in hits.values()), "accuracy": acc,
               "mean_accuracy": float(np.mean(list(acc.values()))) if acc else None,
               "picks": dict(sorted(picks.items())), "rm_calls": sum(r["rm_calls"] for r in rows)}
    if runner is not None:
        summary.update(rm_forward=sum(rm.stats.forward for rm in runner.rms.values()),
                       seconds=round(runner.elapsed, 2), feedback_observed=runner.observed,
                       strategy=runner.strategy.name, n=runner.settings.n)
    return summary


def format_summary(s: dict) -> str:
    """The summary as a few lines for the terminal."""
    lines = [f"{s['rows']} rows, best-of-{s.get('n', '?')} with {s.get('strategy', '?')}: "
             f"{s['rm_calls']} RM scorings ({s.get('rm_forward', '?')} forward passes run), "
             f"{s.get('seconds', '?')} s"]
    if s["accuracy"]:
        per = ", ".join(f"{d} {a:.1%}" for d, a in s["accuracy"].items())
        lines.append(f"accuracy {s['mean_accuracy']:.1%} over {s['answered']} rows with answers ({per})")
    if s["picks"]:
        lines.append("RM picks: " + ", ".join(f"{rm} {c}" for rm, c in s["picks"].items()))
    if s.get("feedback_observed"):
        lines.append(f"router updated online from {s['feedback_observed']} feedbacks")
    return "\n".join(lines)
