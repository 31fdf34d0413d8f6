"""Where every model lives and in what dtype, as the config says; launches that cannot work refused by name; an
engine that sleeps through the update trains the run it would train awake."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from laser.config import ConfigError, check_launch, launch_problems, load_config

ROOT = Path(__file__).resolve().parents[1]


def _config(assets, tmp_path, *overrides: str):
    """The quick config with the world's judge LMs and length-hacked classifier listed as its own reward models."""
    lineup, _ = assets.lineup("judges")
    rms = {name: {"kind": kind, "path": str(path)} for name, (kind, path) in lineup.items()}
    return load_config(ROOT / "configs" / "quick.yaml",
                       [f"output_dir={tmp_path}", f"models.reward_models={json.dumps(rms)}", *overrides])


def _dtypes(module) -> set[str]:
    return {str(p.dtype).removeprefix("torch.") for p in module.parameters()}


def _devices(module) -> set[str]:
    return {p.device.type for p in module.parameters()}


def test_every_loaded_part_takes_its_dtype_and_device_from_the_config(quick_world, tmp_path, monkeypatch):
    """The policy (so the contexts, the DPO step and its reference), each in-process RM and the transformers engine
    hold their weights where and as the config says; a round trains in them."""
    from laser.parts import build_trainer

    assets, _ = quick_world
    monkeypatch.setenv("LASER_ASSETS_DIR", str(assets.root.parent))
    config = _config(assets, tmp_path, "models.device=cpu", "models.dtype=bfloat16", "engine.engine=hf",
                     "engine.dtype=bfloat16", "rounds=1")
    names = list(config.models.reward_models)
    config.models.reward_models[names[0]].dtype = "float16"
    config.models.reward_models[names[1]].device = "cpu"
    trainer = build_trainer(config)
    try:
        assert _dtypes(trainer.policy) == {"bfloat16"} and _devices(trainer.policy) == {"cpu"}
        assert trainer.embedder.model is trainer.policy and _dtypes(trainer.engine.model) == {"bfloat16"}
        models = {name: getattr(rm, "model", None) or rm.lm.model for name, rm in trainer.rms.items()}
        assert _dtypes(models[names[0]]) == {"float16"}  # its own dtype
        assert _dtypes(models[names[1]]) == {"float32"} == _dtypes(models[names[2]])  # auto: float32 on the CPU
        line = trainer.run_round()
        assert _dtypes(trainer.dpo.ref_model) == {"bfloat16"} and line["pairs"]["pairs"] >= 0
        assert trainer.embedder.embed(["Q: sort cba A:"]).dtype.name == "float32"  # contexts: float32 always
    finally:
        trainer.engine.close()


def test_config_device_names_resolve_for_each_process(monkeypatch):
    from laser.placement import dtype_name, resolve_device

    assert resolve_device("cpu") == "cpu" and dtype_name("auto", "cpu") == "float32"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("LOCAL_RANK", "3")  # the fourth process of a node under torchrun
    assert resolve_device("auto") == resolve_device("cuda") == resolve_device(None, "cuda") == "cuda:3"
    assert resolve_device("cuda:1") == "cuda:1" and resolve_device(None, "cpu") == "cpu"
    assert dtype_name("auto", "cuda:3") == "bfloat16" and dtype_name("float16", "cuda:3") == "float16"


