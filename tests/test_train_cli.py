"""Run configs (YAML, overrides, errors) and `laser train` end to end on the reduced world."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from laser.cli import main
from laser.config import ConfigError, RunConfig, load_config
from laser.training.loop import RoundSettings
from laser.training.rundir import RunLockedError, run_lock

ROOT = Path(__file__).resolve().parents[1]


def wandb_history(run_dir: Path) -> list[dict]:
    """The history rows of the offline W&B run under `run_dir`, read from its `.wandb` record log.

    The file is a 7-byte header then LevelDB-log records in 32 KiB blocks: crc (4), length (2, little
    endian), type (1: full, 2: first, 3: middle, 4: last), payload (a serialized `Record` protobuf).
    """
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    data, pos, block, rows, parts = path.read_bytes(), 7, 32768, [], b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if length == 0 and kind == 0:
            break
        parts += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(parts)
            parts = b""
            if record.WhichOneof("record_type") == "history":
                rows.append({"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in record.history.item})
    return rows


@pytest.mark.parametrize("name", ["demo.yaml", "quick.yaml", "paper_llama3_8b.yaml"])
def test_shipped_configs_validate(name):
    c = load_config(ROOT / "configs" / name)
    assert isinstance(c, RunConfig) and c.dpo.loss_type == ["sigmoid", "sft"]


def test_demo_yaml_spells_out_the_defaults_that_laser_demo_runs():
    shown = load_config(ROOT / "configs" / "demo.yaml").model_dump()
    shown["engine"]["max_model_len"] = None  # the embedded policy's own window (128), written out in the file
    assert shown == RunConfig(name="demo").model_dump()


def test_the_paper_config_runs_under_its_launcher_as_it_implies(monkeypatch):
    """Launched as it says (accelerate's ddp.yaml: 8 processes, one GPU each): nothing refused; each process samples
    2 of the round's 16 prompts and trains on 2 pairs of each global batch; RM i is loaded in process i only (the
    last four hold none); each process's engine joins the launch (external_launcher) and sleeps through the update."""
    import yaml

    import laser.training.dpo as dpo
    from laser.generation.vllm_engine import llm_kwargs
    from laser.parts import rm_owners
    from laser.strategies.scoring import Ranks

    c = load_config(ROOT / "configs" / "paper_llama3_8b.yaml")
    acc = yaml.safe_load((ROOT / "configs" / "accelerate" / "ddp.yaml").read_text())
    processes = acc["num_processes"]
    assert acc["distributed_type"] == "MULTI_GPU" and acc["mixed_precision"] == "bf16"
    from laser.config import launch_problems

    assert launch_problems(c, processes, processes) == []
    prompts = c.round.prompts_per_round + (c.round.rerank_prompts if c.round.feedback == "rerank_gain" else 0)
    shares = [len(range(prompts)[Ranks(r, processes, None).share(prompts)]) for r in range(processes)]
    assert shares == [2] * 8
    monkeypatch.setattr(dpo, "world", lambda: (0, processes))
    assert dpo.per_device_batch_size(c.dpo) == 2
    owners = rm_owners(c.models.reward_models, c.models.rm_placement, processes)
    assert sorted(owners.values()) == [0, 1, 2, 3]  # four implicit RMs: one process each, four processes free
    kw = llm_kwargs(c.models.policy, gpu=True, dtype=c.engine.dtype, max_model_len=c.engine.max_model_len,
                    gpu_memory_utilization=c.engine.gpu_memory_utilization,
                    tensor_parallel_size=c.engine.tensor_parallel_size, sleep=c.engine.sleep, processes=processes,
                    extra=c.engine.extra)
    assert kw["distributed_executor_backend"] == "external_launcher" and kw["enable_sleep_mode"]
    assert kw["tensor_parallel_size"] == 1


def test_what_the_paper_config_implies(monkeypatch):
    """Its answers are judged whole, its prompts rendered by the tokenizer's chat template where it has one,
    its LoRA targets exist in a Llama model, and its DPO batch splits evenly under the 8 ranks it is run with."""
    from transformers import LlamaConfig, LlamaForCausalLM

    import laser.training.dpo as dpo

    c = load_config(ROOT / "configs" / "paper_llama3_8b.yaml")
    assert c.eval.tokens_for("gsm8k", c.round.max_new_tokens) == c.round.max_new_tokens == 512
    assert c.engine.chat_template == "auto"
    tiny = LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                        num_attention_heads=4, num_key_value_heads=4, vocab_size=64))
    names = {n.rsplit(".", 1)[-1] for n, _ in tiny.named_modules()}
    assert set(c.dpo.lora.target_modules) <= names
    monkeypatch.setattr(dpo, "world", lambda: (0, 8))
    assert dpo.per_device_batch_size(c.dpo) == 2


