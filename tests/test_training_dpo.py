"""The TRL DPO step (iterative reference, persistent optimizer) and the validation-gain metric, for real."""

from __future__ import annotations

import random

import pytest
import torch
from pydantic import ValidationError
from transformers import AutoModelForCausalLM, AutoTokenizer

from laser.assets.pairs import correctness_pairs
from laser.tasks.mistakes import wrong_answer
from laser.training.dpo import DPOSettings, DPOStep
from laser.training.feedback import gold_loglik, gold_margin_per_example


def test_gold_loglik_matches_a_direct_forward_pass(world):
    assets, suite = world
    model = AutoModelForCausalLM.from_pretrained(assets.policy)
    tok = AutoTokenizer.from_pretrained(assets.policy)
    ex = suite.validation[3]
    ids = tok(ex.prompt + " " + ex.target() + tok.eos_token)["input_ids"]
    n_prompt = len(tok(ex.prompt)["input_ids"])
    with torch.no_grad():
        logp = model(torch.tensor([ids])).logits[0].log_softmax(-1)
    direct = float(torch.stack([logp[i - 1, ids[i]] for i in range(n_prompt, len(ids))]).mean())
    assert gold_loglik(model, tok, [ex]) == pytest.approx(direct, abs=1e-5)
    batch = suite.validation[:40]
    assert gold_loglik(model, tok, batch, batch_size=7) == pytest.approx(gold_loglik(model, tok, batch), abs=1e-5)
    with pytest.raises(ValueError, match="at least one"):
        gold_loglik(model, tok, [])


def test_gold_margin_is_the_gold_minus_the_wrong_answers_summed_log_likelihood(world, tmp_path):
    assets, suite = world
    model = AutoModelForCausalLM.from_pretrained(assets.policy)
    tok = AutoTokenizer.from_pretrained(assets.policy)

    def summed(prompt: str, answer: str) -> float:
        ids = tok(prompt + " " + answer + tok.eos_token)["input_ids"]
        n_prompt = len(tok(prompt)["input_ids"])
        with torch.no_grad():
            logp = model(torch.tensor([ids])).logits[0].log_softmax(-1)
        return float(sum(logp[i - 1, ids[i]] for i in range(n_prompt, len(ids))))

    val = suite.validation[:48]
    rng = random.Random(0)
    wrong = [wrong_answer(ex, rng) for ex in val]
    margin = gold_margin_per_example(model, tok, val, wrong, batch_size=7)
    ex, w = val[5], wrong[5]
    assert margin[5] == pytest.approx(summed(ex.prompt, ex.target()) - summed(ex.prompt, w), abs=1e-4)
    with pytest.raises(ValueError, match="one wrong answer per example"):
        gold_margin_per_example(model, tok, val, wrong[:-1])
    # DPO on (right, wrong) pairs of other prompts widens the held-out margin: the metric sees learning.
    step = DPOStep(model, tok, DPOSettings(batch_size=16, learning_rate=1e-4), tmp_path, seed=0)
    step.start_iteration()
    step.update(correctness_pairs(suite.train[:96], random.Random(0)))
    assert gold_margin_per_example(model, tok, val, wrong).mean() > margin.mean() + 0.05


def test_dpo_updates_move_the_policy_towards_the_chosen_answers(world, tmp_path):
    assets, suite = world
    model = AutoModelForCausalLM.from_pretrained(assets.policy)
    tok = AutoTokenizer.from_pretrained(assets.policy)
    val = suite.validation[:64]
    before = gold_loglik(model, tok, val)
    rows = correctness_pairs(suite.train[:96], random.Random(0))
    step = DPOStep(model, tok, DPOSettings(batch_size=16, learning_rate=1e-4), tmp_path, seed=0)
    step.start_iteration()
    ref_before = {k: v.clone() for k, v in step.ref_model.state_dict().items()}
    metrics = [step.update(rows) for _ in range(3)]
    assert [m["steps"] for m in metrics] == [6, 6, 6] and all(m["pairs"] == 96 for m in metrics)
    assert metrics[-1]["loss"] < metrics[0]["loss"]
    after = gold_loglik(model, tok, val)
    assert after > before + 0.01, (before, after)
    # The reference stays the policy of the iteration's start; the optimizer carried its moments over.
    assert all(torch.equal(v, step.ref_model.state_dict()[k]) for k, v in ref_before.items())
    assert not torch.equal(ref_before["model.embed_tokens.weight"], model.state_dict()["model.embed_tokens.weight"])
    assert max(s["step"] for s in step.optimizer.state_dict()["state"].values()) == 18
    # A new iteration takes the updated policy as its reference.
    step.start_iteration()
    assert torch.equal(step.ref_model.state_dict()["lm_head.weight"], model.state_dict()["lm_head.weight"])
    assert step.update([]) == {"pairs": 0}


