"""`laser soup`: rewarded soups of finished runs (Rame et al., "Rewarded soups", NeurIPS 2023).

Policies fine-tuned from one start, each with its own reward model, are interpolated weight by weight,
theta(lambda) = sum_k lambda_k theta_k: one set of trainings gives a whole front of trade-offs, chosen at
deployment time without training again. Each soup is evaluated on the test split exactly as the runs
evaluate (`laser.training.evaluation`: the first run's `eval` settings and test set), through one engine
whose weights are replaced in place, soup after soup. LoRA runs have their adapters merged first.

Writes `<out>/soup.md` (a row per soup), `soup.json` (every number) and `soup.png` (the front).
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM

from laser.config import ConfigError, RunConfig
from laser.generation import make_engine
from laser.parts import load_tasks, resolve_models
from laser.placement import resolve_device
from laser.report import RunSummary, plot_pareto, read_run
from laser.training.checkpoints import latest_checkpoint
from laser.training.evaluation import eval_seed, evaluate_accuracy
from laser.training.rundir import load_run_config

SOUP_FILE = "soup.json"


class SoupError(ValueError):
    """Runs that cannot be mixed, or weights that are not a point of the simplex; the message says which."""


@dataclass(frozen=True)
class Ingredient:
    """A finished run: its directory, config, final checkpoint and what it started from."""

    run_dir: Path
    config: RunConfig
    checkpoint: Path
    start: str

    @property
    def name(self) -> str:
        return self.run_dir.name

    @property
    def lora(self) -> bool:
        return (self.checkpoint / "policy" / "adapter_model.safetensors").is_file()


@dataclass
class Soup:
    """The soups of one `run_soup` call: the runs, the weights of each soup and its test accuracy."""

    runs: list[str]
    rows: list[dict] = field(default_factory=list)  # {"weights": [...], "accuracy": {d: a}, "mean_accuracy": m}
    ingredients: list[dict] = field(default_factory=list)  # each run's own final evaluation and cost
    seconds: float = 0.0

    def to_json(self) -> dict:
        return {"runs": self.runs, "rows": self.rows, "ingredients": self.ingredients, "seconds": self.seconds}


def load_ingredient(run_dir: str | Path) -> Ingredient:
    """A finished run directory as a soup ingredient; SoupError if it has no final checkpoint."""
    run_dir = Path(run_dir)
    try:
        config = load_run_config(run_dir)
    except ConfigError as e:
        raise SoupError(str(e)) from None
    try:
        ckpt = latest_checkpoint(run_dir)
    except FileNotFoundError:
        raise SoupError(f"{run_dir} has no checkpoint: train it to the end first (laser train)") from None
    done = int(ckpt.name.rsplit("-", 1)[-1])
    if done < config.rounds:
        raise SoupError(f"{run_dir} is not finished: its newest checkpoint is round {done} of {config.rounds}; "
                        f"resume it (laser train --resume {run_dir}) or leave it out")
    try:
        digest = json.loads((run_dir / "assets.json").read_text()).get("digest")
    except (OSError, json.JSONDecodeError):
        digest = None
    m = config.models
    start = (f"policy {Path(m.policy).expanduser().resolve()}" if m.policy else
             f"the embedded world {digest or '?'} ({m.embedded_recipe or m.embedded})")
    return Ingredient(run_dir, config, ckpt, start)


def check_mixable(ingredients: Sequence[Ingredient]) -> None:
    """SoupError naming the difference if the runs did not start from one policy or are not evaluated alike."""
    if len(ingredients) < 2:
        raise SoupError(f"a soup mixes at least two runs; got {len(ingredients)}")
    names = [i.run_dir.resolve() for i in ingredients]
    if len(set(names)) != len(names):
        raise SoupError("a run is listed twice; list each run once")
    first = ingredients[0]
    for other in ingredients[1:]:
        if other.start != first.start:
            raise SoupError(f"{first.run_dir} and {other.run_dir} started from different policies ({first.start} vs "
                            f"{other.start}): a soup mixes fine-tunings of one start")
        for section in ("tasks", "eval"):
            a, b = (getattr(i.config, section).model_dump() for i in (first, other))
            if a != b:
                key = next(k for k in a if a[k] != b[k])
                raise SoupError(f"{first.run_dir} and {other.run_dir} are evaluated differently ({section}.{key}: "
                                f"{a[key]!r} vs {b[key]!r}): a soup is evaluated on one test set")
        a, b = (_architecture(i) for i in (first, other))
        if a != b:
            key = next(k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k))
            raise SoupError(f"{first.run_dir} and {other.run_dir} have different architectures ({key}: "
                            f"{a.get(key)!r} vs {b.get(key)!r})")


def _architecture(ing: Ingredient) -> dict:
    path = ing.checkpoint / "policy" / ("adapter_config.json" if ing.lora else "config.json")
    cfg = json.loads(path.read_text())
    skip = {"_name_or_path", "transformers_version", "torch_dtype", "dtype", "base_model_name_or_path", "revision"}
    return {k: v for k, v in cfg.items() if k not in skip}


def final_weights(ing: Ingredient, base_path: str | None = None) -> dict:
    """The run's final policy weights ({name: tensor}); a LoRA run's adapters merged into its start policy."""
    if not ing.lora:
        return AutoModelForCausalLM.from_pretrained(ing.checkpoint / "policy").state_dict()
    from peft import PeftModel

    base = AutoModelForCausalLM.from_pretrained(base_path)
    return PeftModel.from_pretrained(base, ing.checkpoint / "policy").merge_and_unload().state_dict()


def interpolate(states: Sequence[dict], weights: Sequence[float]) -> dict:
    """sum_k weights[k] * states[k], tensor by tensor in each tensor's dtype (a weight of 0 adds nothing, so that
    one-hot weights give back that run's tensors bit for bit); non-float tensors must be equal in every run."""
    if len(states) != len(weights):
        raise SoupError(f"{len(weights)} weights for {len(states)} runs")
    keys = list(states[0])
    for sd in states[1:]:
        if set(sd) != set(keys):
            raise SoupError(f"the runs' policies have different parameters: {sorted(set(sd) ^ set(keys))[:3]}")
    out = {}
    for k in keys:
        ts = [sd[k] for sd in states]
        for t in ts[1:]:
            if t.shape != ts[0].shape:
                raise SoupError(f"parameter {k} has shape {tuple(ts[0].shape)} in one run and {tuple(t.shape)} "
                                "in another")
        if not ts[0].is_floating_point():
            if any(not torch.equal(ts[0], t) for t in ts[1:]):
                raise SoupError(f"the integer tensor {k} differs between runs; it cannot be interpolated")
            out[k] = ts[0].clone()
            continue
        acc = None
        for w, t in zip(weights, ts, strict=True):
            if w:
                acc = t * w if acc is None else acc + t * w
        out[k] = acc
    return out


