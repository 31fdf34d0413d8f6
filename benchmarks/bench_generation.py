"""Generation throughput: VLLMEngine vs HFEngine, on the tiny policy and on a larger random Llama.

For n in {1, 8, 32} samples per prompt (temperature 1, stops at end of sequence), generated tokens per
second of each engine on the same prompts; then the time of `sync_weights` (in-place push of a
trainer's weights) against a full engine restart. Prints a table and, with --json, writes it.

The larger model is a ~60M-parameter Llama with random weights, built locally on the character
tokenizer (speed does not depend on what the weights know; it rarely emits end of sequence, so its
samples run to max_new_tokens).

    python benchmarks/bench_generation.py [--quick] [--json benchmarks/results/generation.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from laser.assets import AssetRecipe, build_assets, quick_recipe
from laser.assets.tokenizer import build_char_tokenizer
from laser.generation import EngineConfig, make_engine


def build_large(path: Path, hidden: int, layers: int) -> int:
    """A random Llama on the character tokenizer saved at `path`; returns its parameter count."""
    tok = build_char_tokenizer(model_max_length=256)
    heads = hidden // 64
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                      num_key_value_heads=heads, intermediate_size=3 * hidden, max_position_embeddings=256,
                      tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return sum(p.numel() for p in model.parameters())


def lora_sync_seconds(engine, path: Path) -> float | None:
    """Fastest of 3 `sync_weights` of a LoRA-wrapped copy (r=16 on q/v, as the paper): merge, copy, unmerge."""
    try:
        import peft
    except ImportError:
        return None
    lora = peft.get_peft_model(AutoModelForCausalLM.from_pretrained(path),
                               peft.LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "v_proj"]))
    return min(engine.sync_weights(lora) for _ in range(3))


def throughput(engine, prompts: list[str], n: int, max_new_tokens: int) -> tuple[float, int]:
    """(generated tokens per second, tokens) of one sampling call, after one warm-up call."""
    engine.sample(prompts[:2], n=n, max_new_tokens=4, seed=0)
    before = engine.stats.generated_tokens
    t0 = time.perf_counter()
    engine.sample(prompts, n=n, temperature=1.0, max_new_tokens=max_new_tokens, seed=1)
    seconds = time.perf_counter() - t0
    tokens = engine.stats.generated_tokens - before
    return tokens / seconds, tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="reduced world, fewer prompts, smaller large model")
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    assets = build_assets(quick_recipe() if args.quick else AssetRecipe())
    suite = assets.suite()
    prompts = [ex.prompt for ex in suite.test[::max(1, len(suite.test) // args.prompts)]][:args.prompts]
    tmp = Path(tempfile.mkdtemp(prefix="laser-bench-gen-"))
    hidden, layers = (256, 4) if args.quick else (768, 8)
    large_params = build_large(tmp / "large", hidden, layers)
    small_params = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(assets.policy).parameters())
    models = {"tiny policy": (assets.policy, small_params, prompts, (1, 8, 32)),
              "large random": (tmp / "large", large_params, prompts[:max(2, len(prompts) // 4)], (1, 8, 32))}
    rows, syncs = [], []
    threads = torch.get_num_threads()
    for label, (path, params, ps, ns) in models.items():
        for kind in ("vllm", "hf"):
            torch.set_num_threads(threads)  # vLLM on CPU lowers torch's thread count for its own serving
            t0 = time.perf_counter()
            engine = make_engine(path, EngineConfig(engine=kind, max_model_len=128, kv_cache_mb=256))
            start_s = time.perf_counter() - t0
            for n in ns:
                tps, tokens = throughput(engine, ps, n, args.max_new_tokens)
                rows.append({"model": label, "params": params, "engine": kind, "n": n, "prompts": len(ps),
                             "tokens": tokens, "tokens_per_s": round(tps, 1), "threads": torch.get_num_threads()})
                print(f"{label:13s} {kind:4s} n={n:<3d} {tps:9.0f} tokens/s ({tokens} tokens, "
                      f"{torch.get_num_threads()} torch threads)", flush=True)
            trainer_model = AutoModelForCausalLM.from_pretrained(path)
            sync_s = min(engine.sync_weights(trainer_model) for _ in range(3))
            lora_s = lora_sync_seconds(engine, path)
            engine.close()
            del engine
            t0 = time.perf_counter()
            make_engine(path, EngineConfig(engine=kind, max_model_len=128, kv_cache_mb=256)).close()
            restart_s = time.perf_counter() - t0
            syncs.append({"model": label, "engine": kind, "start_s": round(start_s, 2), "sync_s": round(sync_s, 4),
                          "lora_sync_s": None if lora_s is None else round(lora_s, 4),
                          "restart_s": round(restart_s, 2), "restart_over_sync": round(restart_s / sync_s, 1)})

    print(f"\nGeneration on {platform.machine()} ({threads} threads), {args.max_new_tokens} new tokens "
          "max, temperature 1; tokens per second (vLLM / HF):\n")
    print("| model | params | n | prompts | vLLM tok/s | HF tok/s | vLLM / HF |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label in models:
        for n in models[label][3]:
            v = next(r for r in rows if r["model"] == label and r["engine"] == "vllm" and r["n"] == n)
            h = next(r for r in rows if r["model"] == label and r["engine"] == "hf" and r["n"] == n)
            print(f"| {label} | {v['params'] / 1e6:.2f}M | {n} | {v['prompts']} | {v['tokens_per_s']:.0f} | "
                  f"{h['tokens_per_s']:.0f} | {v['tokens_per_s'] / h['tokens_per_s']:.2f} |")
    print("\n| model | engine | start (s) | sync_weights (s) | sync, LoRA merged (s) | restart (s) | restart / sync |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in syncs:
        lora = "n/a" if r["lora_sync_s"] is None else f"{r['lora_sync_s']:.4f}"
        print(f"| {r['model']} | {r['engine']} | {r['start_s']:.1f} | {r['sync_s']:.4f} | {lora} | "
              f"{r['restart_s']:.1f} | {r['restart_over_sync']:.0f}x |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": platform.machine(), "threads": torch.get_num_threads(),
                                         "max_new_tokens": args.max_new_tokens, "throughput": rows,
                                         "weight_sync": syncs}, indent=1) + "\n")
        print(f"\nwrote {args.json}")


if __name__ == "__main__":  # vLLM may spawn worker processes that import this file
    main()