def test_overrides_and_resolved_values():
    c = load_config(ROOT / "configs" / "demo.yaml", ["round.n=16", "strategy=ensemble:worst_case",
                                                     "bandit.params={alpha: 0.3}", "dpo.loss_weights=[1.0, 0.5]"])
    assert c.round.n == 16 and c.strategy == "ensemble:worst_case" and c.bandit.params == {"alpha": 0.3}
    assert c.dpo.loss_weights == [1.0, 0.5] and c.run_dir == Path("runs/demo")


def test_bad_configs_name_the_key_and_what_is_allowed(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(ROOT / "configs" / "demo.yaml", ["round.nn=3", "round.pair_rule=best", "strategy=foo",
                                                     "dpo.beta=-1"])
    msg = str(e.value)
    assert "4 problem(s)" in msg and "round.nn: unknown key" in msg and "max_min" in msg
    assert "strategy" in msg and "single:<rm>" in msg and "dpo.beta" in msg
    bad = tmp_path / "bad.yaml"
    bad.write_text("rounds: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["rounds"])
    assert main(["train", "--config", str(bad)]) == 2


def test_a_run_can_name_a_world_recipe(tmp_path):
    from laser.assets import AssetRecipe, quick_recipe
    from laser.assets.recipe import load_recipe
    from laser.training.rundir import embedded_recipe

    alt = ROOT / "configs" / "worlds" / "alt.yaml"
    assert embedded_recipe(load_config(None, [f"models.embedded_recipe={alt}"])) == load_recipe(alt)
    assert embedded_recipe(load_config(None)) == AssetRecipe()
    # The run's seed trains differently on the same world (the quick one as the default one).
    assert embedded_recipe(load_config(None, ["models.embedded=quick", "seed=2"])) == quick_recipe(0)
    assert embedded_recipe(load_config(None, ["seed=2"])) == AssetRecipe()
    bad = tmp_path / "w.yaml"
    bad.write_text("judges: [{name: x, domains: [arithmetic], steps: 0}]\n")
    with pytest.raises(ConfigError, match=r"(?s)embedded_recipe: .*judges.0.steps: Input should be greater"):
        embedded_recipe(load_config(None, [f"models.embedded_recipe={bad}"]))
    with pytest.raises(ConfigError, match="models.embedded_recipe: .*does not exist"):
        embedded_recipe(load_config(None, [f"models.embedded_recipe={tmp_path / 'none.yaml'}"]))


def test_a_locked_run_directory_is_refused(tmp_path):
    with run_lock(tmp_path / "r"):
        with pytest.raises(RunLockedError, match="being written by process"):
            with run_lock(tmp_path / "r"):
                pass
    assert not (tmp_path / "r" / ".lock").exists()
    # A lock left by a dead process is taken over.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / "r" / ".lock").write_text(dead.stdout.strip())
    with run_lock(tmp_path / "r"):
        assert (tmp_path / "r" / ".lock").read_text() == str(os.getpid())
    # So is one left by a process that exited and was not yet reaped (a zombie: os.kill(pid, 0) still succeeds).
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    stat = Path(f"/proc/{zombie.pid}/stat")
    while stat.read_text().rsplit(")", 1)[1].split()[0] != "Z":
        time.sleep(0.01)
    (tmp_path / "r" / ".lock").write_text(str(zombie.pid))
    with run_lock(tmp_path / "r"):
        assert (tmp_path / "r" / ".lock").read_text() == str(os.getpid())
    zombie.wait()


def test_laser_train_runs_the_quick_config(quick_world, tmp_path, capsys, monkeypatch):
    assets, _ = quick_world
    monkeypatch.setenv("LASER_ASSETS_DIR", str(assets.root.parent))
    args = ["train", "--config", str(ROOT / "configs" / "quick.yaml"), "--name", "t", "--quiet",
            "--set", f"output_dir={tmp_path}", "--set", "rounds=2", "--set", "eval_every=1",
            "--set", "report_to=[tensorboard,wandb]"]
    assert main(args) == 0
    lines = [json.loads(x) for x in (tmp_path / "t" / "metrics.jsonl").read_text().splitlines()]
    assert [x["type"] for x in lines] == ["eval", "round", "eval", "round", "eval"]
    assert all(len(x["accuracy"]) == 2 for x in lines if x["type"] == "eval")
    assert (tmp_path / "t" / "config.yaml").exists() and not (tmp_path / "t" / ".lock").exists()
    assert "final test accuracy" in capsys.readouterr().out
    # Each round says how its instances were routed, per domain, and how often to the oracle's RM.
    rounds = [x for x in lines if x["type"] == "round"]
    for r in rounds:
        assert sum(sum(row.values()) for row in r["picks_by_domain"].values()) == sum(r["picks"].values())
        assert 0.0 <= r["oracle_match"] <= 1.0
        # The router's reward (rerank_gain, the default) came from the round's validation probes.
        probes, defaults = r["probes"], RoundSettings()
        probed = {rm for rm, c in probes["picks"].items() if c}
        warm = r["round"] < defaults.rerank_warmup  # every RM scores every informative probe, none is skipped
        assert probes["every_rm"] == warm and (probes["confident"] == 0 or not warm)
        assert probes["prompts"] == (defaults.rerank_warmup_prompts if warm else defaults.rerank_prompts)
        assert probes["sampled"] == probes["prompts"] - probes["confident"] >= probes["informative"]
        assert sum(probes["picks"].values()) == (len(probes["picks"]) if warm else 1) * probes["informative"]
        assert set(r["feedback_by_domain"]) <= set(r["picks_by_domain"])  # the world's two domains
        for row in r["feedback_by_domain"].values():
            assert set(row) <= probed and all(-1 <= v <= 1 for v in row.values())
    assert lines[-1]["elapsed_s"] > lines[0]["elapsed_s"] > 0
    # TensorBoard holds the same numbers (step = round), and TRL's own DPO logs beside them.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tb = EventAccumulator(str(tmp_path / "t" / "tensorboard"))
    tb.Reload()
    evals = [x for x in lines if x["type"] == "eval"]
    assert [(e.step, round(e.value, 6)) for e in tb.Scalars("eval/mean_accuracy")] == \
        [(x["round"], round(x["mean_accuracy"], 6)) for x in evals]
    assert [e.step for e in tb.Scalars("round/rm_forward")] == [0, 1]
    assert any((tmp_path / "t" / "tensorboard" / "trl").iterdir())
    # W&B (offline) holds them too, at step = round; TRL's per-update logs stay out of that run.
    history = wandb_history(tmp_path / "t")
    logged = [(h["_step"], round(h["eval/mean_accuracy"], 6)) for h in history if "eval/mean_accuracy" in h]
    assert logged == [(x["round"], round(x["mean_accuracy"], 6)) for x in evals]
    assert [h["_step"] for h in history if "round/rm_forward" in h] == [0, 1]
    assert not any(k.startswith("train/") for h in history for k in h)
    # The finished run's report: a table per evaluation and two plots.
    report = (tmp_path / "t" / "report.md").read_text()
    assert "| 0 |" in report and "| 2 |" in report and "oracle's RM" in report
    for png in ("accuracy.png", "picks.png"):
        assert (tmp_path / "t" / png).read_bytes()[:4] == b"\x89PNG"
    # The same run name again: refused, the metrics already written are kept.
    assert main(args) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert len((tmp_path / "t" / "metrics.jsonl").read_text().splitlines()) == 5
    # The run records which embedded world it saw; resuming it on another one is refused, nothing rewritten.
    record = tmp_path / "t" / "assets.json"
    assert json.loads(record.read_text()) == {"digest": assets.recipe.digest()}
    record.write_text(json.dumps({"digest": "0123456789abcdef"}))
    assert main(["train", "--resume", str(tmp_path / "t"), "--quiet"]) == 2
    assert "trained on embedded assets 0123456789abcdef" in capsys.readouterr().err
    assert len((tmp_path / "t" / "metrics.jsonl").read_text().splitlines()) == 5


def test_lora_training_checkpoints_and_resumes_the_adapters(quick_world, tmp_path, monkeypatch):
    """A LoRA run holds no copy of the model: its reference is a copy of the adapters, its checkpoints hold the
    adapters and that copy, and a round resumed from a checkpoint in the middle of an iteration is the round the
    run made."""
    pytest.importorskip("peft")
    import torch
    from transformers import AutoModelForCausalLM

    from laser.parts import build_trainer
    from laser.statefile import load_state

    assets, _ = quick_world
    monkeypatch.setenv("LASER_ASSETS_DIR", str(assets.root.parent))
    config = load_config(ROOT / "configs" / "quick.yaml", [f"output_dir={tmp_path}", "dpo.lora={r: 4, alpha: 8}",
                                                          "dpo.learning_rate=1e-2"])
    assert config.dpo.lora.target_modules == ["q_proj", "v_proj"] and config.round.rounds_per_iteration == 2
    trainer = build_trainer(config)
    try:
        base = AutoModelForCausalLM.from_pretrained(assets.policy).state_dict()
        weight_bytes = sum(v.numel() * v.element_size() for v in base.values())
        trainable = [n for n, p in trainer.policy.named_parameters() if p.requires_grad]
        assert trainable and all("lora_" in n for n in trainable)
        for _ in range(3):  # round 2 starts the second iteration: its reference is the trained adapters
            trainer.run_round()
        assert trainer.dpo.ref_model is None
        assert trainer.dpo.reference_parameters == sum(trainer.policy.get_parameter(n).numel() for n in trainable)
        path = trainer.save_checkpoint()
        assert (path / "policy" / "adapter_model.safetensors").is_file()
        files = {str(p.relative_to(path)): p.stat().st_size for p in path.rglob("*") if p.is_file()}
        assert "policy/model.safetensors" not in files and not list(path.parent.glob("reference-*"))
        assert files["policy/adapter_model.safetensors"] < weight_bytes / 10
        state = load_state(path / "trainer_state.safetensors")["dpo"]
        assert state["reference"] == "adapter" and set(state["ref_adapter"]) == set(trainable)
        # the DPO step's state (optimizer moments, the reference adapter) holds a few copies of the adapters only
        tensors = [state["ref_adapter"].values(), *(s.values() for s in state["optimizer"]["state"].values())]
        assert sum(t.numel() * t.element_size() for group in tensors for t in group) < weight_bytes / 5
        adapters = {n: p.detach().clone() for n, p in trainer.policy.named_parameters() if "lora_" in n}
        frozen = trainer.policy.get_base_model().state_dict()
        assert torch.equal(frozen["model.layers.0.mlp.up_proj.weight"], base["model.layers.0.mlp.up_proj.weight"])
        assert any(not torch.all(v == 0) for n, v in adapters.items() if "lora_B" in n)  # the adapters learned
        went_on = trainer.run_round()
        with torch.no_grad():
            for n, p in trainer.policy.named_parameters():
                if "lora_" in n:
                    p.zero_()
        trainer.load_checkpoint(path)
        for n, p in trainer.policy.named_parameters():
            if "lora_" in n:
                assert torch.equal(p, adapters[n]), n
        assert trainer.round == 3
        resumed = trainer.run_round()  # the same round again, from the checkpoint: the same round line
        # (the DPO loss to float rounding: the restored adapters are new tensors, which CPU kernels may sum in
        # another order; seen: 0.8134028 and 0.8134027)
        assert resumed.pop("dpo")[0]["loss"] == pytest.approx(went_on.pop("dpo")[0]["loss"], rel=1e-6)
        timing = {"seconds", "sync_s"}
        assert {k: v for k, v in resumed.items() if k not in timing} == \
            {k: v for k, v in went_on.items() if k not in timing}
        assert went_on["pairs"]["pairs"] > 0
    finally:
        trainer.engine.close()


def test_the_eval_section_is_validated_and_defaults_to_the_rounds_length():
    from laser.config import ConfigError, load_config

    config = load_config(None, ["round.max_new_tokens=20"])
    assert config.eval.max_new_tokens is None and config.eval.tokens_for("any", config.round.max_new_tokens) == 20
    config = load_config(None, ["eval.max_new_tokens=64", "eval.max_new_tokens_by_domain={gsm8k: 512}"])
    assert config.eval.tokens_for("gsm8k", 16) == 512 and config.eval.tokens_for("mmlu", 16) == 64
    with pytest.raises(ConfigError, match="eval.checker.*unknown checker 'regex'"):
        load_config(None, ["eval.checker=regex"])
    with pytest.raises(ConfigError, match="eval.temperature"):
        load_config(None, ["eval.temperature=-1"])
    with pytest.raises(ConfigError, match="max_new_tokens must be >= 1"):
        load_config(None, ["eval.max_new_tokens_by_domain={gsm8k: 0}"])


def test_a_resumed_run_sends_each_metrics_line_to_tensorboard_once(tmp_path):
    """A resume writes again the metrics lines after its checkpoint (metrics.jsonl is truncated to the checkpoint's
    count); the tracker remembers how many lines it sent, so TensorBoard gets each step once, not twice."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from laser.training.tracking import Tracker

    lines = [{"type": "round", "round": r, "rm_forward": 10 * r} for r in range(4)]
    first = Tracker(tmp_path, ["tensorboard"])
    for i, line in enumerate(lines[:3], start=1):  # rounds 0-2 sent; the checkpoint holds 2 lines
        first.log(line, index=i)
    first.close()
    resumed = Tracker(tmp_path, ["tensorboard"])
    for i, line in enumerate(lines[2:], start=3):  # the resume writes line 3 again, then line 4
        resumed.log(line, index=i)
    resumed.close()
    tb = EventAccumulator(str(tmp_path / "tensorboard"))
    tb.Reload()
    assert [(e.step, e.value) for e in tb.Scalars("round/rm_forward")] == [(0, 0), (1, 10), (2, 20), (3, 30)]