def simplex_grid(k: int, step: float) -> list[tuple[float, ...]]:
    """Every point of the k-simplex whose coordinates are multiples of `step` (which must divide 1)."""
    parts = round(1 / step)
    if step <= 0 or step > 1 or abs(parts * step - 1) > 1e-9:
        raise SoupError(f"--step {step}: must divide 1 (0.5, 0.25, 0.2, 0.1, ...)")
    pts = [c for c in itertools.product(range(parts + 1), repeat=k) if sum(c) == parts]
    return [tuple(x / parts for x in c) for c in sorted(pts, reverse=True)]


def parse_weights(spec: str, k: int, step: float = 0.25) -> list[tuple[float, ...]]:
    """`uniform`, `grid` (the simplex at `step`) or `l1,l2,...` (k non-negative weights summing to 1)."""
    if spec == "uniform":
        return [tuple([1 / k] * k)]
    if spec == "grid":
        return simplex_grid(k, step)
    try:
        w = tuple(float(x) for x in spec.split(","))
    except ValueError:
        raise SoupError(f"--weights {spec!r}: uniform, grid or {k} comma-separated numbers") from None
    if len(w) != k:
        raise SoupError(f"--weights {spec!r}: {len(w)} weights for {k} runs")
    if min(w) < 0 or abs(sum(w) - 1) > 1e-6:
        raise SoupError(f"--weights {spec!r}: a soup is a convex combination (weights >= 0 summing to 1); "
                        f"these sum to {sum(w):g}")
    return [w]


