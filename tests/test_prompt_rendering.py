"""One prompt rendering for every stage: with a chat template, sampling, contexts, the DPO pairs TRL trains on
and the validation metric see the same prompt token ids (the embedded character tokenizer given a template)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from laser.generation import ContextConfig, make_embedder
from laser.generation.hf_engine import HFEngine
from laser.training.dpo import DPOSettings, DPOStep
from laser.training.feedback import answer_token_logprobs

# A Llama-3-like template: the assistant header is part of the assistant turn, so the prompt rendered with the
# generation prompt is a prefix of the prompt rendered with its answer (what TRL's DPO relies on).
TEMPLATE = ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}[user] {{ m['content'] }}\n"
            "{% else %}[assistant]{{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}"
            "{% if add_generation_prompt %}[assistant]{% endif %}")


@pytest.fixture(scope="module")
def chat_policy(quick_world, tmp_path_factory):
    assets, _ = quick_world
    model_dir = tmp_path_factory.mktemp("chat") / "policy"
    shutil.copytree(assets.policy, model_dir)
    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.chat_template = TEMPLATE
    tok.save_pretrained(model_dir)
    return model_dir, assets.suite()


def _trl_tokenized(step: DPOStep, rows: list[dict], tmp_path) -> dict:
    """What TRL's DPOTrainer itself makes of the step's rows (its own tokenization, not a re-implementation)."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    args = DPOConfig(output_dir=str(tmp_path / "trl"), per_device_train_batch_size=2, report_to=[],
                     use_cpu=True, save_strategy="no", disable_tqdm=True)
    trainer = DPOTrainer(model=step.model, args=args,
                         train_dataset=Dataset.from_list(step.dataset_rows(rows)), processing_class=step.tokenizer)
    return trainer.train_dataset[0]


@pytest.mark.parametrize("template", ["auto", "never"])
def test_sampling_contexts_pairs_and_the_validation_metric_see_the_same_prompt(chat_policy, tmp_path, template):
    model_dir, suite = chat_policy
    engine = HFEngine(model_dir, chat_template=template)
    renderer = engine.renderer
    assert renderer.use_chat_template == (template == "auto")
    tok, model = engine.tokenizer, AutoModelForCausalLM.from_pretrained(model_dir)
    ex = suite.validation[0]
    sampled_ids = engine.encode([ex.prompt], 8)[0][0]
    assert renderer.ids(ex.prompt) == sampled_ids and sampled_ids.count(tok.bos_token_id) == 1
    if template == "auto":
        assert tok.decode(sampled_ids).endswith("[assistant]") and "[user] " + ex.prompt in tok.decode(sampled_ids)

    # The DPO pair: TRL tokenizes the prompt to the sampled ids, and the chosen answer right after it.
    step = DPOStep(model, tok, DPOSettings(batch_size=2), tmp_path / "dpo", renderer=renderer)
    chosen, rejected = " " + ex.target(), " " + ex.target() + "x"
    row = _trl_tokenized(step, [{"prompt": ex.prompt, "chosen": chosen, "rejected": rejected}], tmp_path)
    assert row["prompt_ids"] == sampled_ids
    answer_ids = tok(chosen, add_special_tokens=False)["input_ids"]
    assert row["chosen_ids"][:len(answer_ids)] == answer_ids and row["chosen_ids"][-1] == tok.eos_token_id

    # The validation metric: the gold answer's log-probabilities after exactly the sampled prompt.
    got = answer_token_logprobs(model, tok, [ex.prompt], [ex.target()], renderer=renderer)[0]
    gold = tok(" " + ex.target() + tok.eos_token, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logp = model(torch.tensor([sampled_ids + gold])).logits[0].log_softmax(-1)
    direct = torch.stack([logp[len(sampled_ids) + i - 1, t] for i, t in enumerate(gold)])
    torch.testing.assert_close(got, direct, rtol=1e-5, atol=1e-5)

    # The router's context: the policy's states over the sampled prompt's tokens.
    embedder = make_embedder(model, tok, ContextConfig(pooling="mean"), engine=engine)
    with torch.no_grad():
        h = model(torch.tensor([sampled_ids]), output_hidden_states=True).hidden_states[-1][0].mean(0).numpy()
    np.testing.assert_allclose(embedder.embed([ex.prompt])[0], h / np.linalg.norm(h), rtol=1e-4, atol=1e-5)
