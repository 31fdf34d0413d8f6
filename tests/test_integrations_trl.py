"""The router inside TRL's GRPO, for real: `RoutedReward` as a `reward_funcs` entry of a `GRPOTrainer` on the quick
world's policy and reward models, `RouterCallback` teaching it from held-out probes, and an exact resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import free_port
from transformers import AutoModelForCausalLM, AutoTokenizer

from laser.generation import make_embedder
from laser.integrations.trl import ROUTER_STATE, RoutedReward, RouterCallback
from laser.rewards import load_reward_model
from laser.statefile import load_state
from laser.strategies import make_strategy


@pytest.fixture(scope="module")
def world(quick_world):
    assets, _ = quick_world
    return assets, assets.suite()


def _reward(assets, model, tokenizer, strategy: str = "laser") -> RoutedReward:
    lineup, _ = assets.lineup()
    rms = {name: load_reward_model(kind, str(path)) for name, (kind, path) in lineup.items()}
    router = make_strategy(strategy, list(rms), dim=model.config.hidden_size, seed=0, center=True,
                           normalize_feedback=False) if strategy == "laser" else make_strategy(strategy, list(rms))
    return RoutedReward(rms, router, contexts=make_embedder(model, tokenizer), domain_column="domain")


def test_one_rm_scores_each_prompts_group_and_the_scores_come_back_in_place(world):
    """Completions of two prompts, interleaved: each prompt's completions are scored by the one RM it was routed to,
    normalized per RM, and returned at their own positions; a single-RM router gives that RM's scores."""
    assets, suite = world
    model = AutoModelForCausalLM.from_pretrained(assets.policy)
    tok = AutoTokenizer.from_pretrained(assets.policy)
    a, b = suite.train[0], next(ex for ex in suite.train if ex.domain != suite.train[0].domain)
    prompts = [a.prompt, b.prompt, a.prompt, b.prompt]
    completions = [a.answer, b.answer, a.answer + "x", "zz"]
    reward = _reward(assets, model, tok, strategy="single:strings")
    logged = {}
    out = reward(prompts=prompts, completions=completions, completion_ids=None,
                 log_metric=lambda k, v: logged.setdefault(k, v), domain=[a.domain, b.domain, a.domain, b.domain])
    raw = reward.reward_models["strings"].score([a.prompt, a.prompt, b.prompt, b.prompt],
                                                [a.answer, a.answer + "x", b.answer, "zz"]).values
    # One RM for all: the same order of the completions of a prompt as its raw scores.
    assert np.sign(out[0] - out[2]) == np.sign(raw[0] - raw[1]) and np.sign(out[1] - out[3]) == np.sign(raw[2] - raw[3])
    assert logged["router/share_strings"] == 1.0 and logged["router/rm_forward"] == 4
    assert reward.picks["strings"] == 2 and reward.rm_forward == 4
    scored = reward.score(prompts, completions)
    assert scored.prompts == [a.prompt, b.prompt] and scored.instance.tolist() == [0, 1, 0, 1]  # in input order
    with pytest.raises(ValueError, match="2 prompts for 3 completions"):
        reward(prompts=prompts[:2], completions=completions[:3])


def test_grpo_trains_with_the_routed_reward_and_the_router_learns_from_probes_and_resumes_exactly(world, tmp_path):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    assets, suite = world
    train = Dataset.from_list([{"prompt": ex.prompt, "domain": ex.domain} for ex in suite.train[::25][:16]])

    def run(out, steps, resume=None):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_pretrained(assets.policy)
        tok = AutoTokenizer.from_pretrained(assets.policy)
        reward = _reward(assets, model, tok)
        reward.router.last_change = 35  # as a router from a DPO run would carry, in that run's rounds
        callback = RouterCallback(reward, suite.validation, every=2, probes=12, n=8, max_new_tokens=8,
                                  temperature=1.0, warmup_probes=24)
        assert reward.router.last_change is None  # the callback counts its own probe rounds
        args = GRPOConfig(output_dir=str(out), per_device_train_batch_size=8, num_generations=4,
                          max_completion_length=8, max_steps=steps, save_steps=2, logging_steps=1, report_to=[],
                          use_cpu=True, learning_rate=1e-4, seed=0, temperature=1.2, save_only_model=False)
        trainer = GRPOTrainer(model=model, reward_funcs=[reward], args=args, train_dataset=train,
                              processing_class=tok, callbacks=[callback])
        trainer.train(resume_from_checkpoint=resume)
        return trainer, reward, callback

    trainer, reward, callback = run(tmp_path / "a", 4)
    # The router was told: a warm-up round (every RM on every informative probe), then a round every 2 steps.
    assert [line["step"] for line in callback.lines] == [0, 2, 4]
    assert callback.lines[0]["every_rm"] and callback.lines[0]["informative"] > 0
    k = len(reward.reward_models)
    assert all(n == callback.lines[0]["informative"] for n in callback.lines[0]["picks"].values())
    for line in callback.lines[1:]:  # then one RM per informative probe (the probes it is sure of are skipped)
        assert not line["every_rm"] and sum(line["picks"].values()) == line["informative"] < k * line["prompts"]
    # Every completion of every step got a reward from one RM; the picks are in TRL's logs.
    assert reward.calls == 4 and sum(reward.picks.values()) == 4 * 2  # two prompts a step
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 4 and all(any(k.startswith("router/share_") for k in h) for h in logs)
    assert all(np.isfinite(h["rewards/routed_reward/mean"]) for h in logs)
    assert any(h["rewards/routed_reward/std"] > 0 for h in logs)  # the routed RMs told completions apart
    # The router's state is saved beside each checkpoint, and a resume from step 2 takes it and ends where the
    # uninterrupted run ended.
    saved = load_state(tmp_path / "a" / "checkpoint-2" / ROUTER_STATE)
    assert saved["probe_round"] == 2
    _, resumed, again = run(tmp_path / "a", 4, resume=str(tmp_path / "a" / "checkpoint-2"))
    assert [line["step"] for line in again.lines] == [4]
    assert again.host.round == 3 and resumed.calls == 4
    np.testing.assert_equal(resumed.router.state_dict(), reward.router.state_dict())
    assert resumed.picks == reward.picks