def run_soup(run_dirs: Sequence[str | Path], weights: str = "uniform", step: float = 0.25,
             out: str | Path | None = None, progress: bool = True) -> Soup:
    """Mix the final policies of `run_dirs` with each weight vector of `weights`, evaluate each soup on the
    test split, write `soup.md`, `soup.json` and `soup.png` to `out` (if given) and return the results.
    A `soup.json` in `out` from the same runs (same final checkpoints) and weights is reused, not recomputed."""
    ingredients = [load_ingredient(d) for d in run_dirs]
    check_mixable(ingredients)
    grid = parse_weights(weights, len(ingredients), step)
    names = [i.name for i in ingredients]
    key = {"checkpoints": [str(i.checkpoint.resolve()) for i in ingredients], "weights": [list(w) for w in grid]}
    out = Path(out) if out is not None else None
    if out is not None and (out / SOUP_FILE).is_file():
        saved = json.loads((out / SOUP_FILE).read_text())
        if saved.get("key") == key:
            return Soup(saved["runs"], saved["rows"], saved["ingredients"], saved["seconds"])
    soup = _evaluate(ingredients, grid, progress)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / SOUP_FILE).write_text(json.dumps({**soup.to_json(), "key": key}, indent=1))
        (out / "soup.md").write_text(format_soup(soup) + "\n")
        plot_pareto({f"run {n}": _as_point(ing["final"]) for n, ing in zip(names, soup.ingredients, strict=True)},
                    [r["accuracy"] for r in soup.rows], out / "soup.png")
    return soup


def _as_point(final: dict) -> dict:
    return {d: (a, float("nan")) for d, a in final["accuracy"].items()}


def _evaluate(ingredients: Sequence[Ingredient], grid: Sequence[tuple[float, ...]], progress: bool) -> Soup:
    t0 = time.perf_counter()
    config = ingredients[0].config
    start, _, _, assets = resolve_models(config)
    test = load_tasks(config, assets)[2]
    states = [final_weights(i, start) for i in ingredients]
    finals = []
    for ing in ingredients:
        run = read_run(ing.run_dir)
        finals.append({"run": ing.name, "strategy": run.strategy, "seed": run.seed, "final": run.final,
                       "initial": run.initial, "rounds": config.rounds, "wall_s": run.wall_s})
    model = AutoModelForCausalLM.from_pretrained(start)  # a vessel for the mixed weights, on the host
    engine = make_engine(start, config.engine, device=resolve_device(config.models.device))
    soup = Soup([i.name for i in ingredients], ingredients=finals)
    try:
        for w in tqdm(grid, desc="soups", disable=not progress or len(grid) == 1):
            model.load_state_dict(interpolate(states, w))
            engine.sync_weights(model)
            acc, _ = evaluate_accuracy(engine, test, config.eval, config.round.max_new_tokens,
                                       seed=eval_seed(config.seed, config.rounds))
            soup.rows.append({"weights": list(w), "accuracy": acc, "mean_accuracy": float(np.mean(list(acc.values())))})
    finally:
        engine.close()
    soup.seconds = round(time.perf_counter() - t0, 2)
    return soup


