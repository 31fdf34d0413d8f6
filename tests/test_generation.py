"""Generation engines (vLLM and HF) and bandit contexts on the embedded reduced world's policy."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from conftest import hf_greedy_texts
from transformers import AutoModelForCausalLM, AutoTokenizer

from laser.generation import (
    ContextConfig,
    ContextEmbedder,
    EngineConfig,
    GenerationError,
    Sample,
    dedupe,
    make_embedder,
    make_engine,
)
from laser.generation.hf_engine import HFEngine


@pytest.fixture(scope="module")
def prompts(world):
    _, suite = world
    return [ex.prompt for ex in suite.test[::8]]


@pytest.fixture(scope="module")
def hf_engine(world):
    assets, _ = world
    return HFEngine(assets.policy, batch_size=16)


@pytest.fixture(scope="module")
def vllm_engine(world):
    assets, _ = world
    # A KV cache large enough that many requests run at once (and would have their prefill split).
    engine = make_engine(assets.policy, EngineConfig(engine="vllm", max_model_len=128, kv_cache_mb=256))
    yield engine
    engine.close()


def completion_logprobs(model, tokenizer, prompt_ids: list[int], completion_ids: tuple[int, ...]) -> float:
    """Sum of log p(completion token | prefix) by one direct forward pass."""
    ids = torch.tensor([prompt_ids + list(completion_ids)])
    with torch.no_grad():
        logits = model(ids).logits[0].float().log_softmax(-1)
    n = len(prompt_ids)
    return float(sum(logits[n - 1 + i, t] for i, t in enumerate(completion_ids)))


def test_hf_greedy_matches_generate_and_direct_logprobs(world, hf_engine, prompts):
    assets, _ = world
    tok = AutoTokenizer.from_pretrained(assets.policy)
    model = AutoModelForCausalLM.from_pretrained(assets.policy)
    expected = hf_greedy_texts(model, tok, prompts, 12)

    cands = hf_engine.greedy(prompts, max_new_tokens=12, logprobs=True)
    assert [c[0].text for c in cands.samples] == expected
    ids, _ = hf_engine.encode(prompts, 12)
    for p, group in zip(ids, cands.samples, strict=True):
        (s,) = group
        assert s.count == 1
        if s.finish_reason == "stop":
            assert s.token_ids[-1] == tok.eos_token_id
        else:
            assert len(s.token_ids) == 12
        assert s.cumulative_logprob == pytest.approx(completion_logprobs(model, tok, p, s.token_ids), abs=1e-4)


def test_sampling_is_seeded_and_deduplicated(hf_engine, prompts):
    a = hf_engine.sample(prompts[:4], n=16, temperature=1.0, max_new_tokens=8, seed=3)
    b = hf_engine.sample(prompts[:4], n=16, temperature=1.0, max_new_tokens=8, seed=3)
    c = hf_engine.sample(prompts[:4], n=16, temperature=1.0, max_new_tokens=8, seed=4)
    assert [a.texts(i) for i in range(4)] == [b.texts(i) for i in range(4)]
    assert [a.texts(i) for i in range(4)] != [c.texts(i) for i in range(4)]
    for group in a.samples:
        texts = [s.text for s in group]
        assert len(texts) == len(set(texts)) and sum(s.count for s in group) == 16
    assert a.stats["drawn"] == 64 and a.stats["distinct"] == sum(len(g) for g in a.samples) < 64


def test_dedupe_counts_identical_texts():
    s = [Sample("x", (1,), "stop", -1.0), Sample("y", (2,), "stop", -2.0), Sample("x", (1,), "stop", -1.0)]
    out = dedupe(s)
    assert [(o.text, o.count) for o in out] == [("x", 2), ("y", 1)]


def test_truncation_stop_strings_and_empty_generations(hf_engine, prompts, caplog):
    long_prompt = "Q: " + "very " * 60 + "long? A:"
    with caplog.at_level(logging.WARNING):
        cands = hf_engine.greedy([long_prompt, prompts[0]], max_new_tokens=16)
    assert cands.prompts_truncated == 1 and "cut from the left" in caplog.text
    ids, _ = hf_engine.encode([long_prompt], 16)
    assert len(ids[0]) == 128 - 16 and ids[0][0] == hf_engine.tokenizer.bos_token_id
    assert ids[0][-3:] == hf_engine.tokenizer(" A:", add_special_tokens=False)["input_ids"]

    short = hf_engine.greedy(prompts[:3], max_new_tokens=1)
    assert all(g[0].truncated and g[0].finish_reason == "length" for g in short.samples)
    # Completions start with a space: stopping on it leaves an empty completion, kept and marked.
    empty = hf_engine.greedy(prompts[:3], max_new_tokens=8, stop=[" "])
    assert all(g[0].text == "" and g[0].empty and g[0].finish_reason == "stop" for g in empty.samples)
    assert empty.stats["empty"] == 3


@pytest.mark.parametrize("kwargs, match", [
    (dict(n=0), "n must be"), (dict(temperature=-1), "temperature"), (dict(top_p=0), "top_p"),
    (dict(max_new_tokens=0), "max_new_tokens"), (dict(max_new_tokens=128), "context window"),
    (dict(temperature=0, n=2), "greedy"), (dict(stop=[""]), "stop"),
])
def test_bad_sampling_arguments_are_clear_errors(hf_engine, prompts, kwargs, match):
    with pytest.raises(ValueError, match=match):
        hf_engine.sample(prompts[:1], **kwargs)


def test_bad_prompts_are_type_errors(hf_engine):
    with pytest.raises(TypeError, match="list of strings"):
        hf_engine.sample("Q: 1+1=? A:")
    with pytest.raises(TypeError, match="item 1"):
        hf_engine.sample(["a", 3])
    assert len(hf_engine.sample([])) == 0


def test_a_failing_batch_names_itself(world, prompts, monkeypatch):
    assets, _ = world
    engine = HFEngine(assets.policy, batch_size=2)
    real = engine.model.generate
    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("device lost")
        return real(*args, **kwargs)

    monkeypatch.setattr(engine.model, "generate", flaky)
    with pytest.raises(GenerationError, match=r"batch 1 \(prompts 2\.\.3 of 6\).*device lost"):
        engine.greedy(prompts[:6], max_new_tokens=4)
    assert engine.stats.errors and engine.stats.calls == 0


def test_vllm_greedy_and_logprobs_match_hf(vllm_engine, hf_engine, prompts):
    v = vllm_engine.greedy(prompts, max_new_tokens=12, logprobs=True)
    h = hf_engine.greedy(prompts, max_new_tokens=12, logprobs=True)
    assert [g[0].text for g in v.samples] == [g[0].text for g in h.samples]
    assert [g[0].token_ids for g in v.samples] == [g[0].token_ids for g in h.samples]
    assert [g[0].finish_reason for g in v.samples] == [g[0].finish_reason for g in h.samples]
    np.testing.assert_allclose([g[0].cumulative_logprob for g in v.samples],
                               [g[0].cumulative_logprob for g in h.samples], atol=1e-4)


@pytest.mark.parametrize("name", ["vllm", "hf"])
def test_log_probabilities_only_when_asked_and_asking_changes_no_sample(name, vllm_engine, hf_engine, prompts):
    engine = {"vllm": vllm_engine, "hf": hf_engine}[name]
    plain = engine.sample(prompts[:4], n=8, temperature=1.0, max_new_tokens=8, seed=6)
    asked = engine.sample(prompts[:4], n=8, temperature=1.0, max_new_tokens=8, seed=6, logprobs=True)
    assert [[(s.token_ids, s.count) for s in g] for g in plain.samples] == \
        [[(s.token_ids, s.count) for s in g] for g in asked.samples]
    assert all(s.cumulative_logprob is None for g in plain.samples for s in g)
    assert all(s.cumulative_logprob < 0 for g in asked.samples for s in g if s.token_ids)


def test_vllm_sampling_seeded_and_deduplicated(vllm_engine, prompts):
    a = vllm_engine.sample(prompts[:4], n=16, temperature=1.0, max_new_tokens=8, seed=1)
    b = vllm_engine.sample(prompts[:4], n=16, temperature=1.0, max_new_tokens=8, seed=1)
    assert [a.texts(i) for i in range(4)] == [b.texts(i) for i in range(4)]
    assert all(sum(s.count for s in g) == 16 for g in a.samples)
    assert a.stats["distinct"] > 4
    # Many seeded requests at once (more prompt tokens than one engine step takes): vLLM 0.32 on CPU
    # crashed here with chunked prefill ("CPU Generator does not use offset").
    many = vllm_engine.sample(prompts * 2, n=8, temperature=1.0, max_new_tokens=16, seed=2)
    assert many.stats["drawn"] == len(prompts) * 16 and sum(len(p) for p in prompts) * 16 > 4096
    stopped = vllm_engine.greedy(prompts[:3], max_new_tokens=8, stop=[" "])
    assert all(g[0].empty and g[0].finish_reason == "stop" for g in stopped.samples)


@pytest.mark.parametrize("name", ["vllm_engine", "hf_engine"])
def test_prompts_of_one_call_draw_their_own_samples(name, prompts, request):
    """Under one call seed every prompt samples with a seed of its own: two copies of a prompt in one call are
    two independent draws (under one seed per call, vLLM replayed the same draws for both)."""
    engine = request.getfixturevalue(name)
    spread = engine.sample(prompts, n=8, temperature=1.0, max_new_tokens=8, seed=4)
    p = prompts[max(range(len(prompts)), key=lambda i: len(spread.samples[i]))]  # one with many distinct answers
    call = [p, p, prompts[1]]
    twice = engine.sample(call, n=8, temperature=1.0, max_new_tokens=8, seed=5)
    first, second = (sorted((s.text, s.count) for s in twice.samples[i]) for i in (0, 1))
    assert len(first) > 2 and first != second
    # Still a function of the call's seed: the same call again draws the same.
    again = engine.sample(call, n=8, temperature=1.0, max_new_tokens=8, seed=5)
    assert [again.texts(i) for i in range(3)] == [twice.texts(i) for i in range(3)]


def _dpo_step(assets, suite, tmp_path, lr: float = 5e-3):
    """One real TRL DPO update of the policy on correctness pairs; returns the updated model."""
    import random

    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from laser.assets.pairs import correctness_pairs

    tok = AutoTokenizer.from_pretrained(assets.policy)
    model = AutoModelForCausalLM.from_pretrained(assets.policy)
    rows = correctness_pairs(suite.train[:64], random.Random(0))
    data = Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows])
    args = DPOConfig(output_dir=str(tmp_path / "dpo"), per_device_train_batch_size=16, max_steps=2, learning_rate=lr,
                     report_to=[], save_strategy="no", logging_strategy="no", use_cpu=True, bf16=False,
                     gradient_checkpointing=False, disable_tqdm=True)
    DPOTrainer(model=model, args=args, train_dataset=data, processing_class=tok).train()
    return model.eval()


def test_sync_weights_after_a_dpo_step(world, vllm_engine, hf_engine, prompts, tmp_path):
    assets, suite = world
    before = vllm_engine.greedy(prompts, max_new_tokens=12, logprobs=True)
    model = _dpo_step(assets, suite, tmp_path)
    seconds = vllm_engine.sync_weights(model)
    assert seconds >= 0 and vllm_engine.stats.weight_syncs == 1  # its speed is benchmarks/bench_generation.py's
    hf_engine.sync_weights(model)
    after_v = vllm_engine.greedy(prompts, max_new_tokens=12, logprobs=True)
    after_h = hf_engine.greedy(prompts, max_new_tokens=12, logprobs=True)
    assert [g[0].text for g in after_v.samples] == [g[0].text for g in after_h.samples]
    lv = np.array([g[0].cumulative_logprob for g in after_v.samples])
    np.testing.assert_allclose(lv, [g[0].cumulative_logprob for g in after_h.samples], atol=1e-4)
    # The engine serves the new weights: log-probabilities moved.
    assert not np.allclose(lv, [g[0].cumulative_logprob for g in before.samples], atol=1e-3)
    # ... and direct forward passes on the trained model agree with what vLLM reports.
    ids, _ = vllm_engine.encode(prompts, 12)
    for p, g in zip(ids[:5], after_v.samples[:5], strict=True):
        direct = completion_logprobs(model, vllm_engine.tokenizer, p, g[0].token_ids)
        assert g[0].cumulative_logprob == pytest.approx(direct, abs=1e-4)
    # Syncing the original weights back restores the original outputs.
    original = AutoModelForCausalLM.from_pretrained(assets.policy)
    vllm_engine.sync_weights(original)
    hf_engine.sync_weights(original)
    restored = vllm_engine.greedy(prompts, max_new_tokens=12, logprobs=True)
    np.testing.assert_allclose([g[0].cumulative_logprob for g in restored.samples],
                               [g[0].cumulative_logprob for g in before.samples], atol=1e-5)


def test_sync_weights_merges_lora_adapters(world, vllm_engine, prompts):
    peft = pytest.importorskip("peft")
    assets, _ = world
    base = AutoModelForCausalLM.from_pretrained(assets.policy)
    lora = peft.get_peft_model(base, peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)  # a trained adapter: B is no longer zero
    lora.eval()
    vllm_engine.sync_weights(lora)
    got = vllm_engine.greedy(prompts[:6], max_new_tokens=8, logprobs=True)
    ids, _ = vllm_engine.encode(prompts[:6], 8)
    for p, g in zip(ids, got.samples, strict=True):
        direct = completion_logprobs(lora, vllm_engine.tokenizer, p, g[0].token_ids)
        assert g[0].cumulative_logprob == pytest.approx(direct, abs=1e-4)
    assert not any(n for n in lora.state_dict() if "lora_" in n and "base_layer" in n)
    vllm_engine.sync_weights(AutoModelForCausalLM.from_pretrained(assets.policy))


def test_a_vllm_that_fails_to_start_stops_with_the_setting_to_change_also_under_auto(world):
    assets, _ = world
    # A context window longer than the model's 128 positions: vLLM refuses to start, and auto does not hide it
    # behind a slower engine.
    for engine in ("vllm", "auto"):
        with pytest.raises(GenerationError, match="(?s)could not start.*set engine.max_model_len to at most"):
            make_engine(assets.policy, EngineConfig(engine=engine, max_model_len=4096))


def test_auto_generates_with_transformers_only_where_vllm_cannot_be_imported(world, caplog, monkeypatch):
    import sys

    assets, _ = world
    monkeypatch.setitem(sys.modules, "vllm", None)  # what a machine without vLLM sees: import vllm fails
    with caplog.at_level(logging.WARNING):
        engine = make_engine(assets.policy, EngineConfig(engine="auto", max_model_len=128))
    assert isinstance(engine, HFEngine) and "vllm cannot be imported" in caplog.text
    with pytest.raises(GenerationError, match="engine: vllm, but vllm cannot be imported.*or set engine: hf"):
        make_engine(assets.policy, EngineConfig(engine="vllm"))


def test_engine_extra_reaches_vllm_and_unknown_keys_are_named(world):
    from laser.config import ConfigError

    assets, _ = world
    with pytest.raises(ConfigError, match=r"engine.extra.max_num_seq: vllm.LLM takes no such argument "
                                          r"\(did you mean max_num_seqs"):
        make_engine(assets.policy, EngineConfig(engine="vllm", max_model_len=128, extra={"max_num_seq": 4}))
    with pytest.raises(ValueError, match="set tensor_parallel_size with engine.tensor_parallel_size"):
        EngineConfig(extra={"tensor_parallel_size": 2})
    from laser.generation.vllm_engine import check_extra, llm_kwargs

    check_extra({"max_num_seqs": 3, "max_num_batched_tokens": 4096, "quantization": None})  # LLM's and EngineArgs'

    kwargs = llm_kwargs("m", gpu=False, extra={"max_num_seqs": 3, "enforce_eager": False})
    assert kwargs["max_num_seqs"] == 3 and kwargs["enforce_eager"] is False  # extra wins over the defaults


def test_contexts_are_the_last_prompt_token_hidden_state(world, prompts):
    assets, _ = world
    model = AutoModelForCausalLM.from_pretrained(assets.policy)
    tok = AutoTokenizer.from_pretrained(assets.policy)
    assert make_embedder(model, tok).pooling == "mean"  # the run default; the paper's last token is an option
    x = make_embedder(model, tok, ContextConfig(pooling="last")).embed(prompts)
    assert x.shape == (len(prompts), model.config.hidden_size) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    with torch.no_grad():
        h = model(**tok(prompts[2:3], return_tensors="pt"), output_hidden_states=True).hidden_states[-1][0, -1]
    np.testing.assert_allclose(x[2], (h / h.norm()).numpy(), atol=1e-5)
    # Batching and padding do not change a prompt's context.
    one_by_one = ContextEmbedder(model, tok, batch_size=1).embed(prompts)
    np.testing.assert_allclose(x, one_by_one, atol=1e-5)
    # Different prompts, different contexts.
    assert np.abs(x @ x.T - np.eye(len(x))).max() < 0.9999


def test_context_options(world, prompts):
    assets, _ = world
    model = AutoModelForCausalLM.from_pretrained(assets.policy)
    tok = AutoTokenizer.from_pretrained(assets.policy)
    enc = tok(prompts[:1], return_tensors="pt")
    with torch.no_grad():
        hs = model(**enc, output_hidden_states=True).hidden_states
    mean = ContextEmbedder(model, tok, pooling="mean", layer=1, normalize=False).embed(prompts[:1])
    np.testing.assert_allclose(mean[0], hs[1][0].mean(0).numpy(), atol=1e-5)

    proj = make_embedder(model, tok, ContextConfig(dim=8), seed=1).embed(prompts)
    assert proj.shape == (len(prompts), 8)
    np.testing.assert_allclose(proj, make_embedder(model, tok, ContextConfig(dim=8), seed=1).embed(prompts))

    frozen = ContextEmbedder(model, tok, frozen=True)
    live = ContextEmbedder(model, tok)
    before = live.embed(prompts[:4])
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    np.testing.assert_allclose(frozen.embed(prompts[:4]), before, atol=1e-6)
    assert not np.allclose(live.embed(prompts[:4]), before, atol=1e-3)

    for bad, match in [(dict(pooling="max"), "pooling"), (dict(layer=9), "layer"), (dict(dim=0), "dim")]:
        with pytest.raises(ValueError, match=match):
            ContextEmbedder(model, tok, **bad)
    assert ContextEmbedder(model, tok).embed([]).shape == (0, model.config.hidden_size)


def test_engine_arguments_for_gpu_and_cpu():
    from laser.generation.vllm_engine import llm_kwargs

    gpu = llm_kwargs("m", gpu=True, gpu_memory_utilization=0.7, tensor_parallel_size=4, enable_prefix_caching=False)
    assert gpu["dtype"] == "bfloat16" and gpu["gpu_memory_utilization"] == 0.7 and gpu["tensor_parallel_size"] == 4
    assert gpu["enable_prefix_caching"] is False and gpu["enforce_eager"] is False
    assert "kv_cache_memory_bytes" not in gpu and "enable_chunked_prefill" not in gpu
    cpu = llm_kwargs("m", gpu=False, kv_cache_memory_bytes=32 << 20, max_model_len=256)
    assert cpu["dtype"] == "float32" and cpu["kv_cache_memory_bytes"] == 32 << 20 and cpu["max_model_len"] == 256
    assert cpu["enable_chunked_prefill"] is False and cpu["enforce_eager"] is True
    assert "gpu_memory_utilization" not in cpu
    assert llm_kwargs("m", gpu=True, dtype="float16")["dtype"] == "float16"


def test_chat_templates_are_applied_when_the_tokenizer_has_one(world, tmp_path, prompts):
    import shutil

    assets, _ = world
    model_dir = tmp_path / "chat-policy"
    shutil.copytree(assets.policy, model_dir)
    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.chat_template = "{{ bos_token }}{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}{% endfor %}"
    tok.save_pretrained(model_dir)
    engine = HFEngine(model_dir)
    assert engine.format_prompt("Q: hi? A:") == "<s>[user] Q: hi? A:"
    ids, _ = engine.encode(["Q: hi? A:"], 8)
    assert ids[0][0] == tok.bos_token_id and ids[0].count(tok.bos_token_id) == 1  # the template's BOS only
    assert len(engine.greedy(prompts[:2], max_new_tokens=4).samples) == 2
    plain = HFEngine(model_dir, chat_template="never")
    assert plain.format_prompt("Q: hi? A:") == "Q: hi? A:"
    with pytest.raises(ValueError, match="chat_template"):
        HFEngine(model_dir, chat_template="always")


def test_odd_prompts_never_hang(vllm_engine, hf_engine):
    odd = ["", "日本語だけ", "Q: " + "\n" * 40 + "A:"]
    for engine in (vllm_engine, hf_engine):
        out = engine.sample(odd, n=2, max_new_tokens=6, seed=0)
        assert len(out) == 3 and all(1 <= sum(s.count for s in g) == 2 for g in out.samples)


def _device_bytes(model) -> int:
    """Bytes of the model's parameters that hold memory (not on the meta device)."""
    return sum(p.numel() * p.element_size() for p in model.parameters() if p.device.type != "meta")