def test_settings_are_checked():
    with pytest.raises(ValidationError, match="loss_weights"):
        DPOSettings(loss_type=["sigmoid"], loss_weights=[1.0, 1.0])
    with pytest.raises(ValidationError, match="beta"):
        DPOSettings(beta=0)
    with pytest.raises(ValidationError, match="extra"):
        DPOSettings(lr=1.0)


def test_batch_size_is_the_global_batch_split_across_processes(world, tmp_path, monkeypatch):
    import laser.training.dpo as dpo

    assets, _ = world
    tok = AutoTokenizer.from_pretrained(assets.policy)
    model = AutoModelForCausalLM.from_pretrained(assets.policy)
    assert DPOStep(model, tok, DPOSettings(batch_size=8), tmp_path).per_device_batch_size == 8
    monkeypatch.setattr(dpo, "world", lambda: (1, 2))
    assert DPOStep(model, tok, DPOSettings(batch_size=8), tmp_path).per_device_batch_size == 4
    monkeypatch.setattr(dpo, "world", lambda: (0, 3))
    from laser.config import ConfigError

    with pytest.raises(ConfigError, match=r"dpo.batch_size \(8\) must be a multiple of the number of processes \(3\)"):
        DPOStep(model, tok, DPOSettings(batch_size=8), tmp_path)


@pytest.mark.parametrize("flag, wrapper", [("ACCELERATE_USE_FSDP", "FSDP"), ("ACCELERATE_USE_DEEPSPEED", "DeepSpeed")])
def test_fsdp_and_deepspeed_launches_are_refused_with_what_to_use_instead(world, tmp_path, monkeypatch, flag, wrapper):
    from laser.config import ConfigError

    assets, _ = world
    monkeypatch.setenv(flag, "true")  # what `accelerate launch` sets with such a config
    with pytest.raises(ConfigError, match=rf"{wrapper} is not supported.*Use DDP.*configs/accelerate/ddp.yaml"):
        DPOStep(AutoModelForCausalLM.from_pretrained(assets.policy), AutoTokenizer.from_pretrained(assets.policy),
                DPOSettings(), tmp_path)


def _lora(assets, r: int = 4):
    from laser.config import LoraSettings
    from laser.training.dpo import apply_lora

    torch.manual_seed(0)
    return apply_lora(AutoModelForCausalLM.from_pretrained(assets.policy), LoraSettings(r=r, alpha=2 * r, dropout=0.0))


def _alive_parameters() -> int:
    """Elements of every torch parameter alive in this process, after a full collection."""
    import gc

    gc.collect()
    return sum(p.numel() for p in gc.get_objects() if type(p) is torch.nn.Parameter)


def test_a_lora_reference_is_the_iterations_adapters_on_the_same_base_not_a_copy(world, tmp_path):
    """With LoRA the DPO reference costs a copy of the adapters, not of the model, and computes what a merged copy
    of the iteration's policy computes: two updates with it move the adapters exactly as with that copy."""
    import copy

    from laser.training.dpo import REF_ADAPTER

    assets, suite = world
    tok = AutoTokenizer.from_pretrained(assets.policy)
    rows = correctness_pairs(suite.train[:32], random.Random(0))
    model = _lora(assets)
    base_params = sum(p.numel() for p in model.get_base_model().parameters() if not p.requires_grad)
    step = DPOStep(model, tok, DPOSettings(batch_size=16, learning_rate=1e-3), tmp_path / "a", seed=0)
    before = _alive_parameters()
    step.start_iteration()
    assert step.ref_adapter is None and step.reference_parameters == 0  # zero adapters: the base is the policy
    step.update(rows)  # the first iteration trains against the base with its adapters disabled
    assert _alive_parameters() == before and REF_ADAPTER not in model.peft_config
    step.start_iteration()  # the second iteration's reference: the trained adapters, copied
    adapters = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert step.reference_parameters == adapters < base_params / 20
    assert _alive_parameters() == before  # the copy is plain tensors: no module, no model copy
    # The same update against a merged copy of the iteration's policy (what full fine-tuning would hold).
    twin = copy.deepcopy(model)
    merged = copy.deepcopy(model).merge_and_unload().eval()
    other = DPOStep(twin, tok, DPOSettings(batch_size=16, learning_rate=1e-3), tmp_path / "b", seed=0)
    other.optimizer.load_state_dict(copy.deepcopy(step.optimizer.state_dict()))
    other.updates, other.has_reference, other.ref_model, other.lora = step.updates, True, merged, False
    for _ in range(2):
        m_adapter, m_copy = step.update(rows), other.update(rows)
        assert m_adapter["loss"] == pytest.approx(m_copy["loss"], abs=1e-5)
    mine = dict(model.named_parameters())
    moved = 0.0
    for k, p in twin.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(mine[k], p, atol=1e-5, rtol=0)
            moved = max(moved, float((mine[k].detach() - step.ref_adapter[k]).abs().max()))
    assert moved > 1e-4  # the adapters did move away from the reference during those updates


