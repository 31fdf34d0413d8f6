"""The GPU check: the real-scale path on one GPU, measured against `laser plan`, in one command.

    python benchmarks/gpu_check.py [--out runs/gpu-check]    # one GPU, no hub access: about 3-5 minutes on an H100
    python benchmarks/gpu_check.py --tiny                    # the same steps CPU-sized: a dry run (a test runs it)

No model is downloaded. The policy is a Llama of about 1B parameters (22 layers, hidden 2048, 32/4 heads:
TinyLlama's shape) initialised at random in bf16 with LoRA (r=16 on q/v), with the quick world's tokenizer; the
reward models are the quick world's (built if missing): one sequence classifier and one judge LM, on the GPU in
bf16. Steps, all in this process:

1. the run's parts built by `laser.parts.build_trainer` (vLLM with sleep mode where it can sleep), each part's
   memory measured as it loads (the device's used memory; the host's resident memory on CPU);
2. sampling throughput at the paper's shapes (16 prompts x n = 30, 512 new tokens);
3. two LASeR rounds (`rerank_gain`) and one `ensemble:mean` round, with each round's stage seconds, the DPO
   update's peak memory, and the engine's sleep and wake seconds and the memory sleep frees;
4. parity after the last sync: the engine's greedy tokens and log-probabilities against the trained LoRA
   policy's own (transformers, adapters applied) on the same tokens.

Prints one JSON (also written to OUT/gpu_check.json): each measured component beside `laser plan`'s estimate for
the same config, tokens/s, seconds per DPO step, parity, sleep/wake. On a machine without vLLM the engine is
transformers' (`engine: auto`), and the JSON says so. Fields: docs/scaling.md#the-gpu-check.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import torch

SHAPES = {"full": dict(num_hidden_layers=22, hidden_size=2048, intermediate_size=5632, num_attention_heads=32,
                       num_key_value_heads=4),
          "tiny": dict(num_hidden_layers=2, hidden_size=128, intermediate_size=256, num_attention_heads=4,
                       num_key_value_heads=2)}
GiB = 2**30


class Meter:
    """Memory in use: the GPU's (all of it, as the driver reports: vLLM's pools included), or this process's
    resident memory on CPU; and the peak of torch's allocations around a call."""

    def __init__(self, gpu: bool):
        self.gpu = gpu

    def used(self) -> int:
        if self.gpu:
            torch.cuda.synchronize()
            free, total = torch.cuda.mem_get_info()
            return total - free
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def peak_of(self, fn):
        """(fn's result, the peak memory it added above what was in use when it started)."""
        if self.gpu:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
            out = fn()
            torch.cuda.synchronize()
            return out, torch.cuda.max_memory_allocated() - before
        before = self.used()
        with open("/proc/self/clear_refs", "w") as f:  # forget the process's earlier peak (Linux)
            f.write("5")
        out = fn()
        with open("/proc/self/status") as f:
            peak = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
        return out, peak - before


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