def test_the_transformers_engine_sleeps_and_wakes_with_the_trained_weights(world, prompts, tmp_path):
    """Sleep level 2 drops the engine's weights (its memory is free for the update) and the sync after the update
    wakes it with the trained ones: it then generates exactly what an engine that never slept generates. Level 1
    keeps the weights on the host and generating wakes it."""
    assets, suite = world
    awake = HFEngine(assets.policy, batch_size=16)
    sleeper = HFEngine(assets.policy, batch_size=16, sleep=2)
    assert sleeper.sleep_level == 2 and sleeper.sleep() >= 0 and sleeper.asleep == 2
    assert _device_bytes(sleeper.model) == 0 < _device_bytes(awake.model)
    with pytest.raises(GenerationError, match="sleep level 2.*sync_weights"):
        sleeper.greedy(prompts[:2], max_new_tokens=4)
    model = _dpo_step(assets, suite, tmp_path)
    sleeper.sync_weights(model)
    awake.sync_weights(model)
    assert sleeper.asleep == 0 and sleeper.stats.sleeps == 1 and sleeper.stats.wake_s > 0
    a, b = (e.greedy(prompts, max_new_tokens=10, logprobs=True) for e in (awake, sleeper))
    assert [g[0].token_ids for g in a.samples] == [g[0].token_ids for g in b.samples]
    np.testing.assert_allclose([g[0].cumulative_logprob for g in b.samples],
                               [g[0].cumulative_logprob for g in a.samples], atol=1e-5)
    light = HFEngine(assets.policy, batch_size=16, sleep=1)
    light.sync_weights(model)
    light.sleep()
    assert light.asleep == 1 and all(p.device.type == "cpu" for p in light.model.parameters())
    c = light.greedy(prompts, max_new_tokens=10)  # generating wakes a level-1 sleeper with the weights it kept
    assert light.asleep == 0 and [g[0].token_ids for g in c.samples] == [g[0].token_ids for g in a.samples]
    assert HFEngine(assets.policy).sleep() == 0.0  # sleep 0: nothing to do