def format_soup(soup: Soup) -> str:
    """The soups as a markdown table (weights per run, test accuracy per domain and mean), the runs alone first."""
    domains = list(soup.rows[0]["accuracy"])
    head = ("| " + " | ".join(f"λ {n}" for n in soup.runs) + " | " + " | ".join(domains) + " | mean |\n|"
            + "---|" * (len(soup.runs) + len(domains) + 1))
    lines = ["Test accuracy (%) of each soup θ(λ) = Σ λ_k θ_k of the runs' final policies (the first run's "
             "`eval` settings and test set):", "", head]
    for r in soup.rows:
        lines.append("| " + " | ".join(f"{w:.2f}" for w in r["weights"]) + " | "
                     + " | ".join(f"{r['accuracy'][d] * 100:.1f}" for d in domains)
                     + f" | {r['mean_accuracy'] * 100:.1f} |")
    lines += ["", "Each run alone, as its own final evaluation recorded it:", "",
              "| run | strategy | " + " | ".join(domains) + " | mean | RM forward passes |",
              "|---|---|" + "---|" * (len(domains) + 2)]
    for ing in soup.ingredients:
        f = ing["final"]
        lines.append(f"| {ing['run']} | {ing['strategy']} | "
                     + " | ".join(f"{f['accuracy'][d] * 100:.1f}" for d in domains)
                     + f" | {f['mean_accuracy'] * 100:.1f} | {f['rm_forward_total']:,} |")
    updates = sum(ing["rounds"] for ing in soup.ingredients)
    lines += ["", f"Cost: {len(soup.ingredients)} trainings ({updates} DPO updates and "
              f"{sum(i['final']['rm_forward_total'] for i in soup.ingredients):,} RM forward passes in all), then "
              f"{len(soup.rows)} evaluation(s) of the test split ({soup.seconds:.0f} s)."]
    return "\n".join(lines)


def soup_summary(soup: Soup, run_dir: Path, row: int = 0, label: str = "soup:uniform"):
    """One soup as a run summary (`laser.report.RunSummary`) for a comparison table: its evaluation at the
    runs' last round, and as its cost the sum of the trainings it mixes (RM passes, seconds)."""
    r = soup.rows[row]
    first = soup.ingredients[0]
    final = {"round": first["final"]["round"], "accuracy": r["accuracy"], "mean_accuracy": r["mean_accuracy"],
             "rm_forward_total": int(sum(i["final"]["rm_forward_total"] for i in soup.ingredients)),
             "elapsed_s": float(sum(i["wall_s"] for i in soup.ingredients)), "weights": r["weights"]}
    return RunSummary(Path(run_dir), rounds=[], evals=[first["initial"], final], strategy=label, seed=first["seed"])


def bench_soups(singles: Mapping[str, Sequence], runs_dir: str | Path, grid_step: float | None = 0.25,
                progress: bool = True) -> tuple[list, list[dict]]:
    """The uniform soup of a bench's `single:<rm>` runs for each seed (as run summaries), and the soups of a
    `grid_step` grid of weights on the first seed's runs (the front), each written under `runs_dir`."""
    by_seed: dict[int, list[Path]] = {}
    for runs in singles.values():
        for r in runs:
            by_seed.setdefault(r.seed, []).append(r.run_dir)
    complete = {s: dirs for s, dirs in sorted(by_seed.items()) if len(dirs) == len(singles)}
    if len(singles) < 2 or not complete:
        raise SoupError("soup:uniform mixes the bench's single:<rm> runs: list at least two (e.g. singles)")
    runs_dir = Path(runs_dir)
    uniform = [soup_summary(run_soup(dirs, "uniform", out=runs_dir / f"soup-uniform-s{s}", progress=progress),
                            runs_dir / f"soup-uniform-s{s}") for s, dirs in complete.items()]
    front: list[dict] = []
    if grid_step:
        s, dirs = next(iter(complete.items()))
        front = run_soup(dirs, "grid", step=grid_step, out=runs_dir / f"soup-grid-s{s}", progress=progress).rows
    return uniform, front