def test_grpo_with_colocated_vllm_generates_from_the_weights_it_trains(world, tmp_path, monkeypatch):
    """`use_vllm=True, vllm_mode="colocate"` on CPU: TRL's vLLM engine generates the completions, the routed reward
    scores them, the router learns from probes, and after the steps (`colocate_vllm`'s in-place weight sync) the
    engine's greedy answers are the trained model's, not the initial ones."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer
    from vllm import SamplingParams

    from laser.generation.hf_engine import HFEngine
    from laser.integrations.trl import colocate_vllm

    assets, suite = world
    # TRL hands vLLM a fraction of memory, which on CPU is a share of all RAM minus what the process holds (negative
    # beside a busy test worker): a fixed KV cache of 1 GiB instead, vLLM's CPU setting.
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
    # TRL writes the launch variables vLLM's external launcher reads into os.environ: set here, they are undone after.
    for var, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(free_port())}.items():
        monkeypatch.setenv(var, value)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(assets.policy)
    tok = AutoTokenizer.from_pretrained(assets.policy)
    reward = _reward(assets, model, tok)
    callback = RouterCallback(reward, suite.validation, every=2, probes=12, n=8, max_new_tokens=8, temperature=1.0,
                              warmup_probes=24)
    train = Dataset.from_list([{"prompt": ex.prompt, "domain": ex.domain} for ex in suite.train[::25][:16]])
    args = GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=8, num_generations=4,
                      max_completion_length=8, max_steps=4, save_strategy="no", logging_steps=1, report_to=[],
                      use_cpu=True, learning_rate=3e-3, seed=0, temperature=1.2, use_vllm=True,
                      vllm_mode="colocate", vllm_gpu_memory_utilization=0.05)
    trainer = GRPOTrainer(model=model, reward_funcs=[reward], args=args, train_dataset=train, processing_class=tok,
                          callbacks=[callback])
    colocate_vllm(trainer)
    prompts = [ex.prompt for ex in suite.validation[:40]]
    llm = trainer.vllm_generation.llm

    def engine_greedy() -> list[str]:
        return [o.outputs[0].text for o in llm.generate(prompts, SamplingParams(max_tokens=8, temperature=0),
                                                        use_tqdm=False)]

    before = engine_greedy()
    trainer.train()
    assert reward.calls == 4 and sum(reward.picks.values()) == 4 * 2
    assert [line["step"] for line in callback.lines] == [0, 2, 4]
    logs = [h for h in trainer.state.log_history if "loss" in h]
    # TRL compares the engine's sampling log-probabilities with the trained model's: the same weights, so ~1.
    assert all(abs(h["sampling/importance_sampling_ratio/mean"] - 1) < 0.05 for h in logs), logs
    trainer.vllm_generation.sync_weights()
    after = engine_greedy()
    model.eval()
    greedy = HFEngine.wrap(model, tok).greedy(prompts, max_new_tokens=8)
    assert sum(a != b for a, b in zip(before, after, strict=True)) >= 10  # training moved the answers
    assert after == [greedy.texts(j)[0] for j in range(len(prompts))]  # and the engine serves the trained weights
    with pytest.raises(ValueError, match="use_vllm=True and vllm_mode='colocate'"):
        colocate_vllm(GRPOTrainer(model=model, reward_funcs=[reward], processing_class=tok, train_dataset=train,
                                  args=GRPOConfig(output_dir=str(tmp_path / "b"), use_cpu=True, report_to=[],
                                                  per_device_train_batch_size=8, num_generations=4)))
    # The engine and the process group it joined end with the test (the worker runs other files after it).
    from vllm.distributed.parallel_state import destroy_distributed_environment, destroy_model_parallel

    llm.llm_engine.engine_core.shutdown()
    destroy_model_parallel()
    destroy_distributed_environment()
    assert not torch.distributed.is_initialized()
