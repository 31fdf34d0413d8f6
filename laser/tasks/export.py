"""`laser data`: published datasets written as the train / validation / test JSONL files a run config reads.

`export(["gsm8k", "strategyqa", "mmlu"], out_dir)` reads each dataset through `load_hf` with its preset
(the hub by default, or a local copy: a `save_to_disk` directory, or a folder of parquet files named by
split as the hub stores them, e.g. `main/train-00000-of-00001.parquet`), takes its validation split where
it has one and a seeded share of its training split where it has not, and writes
`{id, prompt, answer, domain, answer_format}` rows. No prompt is in two splits: a training or validation
row whose prompt is also a test prompt is dropped (counted).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .base import Example
from .loaders import DatasetError, load_hf

# Where each preset lives on the hub, and which of its splits serve as ours.
HUB: dict[str, dict] = {
    "gsm8k": {"name": "openai/gsm8k", "config": "main",
              "splits": {"train": ["train"], "validation": [], "test": ["test"]}},
    "strategyqa": {"name": "ChilleD/StrategyQA", "config": None,
                   "splits": {"train": ["train"], "validation": [], "test": ["test"]}},
    "mmlu": {"name": "cais/mmlu", "config": "all",
             "splits": {"train": ["auxiliary_train", "train"], "validation": ["validation", "dev"],
                        "test": ["test"]}},
}
SPLITS = ("train", "validation", "test")


@dataclass
class ExportReport:
    """What `export` wrote: rows per (dataset, split), rows dropped for a prompt shared with the test split."""

    rows: dict[str, dict[str, int]] = field(default_factory=dict)
    dropped_overlap: dict[str, int] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        lines = []
        for name, counts in self.rows.items():
            drop = self.dropped_overlap.get(name, 0)
            lines.append(f"{name} ({self.sources[name]}): " + ", ".join(f"{s} {counts.get(s, 0)}" for s in SPLITS)
                         + (f"; {drop} rows dropped for a prompt also in test" if drop else ""))
        return "\n".join(lines)


def _local_splits(path: Path) -> dict[str, list[Path]] | None:
    """{split: files or the directory} of a local copy, or None when `path` is not local."""
    if not path.exists():
        return None
    if path.is_file():
        return {"train": [path]}
    if (path / "dataset_dict.json").exists():
        names = json.loads((path / "dataset_dict.json").read_text()).get("splits", [])
        return {s: [path] for s in names}
    if (path / "dataset_info.json").exists():  # one Dataset saved alone: its rows are the training split
        return {"train": [path]}
    found: dict[str, list[Path]] = {}
    for f in sorted(path.rglob("*.parquet")):
        split = f.stem.split("-")[0]
        found.setdefault(split, []).append(f)
    if not found:
        raise DatasetError(f"{path}: no save_to_disk dataset and no parquet files named by split "
                           "(train-*.parquet, test-*.parquet, ...)")
    return found


def _read(preset: str, source: str, split_names: Sequence[str], limit: int | None) -> list[Example] | None:
    """The rows of the first of `split_names` the source has (None if it has none of them)."""
    spec = HUB[preset]
    local = _local_splits(Path(source))
    for split in split_names:
        if local is None:
            import datasets

            try:
                names = datasets.get_dataset_split_names(source, spec["config"] if source == spec["name"] else None)
            except Exception as e:  # the hub unreachable, or no such dataset
                raise DatasetError(f"{preset}: cannot read {source!r} from the hub ({type(e).__name__}: {e}); "
                                   f"pass a local copy with --source {preset}=PATH") from None
            if split not in names:
                continue
            rows, _ = load_hf(source, split=split, config=spec["config"] if source == spec["name"] else None,
                              preset=preset, limit=limit)
        elif split in local:
            rows = []
            for f in local[split]:
                part, _ = load_hf(str(f), split=split, preset=preset,
                                  limit=None if limit is None else limit - len(rows))
                rows += part
        else:
            continue
        return [r.model_copy(update={"id": f"{preset}-{split}-{i}"}) for i, r in enumerate(rows)]
    return None


def export(presets: Sequence[str], out_dir: str | Path, sources: Mapping[str, str] | None = None,
           validation_fraction: float = 0.1, seed: int = 0, limit: int | None = None) -> ExportReport:
    """Write `out_dir/{train,validation,test}.jsonl` from the datasets of `presets`, mixed in that order."""
    unknown = [p for p in presets if p not in HUB]
    if unknown or not presets:
        raise DatasetError(f"unknown dataset(s) {unknown}; choose from {sorted(HUB)}")
    if not 0 < validation_fraction < 1:
        raise DatasetError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
    sources = dict(sources or {})
    report = ExportReport()
    out: dict[str, list[Example]] = {s: [] for s in SPLITS}
    for preset in presets:
        source = sources.get(preset, HUB[preset]["name"])
        report.sources[preset] = source
        split_names = HUB[preset]["splits"]
        got = {s: _read(preset, source, split_names[s] or [s], limit) for s in SPLITS}
        if got["train"] is None or got["test"] is None:
            missing = [s for s in ("train", "test") if got[s] is None]
            raise DatasetError(f"{preset}: {source} has no {' or '.join(missing)} split "
                               f"(looked for {[split_names[s] for s in missing]})")
        if got["validation"] is None:  # a seeded share of the training rows, never both
            order = np.random.default_rng(seed).permutation(len(got["train"]))
            n_val = max(1, int(round(validation_fraction * len(order))))
            val_idx = set(order[:n_val].tolist())
            got["validation"] = [r for i, r in enumerate(got["train"]) if i in val_idx]
            got["train"] = [r for i, r in enumerate(got["train"]) if i not in val_idx]
        test_prompts = {r.prompt for r in got["test"]}
        dropped = 0
        for s in ("train", "validation"):
            kept = [r for r in got[s] if r.prompt not in test_prompts]
            dropped += len(got[s]) - len(kept)
            got[s] = kept
        val_prompts = {r.prompt for r in got["validation"]}
        kept = [r for r in got["train"] if r.prompt not in val_prompts]
        dropped += len(got["train"]) - len(kept)
        got["train"] = kept
        report.dropped_overlap[preset] = dropped
        report.rows[preset] = {s: len(got[s]) for s in SPLITS}
        for s in SPLITS:
            out[s] += got[s]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for s in SPLITS:
        path = out_dir / f"{s}.jsonl"
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        with open(tmp, "w", encoding="utf-8") as f:
            for r in out[s]:
                f.write(json.dumps({"id": r.id, "prompt": r.prompt, "answer": r.answer, "domain": r.domain,
                                    "answer_format": r.answer_format}, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    return report

