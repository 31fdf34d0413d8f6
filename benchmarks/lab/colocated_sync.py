"""Does `laser.integrations.trl.colocate_vllm` keep TRL's colocated vLLM engine on the weights GRPO trains, for a full
model and for a LoRA (PEFT) one? A few GRPO steps with the routed reward on the quick world (CPU), then the engine's
greedy answers against transformers' on held-out prompts, before and after the steps.

    python benchmarks/lab/colocated_sync.py            # full fine-tuning and LoRA, about a minute each
    python benchmarks/lab/colocated_sync.py --only lora
"""

from __future__ import annotations

import argparse
import os
import sys


def run(lora: bool, steps: int, lr: float, prompts_n: int) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer
    from vllm import SamplingParams

    from laser.assets import build_assets, quick_recipe
    from laser.generation import make_embedder
    from laser.generation.hf_engine import HFEngine
    from laser.integrations.trl import RoutedReward, colocate_vllm
    from laser.rewards import load_reward_model
    from laser.strategies import make_strategy

    assets = build_assets(quick_recipe(), progress=False)
    suite = assets.suite()
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(assets.policy)
    tok = AutoTokenizer.from_pretrained(assets.policy)
    lineup, _ = assets.lineup()
    rms = {n: load_reward_model(k, str(p)) for n, (k, p) in lineup.items()}
    router = make_strategy("laser", list(rms), dim=model.config.hidden_size, seed=0, center=True,
                           normalize_feedback=False)
    reward = RoutedReward(rms, router, contexts=make_embedder(model, tok), domain_column="domain")
    train = Dataset.from_list([{"prompt": ex.prompt, "domain": ex.domain} for ex in suite.train[::25][:16]])
    args = GRPOConfig(output_dir=f"runs/lab-colocated-{'lora' if lora else 'full'}", per_device_train_batch_size=8,
                      num_generations=4, max_completion_length=8, max_steps=steps, save_strategy="no",
                      logging_steps=1, report_to=[], use_cpu=True, learning_rate=lr, seed=0, temperature=1.2,
                      use_vllm=True, vllm_mode="colocate")
    peft = None
    if lora:
        from peft import LoraConfig

        peft = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"])
    trainer = GRPOTrainer(model=model, reward_funcs=[reward], args=args, train_dataset=train, processing_class=tok,
                          peft_config=peft)
    colocate_vllm(trainer)
    prompts = [ex.prompt for ex in suite.validation[:prompts_n]]
    llm = trainer.vllm_generation.llm

    def engine() -> list[str]:
        return [o.outputs[0].text for o in llm.generate(prompts, SamplingParams(max_tokens=8, temperature=0),
                                                        use_tqdm=False)]

    def hf(m) -> list[str]:
        m.eval()
        g = HFEngine.wrap(m, tok).greedy(prompts, max_new_tokens=8)
        return [g.texts(j)[0] for j in range(len(prompts))]

    before, hf_before = engine(), hf(trainer.model)
    trainer.train()
    trainer.vllm_generation.sync_weights()
    after = engine()
    hf_after = hf(trainer.model)  # what the trainer computes (a PEFT model: with its adapters, unmerged)
    ratios = [h["sampling/importance_sampling_ratio/mean"] for h in trainer.state.log_history if "loss" in h]
    llm.llm_engine.engine_core.shutdown()
    return {"equal before": sum(a == b for a, b in zip(before, hf_before, strict=True)),
            "changed by training": sum(a != b for a, b in zip(before, after, strict=True)),
            "equal after": sum(a == b for a, b in zip(after, hf_after, strict=True)),
            "importance ratio": (round(min(ratios), 3), round(max(ratios), 3))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["full", "lora"], default=None)
    ap.add_argument("--prompts", type=int, default=40)
    args = ap.parse_args(argv)
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB: TRL hands vLLM a memory fraction, unusable on CPU
    kinds = [args.only] if args.only else ["full", "lora"]
    rows = []
    for kind in kinds:  # one engine per process: each kind in its own subprocess
        import json
        import subprocess

        out = subprocess.run([sys.executable, __file__, "--_one", kind, str(args.prompts)], capture_output=True,
                             text=True)
        line = [x for x in out.stdout.splitlines() if x.startswith("{")]
        if out.returncode or not line:
            print(out.stderr[-3000:], file=sys.stderr)
            return 1
        rows.append((kind, json.loads(line[-1])))
    print(f"| policy | engine == transformers before (of {args.prompts}) | answers training changed | "
          "engine == trained model after | TRL importance ratio (min, max) |\n|---|---|---|---|---|")
    for kind, r in rows:
        print(f"| {kind} | {r['equal before']} | {r['changed by training']} | {r['equal after']} | "
              f"{r['importance ratio']} |")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--_one":
        import json

        kind, n = sys.argv[2], int(sys.argv[3])
        print(json.dumps(run(kind == "lora", steps=4, lr=3e-2 if kind == "lora" else 3e-3, prompts_n=n)))
        sys.exit(0)
    sys.exit(main())
