"""State files without pickle: a nested state (dicts, lists, tuples, numbers, strings, tensors, numpy arrays,
RNG states) in one `.safetensors` file.

Tensors and arrays are the file's tensors; everything else is JSON in the file's metadata, with tagged
objects where JSON has no type (tuples, dicts with non-string keys, numpy arrays and scalars, bytes).
Loading reads JSON and raw tensor bytes only, so a state file someone else wrote cannot run code, unlike
unpickling a `torch.save` file. One file, written to a temporary sibling and renamed, so a crash
leaves the previous state whole.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "laser-state/1"
_META_KEY = "laser_state"
_TAGS = ("__tensor__", "__ndarray__", "__tuple__", "__dict__", "__np__", "__bytes__")


class StateFileError(ValueError):
    """A state file that is missing, damaged, of another format, or a state that cannot be written."""


def save_state(state: Any, path: str | Path) -> Path:
    """Write `state` to `path` (a `.safetensors` file) atomically; returns the path."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors: dict[str, Any] = {}
    skeleton = _encode(state, tensors, "state")
    meta = {_META_KEY: json.dumps({"format": FORMAT, "state": skeleton}, allow_nan=True), "format": FORMAT}
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, path)
    return path


def load_state(path: str | Path) -> Any:
    """Read a state written by `save_state`; no code runs, whatever the file holds."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise StateFileError(f"{path}: no such state file")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        doc = json.loads(meta[_META_KEY])
    except (KeyError, json.JSONDecodeError) as e:
        raise StateFileError(f"{path}: not a LASeR state file (no readable '{_META_KEY}' metadata: {e})") from None
    except Exception as e:  # safetensors raises its own error types for damaged headers
        raise StateFileError(f"{path}: cannot read it as safetensors ({type(e).__name__}: {e})") from None
    if doc.get("format") != FORMAT:
        raise StateFileError(f"{path}: state format {doc.get('format')!r}, this version reads {FORMAT!r}")
    return _decode(doc["state"], tensors, path)


def _encode(obj: Any, tensors: dict, where: str) -> Any:
    import torch

    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, (int, float)) and not isinstance(obj, np.generic):
        return obj
    if isinstance(obj, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = obj.detach().cpu().contiguous().clone()
        return {"__tensor__": key}
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in "biuf" or obj.dtype.byteorder == ">":
            raise StateFileError(f"{where}: numpy arrays of dtype {obj.dtype} cannot be stored (numbers only)")
        key = f"t{len(tensors)}"
        tensors[key] = torch.from_numpy(np.ascontiguousarray(obj).copy())
        return {"__ndarray__": key, "dtype": obj.dtype.str}
    if isinstance(obj, np.generic):
        return {"__np__": obj.dtype.str, "value": obj.item()}
    if isinstance(obj, bytes):
        return {"__bytes__": base64.b64encode(obj).decode("ascii")}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, tensors, f"{where}[{i}]") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, tensors, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        if all(isinstance(k, str) and k not in _TAGS for k in obj):
            return {k: _encode(v, tensors, f"{where}.{k}") for k, v in obj.items()}
        return {"__dict__": [[_encode(k, tensors, f"{where} key"), _encode(v, tensors, f"{where}[{k!r}]")]
                             for k, v in obj.items()]}
    raise StateFileError(f"{where}: a {type(obj).__name__} cannot be stored in a state file "
                         "(dicts, lists, tuples, numbers, strings, bytes, tensors and numpy arrays only)")


def _decode(obj: Any, tensors: dict, path: Path) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors, path) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if len(obj) == 1 and "__tensor__" in obj:
        return _tensor(tensors, obj["__tensor__"], path)
    if "__ndarray__" in obj:
        arr = _tensor(tensors, obj["__ndarray__"], path).numpy()
        return arr.astype(np.dtype(obj["dtype"]), copy=False)
    if "__np__" in obj:
        return np.dtype(obj["__np__"]).type(obj["value"])
    if "__bytes__" in obj:
        return base64.b64decode(obj["__bytes__"])
    if "__tuple__" in obj:
        return tuple(_decode(v, tensors, path) for v in obj["__tuple__"])
    if "__dict__" in obj:
        return {_hashable(_decode(k, tensors, path)): _decode(v, tensors, path) for k, v in obj["__dict__"]}
    return {k: _decode(v, tensors, path) for k, v in obj.items()}


def _tensor(tensors: dict, key: str, path: Path):
    if key not in tensors:
        raise StateFileError(f"{path}: the state names tensor {key!r}, which the file does not hold")
    return tensors[key]


def _hashable(key: Any) -> Any:
    return tuple(_hashable(k) for k in key) if isinstance(key, list) else key
