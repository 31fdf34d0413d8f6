"""Save and load policies as a directory holding `policy.json` (params, scalars, RNG) and `arrays.npz`.

No pickle anywhere: arrays load with `allow_pickle=False`. Writes go to a temporary sibling directory
that is renamed into place, so a crash never leaves a half-written policy behind.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .base import Policy
from .registry import make_policy

FORMAT_VERSION = 1


def save(policy: Policy, path: str | os.PathLike) -> Path:
    """Write `policy` to directory `path` atomically (replacing an existing save); returns the path."""
    path = Path(path)
    state = policy.state_dict()
    arrays = {k: v for k, v in state["state"].items() if isinstance(v, np.ndarray)}
    scalars = {k: v for k, v in state["state"].items() if not isinstance(v, np.ndarray)}
    meta = {"format_version": FORMAT_VERSION, "policy": state["policy"], "params": state["params"],
            "scalars": scalars, "rng": state["rng"]}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        np.savez(tmp / "arrays.npz", **arrays)
        (tmp / "policy.json").write_text(json.dumps(meta, indent=1))
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def load(path: str | os.PathLike) -> Policy:
    """Rebuild a policy saved by `save`, including its RNG state."""
    path = Path(path)
    meta_file, arrays_file = path / "policy.json", path / "arrays.npz"
    if not meta_file.is_file() or not arrays_file.is_file():
        raise FileNotFoundError(f"{path} is not a saved policy (expected policy.json and arrays.npz in it)")
    meta: dict[str, Any] = json.loads(meta_file.read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{meta_file}: unsupported format_version {meta.get('format_version')!r}")
    params = dict(meta["params"])
    policy = make_policy(meta["policy"], params.pop("n_arms"), params.pop("dim"), **params)
    with np.load(arrays_file, allow_pickle=False) as npz:
        learned = {**meta["scalars"], **{k: npz[k] for k in npz.files}}
    policy.load_state_dict({"policy": meta["policy"], "params": meta["params"], "state": learned,
                            "rng": meta["rng"]})
    return policy