def test_a_lora_dpo_state_holds_the_reference_adapter_and_round_trips(world, tmp_path):
    assets, suite = world
    tok = AutoTokenizer.from_pretrained(assets.policy)
    rows = correctness_pairs(suite.train[:32], random.Random(1))
    a = DPOStep(_lora(assets), tok, DPOSettings(batch_size=16, learning_rate=1e-3), tmp_path / "a")
    a.update(rows)
    a.start_iteration()
    a.update(rows)
    state = a.state_dict()
    assert state["reference"] == "adapter" and set(state["ref_adapter"]) == {
        k for k, p in a.model.named_parameters() if p.requires_grad}
    b = DPOStep(_lora(assets), tok, DPOSettings(batch_size=16, learning_rate=1e-3), tmp_path / "b")
    b.model.load_state_dict(a.model.state_dict())
    b.load_state_dict(state)
    a.update(rows)
    b.update(rows)
    for k, v in a.model.state_dict().items():
        torch.testing.assert_close(v, b.model.state_dict()[k], atol=1e-6, rtol=0)


def test_a_full_fine_tuning_reference_is_saved_apart_and_restored(world, tmp_path):
    assets, suite = world
    tok = AutoTokenizer.from_pretrained(assets.policy)
    rows = correctness_pairs(suite.train[:32], random.Random(1))
    a = DPOStep(AutoModelForCausalLM.from_pretrained(assets.policy), tok, DPOSettings(batch_size=16), tmp_path / "a")
    a.update(rows)
    a.start_iteration()
    a.update(rows)
    state = a.state_dict()
    assert state["reference"] == "copy" and state["ref_adapter"] is None  # no weights in the state itself
    a.save_reference(tmp_path / "ref")
    b = DPOStep(AutoModelForCausalLM.from_pretrained(assets.policy), tok, DPOSettings(batch_size=16), tmp_path / "b")
    b.model.load_state_dict(a.model.state_dict())
    b.load_state_dict(state, reference=tmp_path / "ref")
    for k, v in a.ref_model.state_dict().items():
        assert torch.equal(v, b.ref_model.state_dict()[k])
    a.update(rows)
    b.update(rows)
    for k, v in a.model.state_dict().items():
        torch.testing.assert_close(v, b.model.state_dict()[k], atol=1e-6, rtol=0)


def test_micro_batches_accumulate_to_the_same_update(world, tmp_path):
    """dpo.micro_batch_size runs each optimizer step's pairs a few at a time (less activation memory): with DPO's
    sigmoid loss, a mean over pairs, the step is the one taken on the whole batch at once."""
    assets, suite = world
    tok = AutoTokenizer.from_pretrained(assets.policy)
    rows = correctness_pairs(suite.train[:16], random.Random(2))[:16]
    models = []
    for micro in (None, 4):
        settings = DPOSettings(batch_size=8, micro_batch_size=micro, loss_type=["sigmoid"], loss_weights=[1.0],
                               learning_rate=1e-3)
        step = DPOStep(AutoModelForCausalLM.from_pretrained(assets.policy), tok, settings, tmp_path / str(micro))
        out = step.update(rows)
        assert out["steps"] == len(rows) // 8
        models.append(step.model.state_dict())
    moved = max(float((v - AutoModelForCausalLM.from_pretrained(assets.policy).state_dict()[k]).abs().max())
                for k, v in models[0].items())
    assert moved > 1e-4
    for k, v in models[0].items():
        torch.testing.assert_close(v, models[1][k], atol=1e-6, rtol=0)
    from laser.config import ConfigError

    with pytest.raises(ConfigError, match=r"dpo.micro_batch_size \(3\) must divide each process's share"):
        DPOStep(AutoModelForCausalLM.from_pretrained(assets.policy), tok, DPOSettings(batch_size=8, micro_batch_size=3),
                tmp_path)


def test_the_8bit_optimizer_is_bitsandbytes_or_a_clear_error(world, tmp_path):
    assets, _ = world
    tok = AutoTokenizer.from_pretrained(assets.policy)
    settings = DPOSettings(optim="adamw_8bit")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        from laser.config import ConfigError

        with pytest.raises(ConfigError, match="dpo.optim: adamw_8bit needs bitsandbytes.*adamw_torch"):
            DPOStep(AutoModelForCausalLM.from_pretrained(assets.policy), tok, settings, tmp_path)
        return
    step = DPOStep(AutoModelForCausalLM.from_pretrained(assets.policy), tok, settings, tmp_path)
    assert type(step.optimizer).__name__ == "AdamW8bit"