def test_vllm_sleep_is_refused_by_name_where_vllm_cannot_sleep(world):
    from vllm.platforms import current_platform

    from laser.config import ConfigError

    if current_platform.is_sleep_mode_available():
        pytest.skip("vLLM sleeps on this machine: test_vllm_sleeps_around_an_update_and_serves_the_trained_weights")
    assets, _ = world
    with pytest.raises(ConfigError, match="engine.sleep: 2, but vLLM has no sleep mode on this machine.*engine: hf"):
        make_engine(assets.policy, EngineConfig(engine="vllm", max_model_len=128, sleep=2))


def _vllm_sleeps() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_sleep_mode_available()


@pytest.mark.skipif(not _vllm_sleeps(), reason="vLLM has no sleep mode on CPU (its CPU worker ignores sleep and "
                                               "wake_up, and enable_sleep_mode is refused): this runs where CUDA is")
@pytest.mark.parametrize("level", [1, 2])
def test_vllm_sleeps_around_an_update_and_serves_the_trained_weights(world, prompts, tmp_path, level):
    assets, suite = world
    engine = make_engine(assets.policy, EngineConfig(engine="vllm", max_model_len=128, sleep=level,
                                                     gpu_memory_utilization=0.2))
    try:
        free_before = torch.cuda.mem_get_info()[0]
        engine.sleep()
        assert torch.cuda.mem_get_info()[0] > free_before  # the engine's memory is free for the update
        model = _dpo_step(assets, suite, tmp_path).to("cuda")
        engine.sync_weights(model)
        got = engine.greedy(prompts[:6], max_new_tokens=8, logprobs=True)
        ids, _ = engine.encode(prompts[:6], 8)
        for p, g in zip(ids, got.samples, strict=True):
            assert g[0].cumulative_logprob == pytest.approx(
                completion_logprobs(model.float(), engine.tokenizer, p, g[0].token_ids), abs=5e-2)
    finally:
        engine.close()


def test_weights_synced_through_files_match_weights_handed_over(world, vllm_engine, prompts, tmp_path):
    """`weight_sync: files` (what a tensor-parallel engine, whose workers are other processes, uses) serves the
    same weights as the in-process hand-over."""
    assets, suite = world
    model = _dpo_step(assets, suite, tmp_path)
    vllm_engine.sync_weights(model)
    handed = vllm_engine.greedy(prompts, max_new_tokens=10, logprobs=True)
    vllm_engine.sync_weights(AutoModelForCausalLM.from_pretrained(assets.policy))
    vllm_engine.weight_sync = "files"
    try:
        vllm_engine.sync_weights(model)
        filed = vllm_engine.greedy(prompts, max_new_tokens=10, logprobs=True)
    finally:
        vllm_engine.weight_sync = "tensors"
        vllm_engine.sync_weights(AutoModelForCausalLM.from_pretrained(assets.policy))
    assert [g[0].token_ids for g in filed.samples] == [g[0].token_ids for g in handed.samples]
    np.testing.assert_allclose([g[0].cumulative_logprob for g in filed.samples],
                               [g[0].cumulative_logprob for g in handed.samples], atol=1e-6)