def test_launches_that_cannot_work_are_refused_naming_the_setting():
    paper = load_config(ROOT / "configs" / "paper_llama3_8b.yaml")
    assert launch_problems(paper, 8, 8) == []  # the shipped paper config fits its launcher
    bad = load_config(ROOT / "configs" / "paper_llama3_8b.yaml", ["engine.tensor_parallel_size=2"])
    (line,) = launch_problems(bad, 8, 8)
    assert line.startswith("engine.tensor_parallel_size is 2 under 8 processes") and "external_launcher" in line
    assert launch_problems(bad, 1, 2) == []  # one process, a tensor-parallel engine over two GPUs
    with pytest.raises(ConfigError, match="tensor_parallel_size is 2 but 1 GPU"):
        check_launch(bad, 1, 1)
    pinned = load_config(None, ["models.device=cuda:1", "dpo.batch_size=6"])
    lines = launch_problems(pinned, 4, 4)
    assert any(x.startswith("models.device is cuda:1 under 4 processes") for x in lines)
    assert any(x.startswith("dpo.batch_size (6) must be a multiple of the number of processes (4)") for x in lines)
    assert launch_problems(load_config(None, ["models.device=cuda"]), 1, 0) == [
        "models.device is cuda but no GPU is visible: set it to auto or cpu"]
    assert "launch one process per GPU" in launch_problems(load_config(None), 4, 2)[0]
    spread = load_config(None, ['models.reward_models={a: {path: x, device_map: auto}}'])
    assert launch_problems(spread, 1, 2) == [] and "each process would spread its copy over every GPU" in \
        launch_problems(spread, 2, 2)[0]
    assert "adamw_8bit needs a GPU" in launch_problems(load_config(None, ["dpo.optim=adamw_8bit"]), 1, 0)[0]
    with pytest.raises(ConfigError, match="set device or device_map, not both"):
        load_config(None, ['models.reward_models={a: {path: x, device: cpu, device_map: auto}}'])
    with pytest.raises(ConfigError, match="dtype: a `kind: remote` reward model runs on its server"):
        load_config(None, ['models.reward_models={a: {kind: remote, url: "http://h:1", dtype: bfloat16}}'])
    with pytest.raises(ConfigError, match="tensor_parallel_size applies to vLLM"):
        load_config(None, ["engine.engine=hf", "engine.tensor_parallel_size=2"])


def test_shard_placement_loads_each_reward_model_in_one_process(quick_world):
    """`models.rm_placement: shard`: RM i is loaded in process i mod N; the others hold a placeholder that knows
    which process scores it (tests/test_distributed.py runs it under torchrun)."""
    from laser.parts import load_reward_models
    from laser.rewards.base import HeldElsewhere

    assets, _ = quick_world
    lineup, _ = assets.lineup("judges")
    configs = _config(assets, Path("unused")).models.reward_models
    here = load_reward_models(configs, "cpu", "shard", rank=1, processes=2)
    kinds = {name: (type(rm).__name__, rm.owner) for name, rm in here.items()}
    names = list(lineup)
    assert kinds[names[1]][1] == 1 and kinds[names[1]][0] != "HeldElsewhere"
    assert all(isinstance(here[n], HeldElsewhere) and here[n].owner == 0 for n in (names[0], names[2]))
    with pytest.raises(Exception, match="loaded in process 0, which scores it"):
        here[names[0]].score(["Q: a A:"], [" b"], )
    alone = load_reward_models(configs, "cpu", "shard", rank=0, processes=1)  # one process holds every RM
    assert all(rm.owner is None and not isinstance(rm, HeldElsewhere) for rm in alone.values())


def test_an_engine_that_sleeps_through_the_update_trains_the_same_run(quick_world, tmp_path, monkeypatch):
    """engine.sleep: 2 drops the engine's weights after a round's last generation and the sync after the update
    wakes it with the trained ones: the rounds are those of an engine that stayed awake."""
    from laser.parts import build_trainer

    assets, _ = quick_world
    monkeypatch.setenv("LASER_ASSETS_DIR", str(assets.root.parent))
    lines = {}
    for sleep in (0, 2):
        config = load_config(ROOT / "configs" / "quick.yaml", [f"output_dir={tmp_path}", f"name=sleep{sleep}",
                                                              "engine.engine=hf", f"engine.sleep={sleep}"])
        trainer = build_trainer(config)
        try:
            lines[sleep] = [trainer.run_round() for _ in range(2)]
            lines[sleep].append(trainer.evaluate())
            assert trainer.engine.stats.sleeps == 2 * (sleep > 0) and trainer.engine.asleep == 0
        finally:
            trainer.engine.close()
    assert all("sleep" in x["seconds"] for x in lines[2][:2]) and not any("sleep" in x["seconds"] for x in lines[0][:2])
    timing = {"seconds", "sync_s", "elapsed_s"}
    assert [{k: v for k, v in x.items() if k not in timing} for x in lines[2]] == \
        [{k: v for k, v in x.items() if k not in timing} for x in lines[0]]