def run_config(args, world, policy_dir: Path, tiny: bool, sleep: int) -> dict:
    """The check's run config: the random policy with LoRA, a classifier RM and a judge LM, the paper's shapes."""
    lineup, _ = world.lineup("judges")
    judge = next(n for n, (kind, _) in lineup.items() if kind == "likelihood")
    classifier = next(iter(world.reward_models))
    rms = {"judge": {"kind": "likelihood", "path": str(lineup[judge][1])},
           "classifier": {"kind": "hf", "path": str(world.reward_models[classifier])}}
    n, new_tokens, prompts = (4, 16, 8) if tiny else (30, 512, 16)
    return {"name": "laser", "output_dir": str(args.out / "runs"), "strategy": "laser", "rounds": 2, "seed": 0,
            "models": {"embedded": None, "policy": str(policy_dir), "reward_models": rms, "dtype": "auto"},
            "tasks": _jsonl_tasks(world.suite(), args.out),
            "round": {"prompts_per_round": prompts, "n": n, "max_new_tokens": new_tokens, "rerank_prompts": 8,
                      "rerank_warmup_prompts": 8, "min_chosen": None},
            "eval": {"max_new_tokens": 16},
            "engine": {"engine": "auto", "max_model_len": 128 if tiny else 1024, "gpu_memory_utilization": 0.3,
                       "sleep": sleep},
            "dpo": {"learning_rate": 1e-5, "batch_size": 8, "lora": {"r": 16, "alpha": 32}}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/gpu-check"))
    ap.add_argument("--tiny", action="store_true", help="a CPU-sized dry run of every step")
    args = ap.parse_args()
    from laser.assets import build_assets, quick_recipe
    from laser.config import parse_config
    from laser.generation import vllm_unavailable
    from laser.parts import build_trainer, make_run_strategy
    from laser.plan import Placement, plan
    from laser.rewards.hf import completion_logprobs
    from laser.training.loop import Trainer

    tiny, gpu = args.tiny, torch.cuda.is_available()
    meter = Meter(gpu)
    shutil.rmtree(args.out / "runs", ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    world = build_assets(quick_recipe(), progress=False)
    summary: dict = {"device": torch.cuda.get_device_name(0) if gpu else "cpu", "torch": torch.__version__,
                     "world_s": round(time.perf_counter() - t0, 1)}
    why = vllm_unavailable()
    can_sleep = why is None and _vllm_sleeps()
    sleep = 2 if (can_sleep or why is not None) else 0  # the transformers engine sleeps anywhere
    summary["engine"] = {"vllm": why or "available", "sleep": sleep,
                         "sleep_note": None if sleep else "vLLM has no sleep mode on this machine (CPU)"}
    policy_dir = args.out / "policy"
    summary["policy_parameters"] = make_policy(policy_dir, world.policy, SHAPES["tiny" if tiny else "full"],
                                               128 if tiny else 1024)
    config = parse_config(run_config(args, world, policy_dir, tiny, sleep))
    (args.out / "laser.json").write_text(json.dumps(config.model_dump(mode="json"), indent=1))

    # 1. the parts, each one's memory as it loads
    marks: list[tuple[str, int]] = [("start", meter.used())]
    trainer = build_trainer(config, loaded=lambda part: marks.append((part, meter.used())))
    loaded = {part: used - marks[i][1] for i, (part, used) in enumerate(marks[1:])}
    summary["engine"]["name"] = trainer.engine.name
    placement = Placement(device="cuda" if gpu else "cpu", memory=torch.cuda.mem_get_info()[1] if gpu else None,
                          prompt_tokens=max(len(trainer.engine.renderer.ids(ex.prompt)) for ex in trainer.train[:64]),
                          completion_tokens=config.round.max_new_tokens)
    planned = plan(config, placement).ranks[0].components

    # 2. sampling throughput at the paper's shapes
    prompts = [ex.prompt for ex in trainer.test[:16]]
    n, new_tokens = config.round.n, config.round.max_new_tokens
    before = trainer.engine.stats.generated_tokens
    t0 = time.perf_counter()
    trainer.engine.sample(prompts, n=n, temperature=0.8, max_new_tokens=new_tokens, seed=0)
    seconds = time.perf_counter() - t0
    tokens = trainer.engine.stats.generated_tokens - before
    summary["sampling"] = {"prompts": len(prompts), "n": n, "max_new_tokens": new_tokens, "tokens": tokens,
                           "seconds": round(seconds, 2), "tokens_per_s": round(tokens / seconds, 1)}

    # 3. two LASeR rounds and one ensemble round; the update's peak and what sleep frees, measured as they run
    update_peaks: list[int] = []
    update = trainer.dpo.update
    trainer.dpo.update = lambda rows: _record(meter.peak_of(lambda: update(rows)), update_peaks)
    slept: list[int] = []
    engine_sleep = trainer.engine.sleep
    trainer.engine.sleep = lambda: _slept(meter, engine_sleep, slept)
    rounds = []
    try:
        rounds += [trainer.run_round() for _ in range(2)]
        ensemble = make_run_strategy(config, list(trainer.rms), trainer.embedder.dim, strategy="ensemble:mean")
        other = Trainer(trainer.policy, trainer.tokenizer, trainer.engine, trainer.embedder, trainer.rms, ensemble,
                        trainer.dpo, trainer.train, trainer.validation, trainer.test, config.round,
                        args.out / "runs" / "ensemble", seed=config.seed)
        other.round = trainer.round
        rounds.append(other.run_round())
        summary["rounds"] = [{"strategy": s, "seconds": r["seconds"], "rm_forward": r["rm_forward"],
                              "pairs": r["pairs"]["pairs"], "dpo": r["dpo"]}
                             for s, r in zip(["laser", "laser", "ensemble:mean"], rounds, strict=True)]
        steps = sum(-(-d["pairs"] // config.dpo.batch_size) for r in rounds for d in r["dpo"] if d["pairs"])
        train_s = sum(r["seconds"].get("train", 0.0) for r in rounds)
        summary["dpo"] = {"optimizer_steps": steps, "train_s": round(train_s, 3),
                          "seconds_per_step": round(train_s / steps, 3) if steps else None}
        stats = trainer.engine.stats
        summary["sleep"] = {"level": sleep, "sleeps": stats.sleeps, "sleep_s": round(stats.sleep_s, 3),
                            "wake_s": round(stats.wake_s, 3),
                            "freed_gib": [round(x / GiB, 3) for x in slept]}

        # 4. parity after the last sync (LoRA merged into the engine's weights)
        summary["parity"] = _parity(trainer, prompts[:8], completion_logprobs)
    finally:
        trainer.engine.close()
    measured = dict(loaded)
    measured["update (gradients, activations)"] = max(update_peaks) if update_peaks else 0
    plan_of = {"policy weights": planned["policy weights"], "LoRA adapters": planned["LoRA adapters"],
               "engine": planned["engine (weights, KV cache)"], "reward models": planned["reward models"],
               "update (gradients, activations)": planned["gradients (update)"] + max(
                   planned["activations (update)"], planned["optimizer state"] + planned["optimizer step (update)"])}
    summary["memory_gib"] = {k: {"measured": round(v / GiB, 4) if v else None, "planned": round(plan_of[k] / GiB, 4),
                                 "planned_over_measured": round(plan_of[k] / v, 3) if v > 0 else None}
                             for k, v in measured.items()}
    text = json.dumps(summary, indent=2)
    print(text)
    (args.out / "gpu_check.json").write_text(text + "\n")


def _record(result_and_peak, peaks: list[int]):
    result, peak = result_and_peak
    peaks.append(peak)
    return result


def _slept(meter: Meter, sleep, freed: list[int]) -> float:
    before = meter.used()
    seconds = sleep()
    freed.append(before - meter.used())
    return seconds


def _vllm_sleeps() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_sleep_mode_available()


def _parity(trainer, prompts: list[str], completion_logprobs) -> dict:
    """The engine's greedy completions and log-probabilities against the trained policy's own on the same tokens."""
    policy = trainer.policy
    greedy = trainer.engine.greedy(prompts, max_new_tokens=16, logprobs=True)
    ids, _ = trainer.engine.encode(prompts, 16)
    diffs, first = [], []
    pad = trainer.tokenizer.pad_token_id
    policy.eval()
    with torch.inference_mode():
        for p, group in zip(ids, greedy.samples, strict=True):
            sample = group[0]
            if not sample.token_ids:
                continue
            (lp,) = completion_logprobs(policy, [list(p) + list(sample.token_ids)], [len(p)], pad)
            diffs.append(abs(float(lp.sum()) - sample.cumulative_logprob) / len(sample.token_ids))
            device = next(policy.parameters()).device
            logits = policy(input_ids=torch.tensor([list(p)], device=device)).logits[0, -1]
            first.append(int(logits.argmax()) == sample.token_ids[0])
    return {"prompts": len(diffs), "max_abs_logprob_diff_per_token": round(max(diffs), 5) if diffs else None,
            "first_greedy_token_matches_hf": f"{sum(first)}/{len(first)}"}


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
    sys.exit(main())
