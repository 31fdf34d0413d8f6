"""`laser plan`'s memory estimates against memory measured on the CPU, component by component.

    python benchmarks/plan_check.py [--json out.json]      # the quick world and a random Qwen2 0.5B (2 minutes)

Each measurement runs in a fresh process and reads its resident memory (RSS) before and its peak after (VmHWM,
reset just before, so that an earlier peak of the process does not count): the policy's weights once loaded;
one DPO update (full fine-tuning on the quick world's own pairs; LoRA and full fine-tuning on the 0.5B model),
whose peak holds the gradients with the activations, or with the optimizer state and the temporaries of the
first optimizer step; a vLLM engine's start (its weights and KV cache). The plan is made for the same shapes,
batch and token counts (`laser.plan`, on the host: float32, eager attention). Prints one row per component:
planned and measured MiB and their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

# Qwen2.5-0.5B's shape (494M parameters, tied embeddings, biased q/k/v), initialised at random.
HALF_B = dict(model_type="qwen2", hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
              num_attention_heads=14, num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True)


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_peak() -> None:
    """Forget this process's peak resident memory so far (Linux: /proc/self/clear_refs)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _peak() -> int:
    """This process's peak resident memory since the last `_reset_peak`."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))


def _model(spec: str):
    """(model, tokenizer) of `spec`: `quick` (the quick world's policy) or `half` (the random 0.5B Llama)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from laser.assets import build_assets, quick_recipe

    assets = build_assets(quick_recipe(), progress=False)
    tok = AutoTokenizer.from_pretrained(assets.policy)
    if spec == "quick":
        return AutoModelForCausalLM.from_pretrained(assets.policy), tok
    torch.manual_seed(0)
    shape = {k: v for k, v in HALF_B.items() if k != "model_type"}
    config = Qwen2Config(**shape, max_position_embeddings=512, pad_token_id=tok.pad_token_id,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    with torch.device("meta"):
        model = Qwen2ForCausalLM(config)
    model = model.to_empty(device="cpu")
    model.tie_weights()  # to_empty gives the tied head storage of its own: one tensor again
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
    return model, tok


def _rows(spec: str, pairs: int) -> list[dict]:
    import random

    from laser.assets import build_assets, quick_recipe
    from laser.assets.pairs import correctness_pairs

    suite = build_assets(quick_recipe(), progress=False).suite()
    rows = correctness_pairs(suite.train[:4 * pairs], random.Random(0))[:pairs]
    if spec == "half":  # longer answers: the activations of a 0.5B model, not its fixed costs, should show
        rows = [{**r, "chosen": r["chosen"] * 6, "rejected": r["rejected"] * 6} for r in rows]
    return rows


def measure(kind: str, spec: str, lora: bool, pairs: int) -> dict:
    """One measurement in this process: {"bytes": ..., and what the plan needs to match it}."""
    import torch

    torch.set_num_threads(max(1, torch.get_num_threads()))
    if kind == "engine":
        from laser.generation import EngineConfig, make_engine

        path = Path(os.environ.get("PLAN_CHECK_DIR", "runs/plan-check")) / spec
        # As in a run: the policy is loaded with transformers first (the engine's start does not pay for
        # transformers' imports), and vllm is imported.
        model, tok = _model(spec)
        if not (path / "config.json").exists():
            model.save_pretrained(path)
            tok.save_pretrained(path)
        import vllm  # noqa: F401

        before = _rss()
        _reset_peak()
        engine = make_engine(str(path), EngineConfig(engine="vllm", max_model_len=128, kv_cache_mb=64))
        out = {"bytes": _peak() - before, "kv_cache_mb": 64}
        engine.close()
        del model
        return out
    import transformers  # noqa: F401 - imported before the first reading: their memory is not the model's

    import laser.assets  # noqa: F401
    from laser.assets import build_assets, quick_recipe

    build_assets(quick_recipe(), progress=False).suite()
    warm, _ = _model("quick")  # the first load imports the model's code (hundreds of MB): not the weights' memory
    del warm
    before = _rss()
    model, tok = _model(spec)
    weights = _rss() - before
    if kind == "weights":
        return {"bytes": weights}
    from laser.config import DPOSettings, LoraSettings
    from laser.training.dpo import DPOStep, apply_lora

    if lora:
        model = apply_lora(model, LoraSettings(r=16, alpha=32, dropout=0.0))
    rows = _rows(spec, pairs)
    work = Path(os.environ.get("PLAN_CHECK_DIR", "runs/plan-check")) / "dpo"
    step = DPOStep(model, tok, DPOSettings(batch_size=pairs), work)
    step.start_iteration()
    prompt = max(len(tok(r["prompt"])["input_ids"]) for r in rows)
    completion = max(len(tok(r[k], add_special_tokens=False)["input_ids"]) + 1 for r in rows
                     for k in ("chosen", "rejected"))
    before = _rss()
    _reset_peak()
    step.update(rows)
    return {"bytes": _peak() - before, "prompt_tokens": prompt, "completion_tokens": completion}


def _child(kind: str, spec: str, lora: bool, pairs: int) -> dict:
    done = subprocess.run([sys.executable, __file__, "--measure", kind, spec, str(int(lora)), str(pairs)],
                          capture_output=True, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    if done.returncode:
        raise RuntimeError(f"measuring {kind} of {spec} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def planned(kind: str, spec: str, lora: bool, pairs: int, prompt_tokens: int = 16,
            completion_tokens: int = 8) -> int:
    """What `laser plan` puts down for the same component, on the host, in bytes."""
    from laser.assets import build_assets, quick_recipe
    from laser.config import load_config
    from laser.plan import Arch, Placement, _plan, read_arch

    assets = build_assets(quick_recipe(), progress=False)
    policy = read_arch(str(assets.policy)) if spec == "quick" else Arch.of("random Qwen2 0.5B", HALF_B)
    lora_set = ["dpo.lora={r: 16, alpha: 32}"] if lora else []
    config = load_config(None, [f"dpo.batch_size={max(pairs, 1)}", "engine.kv_cache_mb=64", *lora_set])
    result = _plan(config, Placement(device="cpu", prompt_tokens=prompt_tokens, completion_tokens=completion_tokens),
                   policy, {})
    c = result.ranks[0].components
    if kind == "weights":
        return c["policy weights"]
    if kind == "engine":
        return c["engine (weights, KV cache)"]
    # the first update: gradients with the activations, or with the optimizer state its step allocates
    return c["gradients (update)"] + max(c["activations (update)"], c["optimizer state"] + c["optimizer step (update)"])


# The quick world's weights (0.4 MiB) are below what resident memory resolves: its weights are checked on the 0.5B.
QUICK = [("update", "quick", False, 8), ("engine", "quick", False, 0)]
HALF = [("weights", "half", False, 4), ("update", "half", True, 4), ("update", "half", False, 4),
        ("engine", "half", False, 0)]
CHECKS = QUICK + HALF


def compare(checks=CHECKS) -> list[dict]:
    """One row per check: planned and measured bytes and their ratio."""
    rows = []
    for kind, spec, lora, pairs in checks:
        got = _child(kind, spec, lora, pairs)
        tokens = {k: got[k] for k in ("prompt_tokens", "completion_tokens") if k in got}
        plan = planned(kind, spec, lora, pairs, **tokens)
        rows.append({"component": kind, "model": spec, "lora": lora, "pairs": pairs, **tokens,
                     "planned_mib": round(plan / 2**20, 1), "measured_mib": round(got["bytes"] / 2**20, 1),
                     "ratio": round(plan / got["bytes"], 3)})
    return rows


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--measure":
        kind, spec, lora, pairs = sys.argv[2], sys.argv[3], bool(int(sys.argv[4])), int(sys.argv[5])
        print(json.dumps(measure(kind, spec, lora, pairs)))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = ap.parse_args()
    rows = compare()
    print("| component | model | planned MiB | measured MiB | planned / measured |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['component']}{' (LoRA)' if r['lora'] else ''} | {r['model']} | {r['planned_mib']} | "
              f"{r['measured_mib']} | {r['ratio']} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
