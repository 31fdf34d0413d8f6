"""Build (or find in the cache) the embedded default: tokenizer, SFT policy, specialist reward models, report.

The cache directory is `$LASER_ASSETS_DIR`, else `~/.cache/laser/assets`; each recipe lives in
`<cache>/<recipe digest>/`. A build writes into a hidden temporary directory and renames it into place
only once everything, `manifest.json` last, is written: a build killed halfway leaves no directory that
looks complete, and the next call builds again. Processes building the same recipe at once take turns on
`<cache>/.<digest>.lock`: one builds, the others load its build.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from laser.console import say

from .recipe import AssetRecipe

MANIFEST = "manifest.json"


class AssetsError(RuntimeError):
    """The embedded default could not be built or read; the message says what to do."""


@dataclass(frozen=True)
class Assets:
    """Paths of a built embedded default (standard HF directories) and its measured report."""

    root: Path
    recipe: AssetRecipe
    report: dict

    @property
    def tokenizer(self) -> Path:
        return self.root / "tokenizer"

    @property
    def policy(self) -> Path:
        return self.root / "policy"

    @property
    def reward_models(self) -> dict[str, Path]:
        """The sequence-classifier reward models (`hf` backend)."""
        return {rm.name: self.root / "reward_models" / rm.name for rm in self.recipe.reward_models}

    @property
    def judges(self) -> dict[str, Path]:
        """The judge LMs (`likelihood` backend)."""
        return {j.name: self.root / "judges" / j.name for j in self.recipe.judges}

    def lineup(self, kind: str = "judges") -> tuple[dict[str, tuple[str, Path]], dict[str, dict[str, float]]]:
        """The reward models a run uses, {name: (backend, path)}, and their per-domain accuracy on the policy's
        own samples (the oracle's table).

        `judges`: the judge LMs, plus the length-hacked classifier (the RM that misleads everywhere);
        `classifiers`: the sequence classifiers alone.
        """
        rms = self.report["reward_models"]
        if kind == "classifiers":
            if not any(rms[n]["kind"] == "specialist" for n in self.reward_models):
                raise AssetsError("this world has no specialist classifiers (its recipe lists none); use "
                                  "embedded_rms: judges, or a recipe whose reward_models list specialists")
            lineup = {n: ("hf", p) for n, p in self.reward_models.items()}
            table = {n: rms[n]["on_policy_pairwise_accuracy"] for n in lineup}
        elif kind == "judges":
            lineup = {n: ("likelihood", p) for n, p in self.judges.items()}
            table = {n: self.report["judges"][n]["on_policy_pairwise_accuracy"] for n in lineup}
            for n, p in self.reward_models.items():
                if rms[n]["kind"] == "length" and n not in lineup:
                    lineup[n] = ("hf", p)
                    table[n] = rms[n]["on_policy_pairwise_accuracy"]
        else:
            raise AssetsError(f"unknown reward model lineup {kind!r}; choose judges or classifiers")
        return lineup, table

    def suite(self):
        """The task suite these models were trained and measured on (regenerated from the recipe's seed)."""
        return self.recipe.make_suite()


def default_cache_dir() -> Path:
    """`$LASER_ASSETS_DIR`, else `~/.cache/laser/assets`."""
    env = os.environ.get("LASER_ASSETS_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "laser" / "assets"


def _load(root: Path, recipe: AssetRecipe) -> Assets | None:
    manifest = root / MANIFEST
    if not manifest.is_file():
        return None
    try:
        data = json.loads(manifest.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if data.get("digest") != recipe.digest():
        return None
    return Assets(root=root, recipe=recipe, report=data["report"])


def cached_assets(recipe: AssetRecipe, cache_dir: str | os.PathLike | None = None) -> Assets | None:
    """The world of `recipe` if the cache holds it built, else None (nothing is built)."""
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return _load(cache / recipe.digest(), recipe)


def _clean_stale(cache: Path, digest: str) -> None:
    """Remove temporary directories of builds whose process is gone (killed halfway)."""
    for tmp in cache.glob(f".{digest}.tmp-*"):
        pid = tmp.name.rsplit("-", 2)[-2]
        try:
            os.kill(int(pid), 0)
        except (ValueError, ProcessLookupError):
            shutil.rmtree(tmp, ignore_errors=True)
        except PermissionError:
            pass


def build_assets(recipe: AssetRecipe | None = None, cache_dir: str | os.PathLike | None = None,
                 force: bool = False, progress: bool = True) -> Assets:
    """The embedded default for `recipe` (default recipe if None), built on the first call and cached.

    Processes that ask for the same recipe at once build it once: the others wait on the cache's lock for
    that recipe and then load what the first built.
    """
    recipe = recipe or AssetRecipe()
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    digest = recipe.digest()
    final = cache / digest
    if not force and (found := _load(final, recipe)) is not None:
        return found
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise AssetsError(f"cannot create the assets cache {cache}: {e}; "
                          "pass --cache-dir or set LASER_ASSETS_DIR") from e
    with _build_lock(cache / f".{digest}.lock", progress):
        if not force and (found := _load(final, recipe)) is not None:  # built by the process we waited for
            return found
        _clean_stale(cache, digest)
        tmp = cache / f".{digest}.tmp-{os.getpid()}-{time.time_ns()}"
        tmp.mkdir()
        try:
            report = _build_into(tmp, recipe, progress)
            (tmp / MANIFEST).write_text(json.dumps({"digest": digest, "recipe": recipe.model_dump(mode="json"),
                                                    "report": report}, indent=1))
            if final.exists():  # a forced rebuild, or an incomplete leftover: replace it
                old = cache / f".{digest}.old-{os.getpid()}-{time.time_ns()}"
                final.rename(old)
                shutil.rmtree(old, ignore_errors=True)
            tmp.rename(final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    found = _load(final, recipe)
    if found is None:
        raise AssetsError(f"the build finished but {final / MANIFEST} is unreadable; run again with --force")
    return found


@contextlib.contextmanager
def _build_lock(path: Path, progress: bool):
    """An exclusive lock on `path` (released by the OS if this process dies): one build of a recipe at a time."""
    with open(path, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _say(f"another process is building this world into {path.parent}; waiting for it", progress)
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _say(msg: str, progress: bool) -> None:
    say("build-assets", msg, progress, file=sys.stderr)


def _build_into(root: Path, recipe: AssetRecipe, progress: bool) -> dict:
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    from .judges import likelihood_scorer, on_policy_pairs, pair_accuracy, pass_at_n, sample_policy, train_judge
    from .pairs import correctness_pairs, length_pairs
    from .policy import greedy_accuracy, train_policy
    from .reward_models import pairwise_accuracy, train_reward_model
    from .tokenizer import save_char_tokenizer

    s = recipe.suite
    suite = recipe.make_suite()
    timings: dict[str, float] = {}
    save_char_tokenizer(root / "tokenizer", model_max_length=recipe.model.max_position_embeddings)
    tokenizer = AutoTokenizer.from_pretrained(root / "tokenizer")

    t0 = time.perf_counter()
    _say(f"SFT of the policy ({recipe.model.hidden_size}x{recipe.model.num_layers}) on {len(suite.train)} examples",
         progress)
    backbone = root / ".rm_backbone" if recipe.rm_training.backbone_steps else root / "policy"
    sft = train_policy(recipe.sft, recipe.model, tokenizer, suite.train, suite.validation, root / "policy",
                       seed=recipe.seed, progress=progress, backbone_steps=recipe.rm_training.backbone_steps,
                       backbone_dir=backbone)
    shutil.rmtree(root / ".policy-trainer", ignore_errors=True)
    policy = AutoModelForCausalLM.from_pretrained(root / "policy")
    policy_test = greedy_accuracy(policy, tokenizer, suite.test)
    timings["sft_s"] = time.perf_counter() - t0
    _say(f"policy kept at step {sft.kept_step}: test accuracy {_fmt(policy_test)}", progress)

    held_out = correctness_pairs(suite.test, random.Random(f"{recipe.seed}-held-out"))
    longer = length_pairs(suite.test, random.Random(f"{recipe.seed}-held-out-length"))
    t0 = time.perf_counter()
    k = recipe.targets.k
    test_samples = sample_policy(policy, tokenizer, suite.test, n=k, seed=recipe.seed)
    pass_k = pass_at_n(suite.test, test_samples)
    on_policy = on_policy_pairs(suite.test, test_samples, seed=recipe.seed)
    validation_pairs = on_policy_pairs(suite.validation, sample_policy(policy, tokenizer, suite.validation, n=k,
                                                                       seed=recipe.seed + 1), seed=recipe.seed + 1)
    timings["on_policy_pairs_s"] = time.perf_counter() - t0
    _say(f"policy pass@{k} at T=0.8: {_fmt(pass_k)}", progress)
    on_policy_table: dict[str, dict[str, float]] = {}
    rm_table: dict[str, dict[str, float]] = {}
    prefers_longer: dict[str, float] = {}
    for spec in recipe.reward_models:
        t0 = time.perf_counter()
        _say(f"reward model {spec.name!r} ({spec.kind}{': ' + ', '.join(spec.domains) if spec.domains else ''})",
             progress)
        out = root / "reward_models" / spec.name
        train_reward_model(spec, recipe.rm_training, backbone, tokenizer, suite.train, out,
                           max_length=recipe.model.max_position_embeddings, seed=recipe.seed, progress=progress)
        shutil.rmtree(out.parent / f".{spec.name}-trainer", ignore_errors=True)
        rm = AutoModelForSequenceClassification.from_pretrained(out)
        rm_table[spec.name] = pairwise_accuracy(rm, tokenizer, held_out)
        on_policy_table[spec.name] = pairwise_accuracy(rm, tokenizer, on_policy)
        prefers_longer[spec.name] = float(np.mean(list(pairwise_accuracy(rm, tokenizer, longer).values())))
        timings[f"rm_{spec.name}_s"] = time.perf_counter() - t0
        _say(f"reward model {spec.name!r} held-out pairwise accuracy {_fmt(rm_table[spec.name])}", progress)

    judge_table: dict[str, dict] = {}
    for spec in recipe.judges:
        t0 = time.perf_counter()
        _say(f"judge LM {spec.name!r} ({', '.join(spec.domains)})", progress)
        out = root / "judges" / spec.name
        init = backbone if spec.init == "backbone" else root / "policy"
        steered = train_judge(spec, recipe.sft, recipe.model, init, tokenizer, suite.train, out,
                              validation_pairs=validation_pairs,
                              off_limit=recipe.targets.off_accuracy - spec.off_margin,
                              seed=recipe.seed, progress=progress)
        shutil.rmtree(out.parent / f".{spec.name}-trainer", ignore_errors=True)
        score = likelihood_scorer(AutoModelForCausalLM.from_pretrained(out), tokenizer)
        judge_table[spec.name] = {"held_out_pairwise_accuracy": pair_accuracy(score, held_out),
                                  "on_policy_pairwise_accuracy": pair_accuracy(score, on_policy),
                                  "kept_step": steered["kept_step"], "history": steered["history"]}
        timings[f"judge_{spec.name}_s"] = time.perf_counter() - t0
        _say(f"judge LM {spec.name!r} kept at step {steered['kept_step']}: accuracy on the policy's own samples "
             f"{_fmt(judge_table[spec.name]['on_policy_pairwise_accuracy'])}", progress)

    if backbone != root / "policy":
        shutil.rmtree(backbone, ignore_errors=True)  # an intermediate: the reward models carry its weights
    report = {
        "domains": list(s.domains),
        "policy": {"kept_step": sft.kept_step, "validation_accuracy": sft.validation, "test_accuracy": policy_test,
                   f"pass_at_{k}": pass_k, "history": sft.history},
        "reward_models": {spec.name: {"kind": spec.kind, "domains": list(spec.domains),
                                      "held_out_pairwise_accuracy": rm_table[spec.name],
                                      "on_policy_pairwise_accuracy": on_policy_table[spec.name],
                                      "prefers_longer": prefers_longer[spec.name]}
                          for spec in recipe.reward_models},
        "judges": {spec.name: {"domains": list(spec.domains), **judge_table[spec.name]} for spec in recipe.judges},
        "held_out_pairs_per_domain": {d: sum(r["domain"] == d for r in held_out) for d in s.domains},
        "on_policy_pairs_per_domain": {d: sum(r["domain"] == d for r in on_policy) for d in s.domains},
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
    }
    report["timings_s"]["total_s"] = round(sum(timings.values()), 1)
    report["targets"] = check_targets(recipe, report)
    (root / "report.md").write_text(format_report(report) + "\n")
    for t in report["targets"]:
        if not t["holds"]:
            _say(f"target missed: {t['target']}: {t['detail']}", True)
    return report


def check_targets(recipe: AssetRecipe, report: dict) -> list[dict]:
    """The recipe's `targets` checked against a build report: [{target, holds, detail}]."""
    t, (lo, hi) = recipe.targets, recipe.targets.accuracy_band
    pol = report["policy"]
    out = []

    def add(target: str, cells: dict[str, float], ok) -> None:
        bad = {k: v for k, v in cells.items() if not ok(v)}
        out.append({"target": target, "holds": not bad,
                    "detail": "met" if not bad else "missed by " + _fmt(bad)})

    add(f"policy greedy test accuracy in [{lo:.0%}, {hi:.0%}] on every domain", pol["test_accuracy"],
        lambda a: lo <= a <= hi)
    add(f"policy pass@{t.k} >= {t.pass_at_k:.0%} on every domain", pol[f"pass_at_{t.k}"], lambda a: a >= t.pass_at_k)
    home, off = {}, {}
    for name, j in report["judges"].items():
        for d, a in j["on_policy_pairwise_accuracy"].items():
            (home if d in j["domains"] else off)[f"{name} on {d}"] = a
    add(f"every judge >= {t.home_accuracy:.0%} at home (policy's own samples)", home, lambda a: a >= t.home_accuracy)
    add(f"every judge <= {t.off_accuracy:.0%} off its home", off, lambda a: a <= t.off_accuracy)
    if t.misleading and off:
        worst = min(off, key=off.get)
        out.append({"target": "at least one judge misleading (< 50%) off its home", "holds": off[worst] < 0.5,
                    "detail": f"lowest off-home cell: {worst} {off[worst]:.0%}"})
    return out


def _fmt(acc: dict[str, float]) -> str:
    return ", ".join(f"{d} {a:.0%}" for d, a in acc.items())


def format_report(report: dict) -> str:
    """The policy's test accuracy and each reward model's and judge's pairwise accuracy per domain, as markdown."""
    domains = report["domains"]
    head = "| | " + " | ".join(domains) + " |\n|---|" + "---|" * len(domains)
    pol = report["policy"]["test_accuracy"]

    def cells(acc: dict, own) -> str:
        out = []
        for d in domains:
            a = f"{acc.get(d, float('nan')):.0%}"
            out.append(f"**{a}**" if d in own else a)
        return " | ".join(out)

    lines = ["Policy (SFT) greedy accuracy on the test split:", "", head,
             "| policy | " + " | ".join(f"{pol.get(d, float('nan')):.0%}" for d in domains) + " |",
             *[f"| policy {key.replace('_at_', '@')} (T=0.8) | "
               + " | ".join(f"{report['policy'][key].get(d, float('nan')):.0%}" for d in domains) + " |"
               for key in report["policy"] if key.startswith("pass_at_")], "",
             "Reward models: held-out pairwise accuracy (correct vs wrong answer on test prompts; chance 50%). "
             "Own domains in bold; the last column is how often it prefers the longer of two answers.", "",
             head[:head.index("\n")] + " longer |\n|---|" + "---|" * (len(domains) + 1)]
    for name, rm in report["reward_models"].items():
        label = f"{name} ({'length-hacked' if rm['kind'] == 'length' else 'specialist'})"
        lines.append(f"| {label} | {cells(rm['held_out_pairwise_accuracy'], rm['domains'])} "
                     f"| {rm['prefers_longer']:.0%} |")
    if "on_policy_pairs_per_domain" not in report:
        return "\n".join(lines)
    counts = ", ".join(f"{d} {n}" for d, n in report["on_policy_pairs_per_domain"].items())
    lines += ["", "On the policy's own samples (a correct and a wrong sample of the policy per test prompt, "
              f"8 samples at T=0.8; pairs: {counts}): what a training round asks of them. Judge LMs are read "
              "by mean token log-likelihood (`likelihood` backend).", "", head]
    for name, rm in report["reward_models"].items():
        lines.append(f"| {name} (classifier) | {cells(rm['on_policy_pairwise_accuracy'], rm['domains'])} |")
    for name, judge in report.get("judges", {}).items():
        lines.append(f"| {name} (judge LM) | {cells(judge['on_policy_pairwise_accuracy'], judge['domains'])} |")
    if report.get("targets"):
        lines += ["", "Targets of the recipe, checked on this build:", ""]
        lines += [f"- [{'x' if t['holds'] else ' '}] {t['target']}: {t['detail']}" for t in report["targets"]]
    if "total_s" in report.get("timings_s", {}):
        lines += ["", f"Build time: {report['timings_s']['total_s']:.0f} s."]
    return "\n".join(lines)
