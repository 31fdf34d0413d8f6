"""The GPU check: vLLM on a GPU, in-place weight sync after a DPO step, and LASeR rounds at the paper's shapes.

    python benchmarks/gpu_check.py [--out runs/gpu-check]          # one GPU, no hub access, about 5-8 minutes
    python benchmarks/gpu_check.py --tiny                          # the same steps, CPU-sized (a dry run)

No model is downloaded: the policy is a Llama of about 1B parameters (22 layers, hidden 2048, GQA 32/4 heads,
like TinyLlama's shape) initialised at random from a config in bf16, with the quick world's tokenizer; the
reward models and the tasks are the quick world's (`laser build-assets --quick`, built if missing). Steps:

1. vLLM engine start on the GPU (seconds, memory);
2. sampling throughput at the paper's shapes (16 prompts x n = 30, 512 new tokens);
3. one TRL DPO step of the HF policy (bf16), `sync_weights` into the running engine, then the engine's greedy
   tokens and log-probabilities against the HF model's own on the same tokens (parity);
4. two LASeR rounds (`laser train`, n = 30, 512 new tokens, the quick world's judges) with their stage seconds.

Prints one JSON summary (also written to OUT/gpu_check.json) with the peak GPU memory of each step.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

SHAPES = {"full": dict(num_hidden_layers=22, hidden_size=2048, intermediate_size=5632, num_attention_heads=32,
                       num_key_value_heads=4),
          "tiny": dict(num_hidden_layers=2, hidden_size=128, intermediate_size=256, num_attention_heads=4,
                       num_key_value_heads=2)}


def gpu_memory() -> dict:
    """This process's peak allocated GPU memory (GiB) and the device's used / total as nvidia-smi reports it."""
    if not torch.cuda.is_available():
        return {}
    out = {"peak_allocated_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)}
    try:
        used, total = subprocess.run(["nvidia-smi", "--query-gpu=memory.used,memory.total", "--format=csv,noheader,"
                                      "nounits", "-i", "0"], capture_output=True, text=True, timeout=30
                                     ).stdout.split(",")
        out.update(used_gib=round(float(used) / 1024, 2), total_gib=round(float(total) / 1024, 2))
    except (OSError, ValueError, subprocess.SubprocessError):
        pass
    return out


def make_policy(out_dir: Path, tokenizer_dir: Path, shape: dict, max_len: int) -> int:
    """A random-initialised Llama of `shape` in bf16, with the quick world's tokenizer, saved to `out_dir`."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(vocab_size=len(tok), max_position_embeddings=max_len, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, tie_word_embeddings=False,
                         **shape)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return sum(p.numel() for p in model.parameters())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/gpu-check"))
    ap.add_argument("--tiny", action="store_true", help="a CPU-sized dry run of every step")
    args = ap.parse_args()
    from laser.assets import build_assets, quick_recipe
    from laser.assets.pairs import correctness_pairs
    from laser.config import DPOSettings, EngineConfig
    from laser.generation import make_engine
    from laser.rewards.hf import completion_logprobs
    from laser.training.dpo import DPOStep

    tiny = args.tiny
    n, new_tokens, prompts_per_round = (4, 16, 8) if tiny else (30, 512, 16)
    max_len = 128 if tiny else 1024
    args.out.mkdir(parents=True, exist_ok=True)
    summary: dict = {"device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
                     "torch": torch.__version__, "shapes": {"n": n, "max_new_tokens": new_tokens,
                                                             "prompts_per_round": prompts_per_round}}
    t0 = time.perf_counter()
    world = build_assets(quick_recipe(), progress=False)
    suite = world.suite()
    summary["world_s"] = round(time.perf_counter() - t0, 1)
    policy_dir = args.out / "policy"
    summary["policy_parameters"] = make_policy(policy_dir, world.policy, SHAPES["tiny" if tiny else "full"], max_len)

    # 1. engine start
    t0 = time.perf_counter()
    engine = make_engine(str(policy_dir), EngineConfig(engine="vllm", dtype="auto", max_model_len=max_len,
                                                       gpu_memory_utilization=0.35))
    summary["engine"] = {"name": engine.name, "start_s": round(time.perf_counter() - t0, 1), **gpu_memory()}

    # 2. sampling throughput at the paper's shapes
    prompts = [ex.prompt for ex in suite.test[:prompts_per_round]]
    before = engine.stats.generated_tokens
    t0 = time.perf_counter()
    engine.sample(prompts, n=n, temperature=0.8, max_new_tokens=new_tokens, seed=0)
    seconds = time.perf_counter() - t0
    tokens = engine.stats.generated_tokens - before
    summary["sampling"] = {"prompts": len(prompts), "n": n, "tokens": tokens, "seconds": round(seconds, 2),
                           "tokens_per_s": round(tokens / seconds, 1)}

    # 3. one DPO step, sync, parity
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    tok = AutoTokenizer.from_pretrained(policy_dir)
    policy = AutoModelForCausalLM.from_pretrained(policy_dir, dtype=torch.bfloat16 if device == "cuda" else
                                                  torch.float32).to(device)
    import random

    probe = prompts[:8]
    before_sync = [g[0].cumulative_logprob for g in engine.greedy(probe, max_new_tokens=16).samples]
    rows = correctness_pairs(suite.train[:32], random.Random(0))
    step = DPOStep(policy, tok, DPOSettings(learning_rate=1e-5, batch_size=8), args.out / ".dpo",
                   renderer=engine.renderer)
    t0 = time.perf_counter()
    loss = step.update(rows).get("loss")
    summary["dpo_step"] = {"pairs": len(rows), "loss": loss, "seconds": round(time.perf_counter() - t0, 2),
                           **gpu_memory()}
    summary["sync_s"] = round(engine.sync_weights(policy), 2)
    greedy = engine.greedy(probe, max_new_tokens=16)
    ids, _ = engine.encode(probe, 16)
    diffs, first_tokens_match = [], []
    policy.eval()
    with torch.inference_mode():
        for p, group in zip(ids, greedy.samples, strict=True):
            sample = group[0]
            if not sample.token_ids:
                continue
            (lp,) = completion_logprobs(policy, [list(p) + list(sample.token_ids)], [len(p)], tok.pad_token_id)
            diffs.append(abs(float(lp.sum()) - sample.cumulative_logprob) / len(sample.token_ids))
            logits = policy(input_ids=torch.tensor([list(p)], device=device)).logits[0, -1]
            first_tokens_match.append(int(logits.argmax()) == sample.token_ids[0])
    summary["parity"] = {"prompts": len(diffs), "max_abs_logprob_diff_per_token": round(max(diffs), 5),
                         "first_greedy_token_matches_hf": f"{sum(first_tokens_match)}/{len(first_tokens_match)}",
                         # the engine serves the new weights: its log-probabilities moved with the DPO step
                         "max_abs_change_from_before_the_step": round(float(np.max(np.abs(
                             np.array([g[0].cumulative_logprob for g in greedy.samples]) - before_sync))), 5)}
    engine.close()
    del policy, step
    torch.cuda.empty_cache() if torch.cuda.is_available() else None

    # 4. two LASeR rounds at the paper's shapes
    lineup, _ = world.lineup("judges")
    config = {"name": "gpu-check-laser", "output_dir": str(args.out), "strategy": "laser", "rounds": 2,
              "eval_every": 2, "checkpoint_every": 2,
              "models": {"embedded": None, "policy": str(policy_dir),
                         "reward_models": {name: {"kind": kind, "path": str(path)} for name, (kind, path) in
                                           lineup.items()}},
              "tasks": _jsonl_tasks(suite, args.out), "round": {"prompts_per_round": prompts_per_round, "n": n,
                                                                 "max_new_tokens": new_tokens, "rerank_prompts": 8},
              "eval": {"max_new_tokens": 16},
              "engine": {"engine": "vllm", "max_model_len": max_len, "gpu_memory_utilization": 0.35},
              "dpo": {"learning_rate": 1e-5, "batch_size": 8}}
    cfg_path = args.out / "laser.yaml"
    import shutil

    import yaml

    shutil.rmtree(args.out / "gpu-check-laser", ignore_errors=True)
    cfg_path.write_text(yaml.safe_dump(config, sort_keys=False))
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "laser.cli", "train", "--quiet", "--config", str(cfg_path)],
                          capture_output=True, text=True)
    if done.returncode:
        summary["laser_rounds"] = {"failed": done.stderr[-2000:]}
    else:
        lines = [json.loads(x) for x in (args.out / "gpu-check-laser" / "metrics.jsonl").read_text().splitlines()]
        rounds = [x for x in lines if x["type"] == "round"]
        summary["laser_rounds"] = {"wall_s": round(time.perf_counter() - t0, 1),
                                   "seconds": [r["seconds"] for r in rounds],
                                   "candidates": [r["candidates"] for r in rounds],
                                   "rm_forward": [r["rm_forward"] for r in rounds],
                                   "pairs": [r["pairs"] for r in rounds]}
    text = json.dumps(summary, indent=2)
    print(text)
    (args.out / "gpu_check.json").write_text(text + "\n")
    if done.returncode:
        raise SystemExit("the LASeR rounds failed (see laser_rounds.failed above)")


def _jsonl_tasks(suite, out: Path) -> dict:
    """The quick world's splits as the JSONL files a run with its own policy reads."""
    paths = {}
    for split in ("train", "validation", "test"):
        rows = getattr(suite, split)[:256 if split == "train" else 64]
        path = out / f"{split}.jsonl"
        path.write_text("".join(json.dumps({"prompt": ex.prompt, "answer": ex.answer, "domain": ex.domain,
                                            "answer_format": ex.answer_format}) + "\n" for ex in rows))
        paths[split] = str(path)
    return {"source": "jsonl", **paths}


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
