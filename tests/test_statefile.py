"""State files without pickle (`laser.statefile`): exact round trips of what a trainer state holds, clear errors."""

import math

import numpy as np
import pytest
import torch

from laser.statefile import StateFileError, load_state, save_state


def _optimizer_state() -> dict:
    """A real AdamW state after two steps: int keys, tensors, tuples (betas) and floats."""
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(2):
        model(torch.randn(4, 3)).sum().backward()
        opt.step()
    return opt.state_dict()


def _assert_same(a, b, where="state"):
    assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, dict):
        assert list(a) == list(b), where
        for k in a:
            _assert_same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), where
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b), where
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b), where
    else:
        assert a == b, where


def test_a_trainer_like_state_round_trips_exactly(tmp_path):
    rng = np.random.default_rng(7)
    rng.random(5)
    state = {
        "round": 3, "elapsed": 1.2345678901234567, "order": [2, 0, 1],
        "rng": rng.bit_generator.state,                                  # 128-bit integers
        "torch_rng": torch.get_rng_state(),                               # a uint8 tensor
        "optimizer": _optimizer_state(),
        "picks": [["caesar", "cipher", 4]],
        "cache": [("Q: a A:", "b", 0.5), ("Q: c A:", "d", float("nan")), ("p", "c", float("-inf"))],
        "policy": {"A": np.eye(3), "counts": np.array([1, 2], dtype=np.int64), "mask": np.array([True, False]),
                   "scalar": np.float64(0.25), "n": np.int64(9), "empty": np.zeros((0, 4), dtype=np.float32)},
        "by_pair": {("caesar", "cipher"): 1.0, 5: "five"},               # non-string keys
        "tagged": {"__tuple__": "a key that looks like a tag"},
        "blob": b"\x00\xff", "none": None, "flag": True, "scalar_tensor": torch.tensor(2.5, dtype=torch.float64),
    }
    path = save_state(state, tmp_path / "s.safetensors")
    back = load_state(path)
    _assert_same(state, back)

    # The numpy RNG resumes the same stream, and the optimizer state loads into a fresh optimizer.
    fresh = np.random.default_rng(0)
    fresh.bit_generator.state = back["rng"]
    assert np.array_equal(fresh.random(4), rng.random(4))
    opt = torch.optim.AdamW(torch.nn.Linear(3, 2).parameters(), lr=1e-3)
    opt.load_state_dict(back["optimizer"])
    assert opt.state_dict()["state"][0]["step"] == 2


def test_an_unsupported_value_is_named_and_nothing_is_written(tmp_path):
    path = tmp_path / "s.safetensors"
    with pytest.raises(StateFileError, match=r"state\.strategy\.fn: a function cannot be stored"):
        save_state({"strategy": {"fn": lambda x: x}}, path)
    with pytest.raises(StateFileError, match="dtype <U1"):
        save_state({"names": np.array(["a", "b"])}, path)
    assert not path.exists() and not list(tmp_path.iterdir())


def test_files_that_are_not_state_files_are_refused(tmp_path):
    with pytest.raises(StateFileError, match="no such state file"):
        load_state(tmp_path / "missing.safetensors")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x80\x04not a safetensors file")
    with pytest.raises(StateFileError, match="cannot read it as safetensors"):
        load_state(garbage)
    from safetensors.torch import save_file

    plain = tmp_path / "weights.safetensors"                                # a model file, not a state
    save_file({"w": torch.zeros(2)}, str(plain))
    with pytest.raises(StateFileError, match="not a LASeR state file"):
        load_state(plain)
    other = tmp_path / "other.safetensors"
    save_file({}, str(other), metadata={"laser_state": '{"format": "laser-state/99", "state": {}}'})
    with pytest.raises(StateFileError, match="laser-state/99"):
        load_state(other)


def test_rewriting_replaces_the_file_whole(tmp_path):
    path = tmp_path / "s.safetensors"
    save_state({"x": torch.arange(1000)}, path)
    save_state({"y": [1, 2]}, path)
    assert load_state(path) == {"y": [1, 2]} and [p.name for p in tmp_path.iterdir()] == ["s.safetensors"]
