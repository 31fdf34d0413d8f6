"""`laser plan`: parameter counts from config.json files, memory per process against memory measured on CPU, what
the paper config implies on 8 x 80 GB and on one 24 GB GPU, and the FLOPs of a round per strategy."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from laser.cli import main
from laser.config import load_config
from laser.plan import KNOWN, Arch, GiB, PlanError, read_arch, run_plan

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
PAPER = ROOT / "configs" / "paper_llama3_8b.yaml"


def test_parameter_counts_from_config_json_are_the_models_own(quick_world, tmp_path):
    """The plan's count equals the loaded model's, for the quick world's tied policy and its sequence classifier
    and an untied Llama with biases; the paper's models match their published sizes."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, Qwen2Config, Qwen2ForCausalLM

    assets, _ = quick_world
    policy = AutoModelForCausalLM.from_pretrained(assets.policy)
    assert read_arch(str(assets.policy)).params == sum(p.numel() for p in policy.parameters())
    rm_dir = next(iter(assets.reward_models.values()))
    rm = AutoModelForSequenceClassification.from_pretrained(rm_dir)
    assert read_arch(str(rm_dir), classifier=True).params == sum(p.numel() for p in rm.parameters())
    config = Qwen2Config(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=300, tie_word_embeddings=False)
    with torch.device("meta"):
        qwen = Qwen2ForCausalLM(config)
    config.save_pretrained(tmp_path / "qwen")
    assert read_arch(str(tmp_path / "qwen")).params == sum(p.numel() for p in qwen.parameters())
    assert Arch.of("llama3", KNOWN["meta-llama/Meta-Llama-3-8B"]).params == 8_030_261_248
    assert Arch.of("mistral", KNOWN["mistralai/Mistral-7B-v0.1"]).params == 7_241_732_096
    with pytest.raises(PlanError, match="pass --model-config org/model=CONFIG.json"):
        read_arch("org/model")


def _within(rows: list[dict], tolerance: float = 0.2) -> None:
    for r in rows:
        assert abs(r["ratio"] - 1) <= tolerance, r


def test_the_plan_is_within_a_fifth_of_the_memory_measured_on_the_quick_world(quick_world, monkeypatch):
    """One DPO update (full fine-tuning, 8 pairs: gradients, activations, the optimizer's first step) and a vLLM
    engine's start, each measured in a process of its own (benchmarks/plan_check.py)."""
    import plan_check

    assets, _ = quick_world
    monkeypatch.setenv("LASER_ASSETS_DIR", str(assets.root.parent))  # the measuring processes find the world built
    monkeypatch.setenv("PLAN_CHECK_DIR", str(assets.root.parent.parent / "plan-check"))
    _within(plan_check.compare(plan_check.QUICK))


@pytest.mark.slow
def test_the_plan_is_within_a_fifth_of_the_memory_measured_on_a_random_half_billion_model(quick_world, monkeypatch):
    """The weights, a LoRA and a full fine-tuning update, and a vLLM engine of a random Qwen2 of 0.5B parameters."""
    import plan_check

    assets, _ = quick_world
    monkeypatch.setenv("LASER_ASSETS_DIR", str(assets.root.parent))
    monkeypatch.setenv("PLAN_CHECK_DIR", str(assets.root.parent.parent / "plan-check"))
    _within(plan_check.compare(plan_check.HALF))


def test_the_paper_config_fits_8_gpus_of_80_gb_as_it_implies():
    config = load_config(PAPER)
    result = run_plan(config, gpus=8, gpu_memory="80GiB")
    assert result.fits and result.placement.processes == 8 and result.worst.peak <= 80 * GiB
    rms = [rp.components["reward models"] for rp in result.ranks]
    assert all(x > 20 * GiB for x in rms[:4]) and rms[4:] == [0] * 4  # one implicit RM (two 7B models) per process
    for rp in result.ranks:
        c = rp.components
        assert c["DPO reference"] < c["policy weights"] / 100  # LoRA: a copy of the adapters, not of the model
        assert rp.stages["update"] < rp.stages["sampling"] + c["activations (update)"]  # the engine sleeps
    # The same run with every RM in every process does not fit, and the plan says which setting fixes it.
    replicated = run_plan(load_config(PAPER, ["models.rm_placement=replicate"]), gpus=8, gpu_memory="80GiB")
    assert replicated.fits is False and any(a.startswith("models.rm_placement: shard") for a in replicated.advice)
    # FLOPs: LASeR's RMs score each candidate once, the ensemble's four RMs four times; sampling and the update
    # are the same work.
    laser, ensemble = result.flops["laser"], result.flops["ensemble"]
    assert laser["update"] == ensemble["update"] and laser["sampling"] == ensemble["sampling"]
    assert 3.8 < ensemble["scoring"] / laser["scoring"] < 4.2
    assert 0.4 < laser["total"] / ensemble["total"] < 0.6


def test_the_plans_probe_scoring_counts_the_drawn_samples_of_each_probe():
    """Under `rerank_gain` LASeR's probes add RM passes to a round: 2 x `rerank_draws` samples of each probe, or
    every one of its `n` (`rerank_draws: null`); the other strategies score no probe."""
    def flops(*more):
        return run_plan(load_config(PAPER, ["round.feedback=rerank_gain", "round.rerank_prompts=12", *more]), gpus=8,
                        gpu_memory="80GiB").flops

    every, drawn = flops("round.rerank_draws=null"), flops("round.rerank_draws=1")
    r = load_config(PAPER).round
    per_candidate = drawn["random"]["scoring"] / (r.prompts_per_round * r.n)  # one RM per candidate
    assert every["laser"]["scoring"] - drawn["laser"]["scoring"] == pytest.approx(per_candidate * 12 * (r.n - 2))
    assert drawn["laser"]["scoring"] == pytest.approx(per_candidate * (r.prompts_per_round * r.n + 12 * 2))
    assert every["random"] == drawn["random"]


def test_laser_plan_says_what_does_not_fit_and_why(capsys):
    assert main(["plan", "--config", str(PAPER), "--gpus", "1", "--gpu-memory", "24GiB"]) == 1
    out = capsys.readouterr().out
    assert "DOES NOT FIT" in out and "the policy's weights and the engine's copy of them alone take" in out
    assert main(["plan", "--config", str(PAPER), "--gpus", "8", "--gpu-memory", "80GiB", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["fits"] and len(data["ranks"]) == 8 and data["policy"]["params"] == 8_030_261_248
    assert main(["plan", "--config", str(PAPER), "--set", "engine.tensor_parallel_size=2", "--gpus", "8",
                 "--processes", "8"]) == 2
    assert "engine.tensor_parallel_size is 2 under 8 processes" in capsys.readouterr().err
    assert main(["plan", "--config", str(PAPER), "--gpu-memory", "lots"]) == 2
    assert "expected a size such as 80GiB" in capsys.readouterr().err


def test_laser_plan_reads_the_quick_worlds_models_and_prompts(quick_world, monkeypatch, capsys):
    assets, _ = quick_world
    monkeypatch.setenv("LASER_ASSETS_DIR", str(assets.root.parent))
    assert main(["plan", "--config", str(ROOT / "configs" / "quick.yaml"), "--cpu", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data["reward_models"]) == set(assets.lineup("judges")[0])
    prompts = [len(p) for p in (ex.prompt for ex in assets.suite().train)]
    assert 0 < data["placement"]["prompt_tokens"] <= max(prompts) + 2  # measured: characters are its tokens
