"""Before / after one prompt rendering: does the policy train and get rewarded on the prompt it sampled from?

    python benchmarks/lab/prompt_rendering.py [--examples 100] [--cache-dir DIR]

The quick world's policy is given a chat template (a Llama-3-like one, on its character tokenizer). For
validation examples, it compares the token ids the engine samples from with (a) the prompt ids TRL's
DPOTrainer tokenizes the round's pairs to and (b) the prompt ids of the validation metric (the gold
answers' log-likelihood), the way this code did before (raw prompts: plain DPO rows, plain tokenization)
and now (`PromptRenderer`: conversational DPO rows, rendered prompts). It also prints the validation
metric and the DPO + NLL loss of one round of pairs both ways: what the router and the policy were told.
Measured: `benchmarks/results/2026-12-02-prompt-rendering.md`.
"""

from __future__ import annotations

import argparse
import random
import shutil
import tempfile
from pathlib import Path


def main() -> None:
    import numpy as np
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from laser.assets import build_assets, quick_recipe
    from laser.assets.pairs import correctness_pairs
    from laser.generation import PromptRenderer
    from laser.generation.hf_engine import HFEngine
    from laser.training.feedback import gold_loglik_per_example

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=100)
    ap.add_argument("--cache-dir", default=None, help="assets cache (default: $LASER_ASSETS_DIR or ~/.cache)")
    args = ap.parse_args()

    assets = build_assets(quick_recipe(), cache_dir=args.cache_dir, progress=False)
    suite = assets.suite()
    work = Path(tempfile.mkdtemp(prefix="laser-render-"))
    model_dir = work / "policy"
    shutil.copytree(assets.policy, model_dir)
    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.chat_template = ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}[user] "
                         "{{ m['content'] }}\n{% else %}[assistant]{{ m['content'] }}{{ eos_token }}{% endif %}"
                         "{% endfor %}{% if add_generation_prompt %}[assistant]{% endif %}")
    tok.save_pretrained(model_dir)
    engine = HFEngine(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    val = suite.validation[:args.examples]
    sampled = engine.encode([ex.prompt for ex in val], 16)[0]
    pairs = correctness_pairs(val, random.Random(0))
    print(f"quick world policy with a chat template; {len(val)} validation examples, {len(pairs)} pairs\n")
    print("| | DPO prompt ids = sampled ids | metric prompt ids = sampled ids | gold log-lik (metric) | "
          "DPO + NLL loss, first step |")
    print("|---|---|---|---|---|")
    for name, renderer in (("before (raw prompts)", PromptRenderer(tok, "never")), ("after (PromptRenderer)",
                                                                                      engine.renderer)):
        rows = [renderer.dpo_row(r["prompt"], r["chosen"], r["rejected"]) for r in pairs]
        dpo_args = DPOConfig(output_dir=str(work / "trl"), per_device_train_batch_size=len(rows), report_to=[],
                             use_cpu=True, save_strategy="no", disable_tqdm=True, max_steps=1,
                             loss_type=["sigmoid", "sft"], loss_weights=[1.0, 1.0], learning_rate=1e-12,
                             logging_strategy="no")
        trainer = DPOTrainer(model=AutoModelForCausalLM.from_pretrained(model_dir), args=dpo_args,
                             train_dataset=Dataset.from_list(rows), processing_class=tok)
        trl_prompts = [trainer.train_dataset[i]["prompt_ids"] for i in range(len(rows))]
        by_prompt = {ex.prompt: ids for ex, ids in zip(val, sampled, strict=True)}
        same_dpo = np.mean([t == by_prompt[r["prompt"]] for t, r in zip(trl_prompts, pairs, strict=True)])
        same_metric = np.mean([renderer.ids(ex.prompt) == ids for ex, ids in zip(val, sampled, strict=True)])
        metric = gold_loglik_per_example(model, tok, val, renderer=renderer).mean()
        loss = trainer.train().training_loss
        print(f"| {name} | {same_dpo:.0%} | {same_metric:.0%} | {metric:.3f} | {loss:.3f} |")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
