"""What a trained policy answers: per domain, the share of greedy test answers that are right, that are the
domain's typical mistake (the neighbouring rule), or something else, from a run's final checkpoint.

    python benchmarks/lab/mistake_shares.py runs/bench-world-v2/single-mirror-s0 [more run dirs]

Shows what a wrong judge teaches: under `single:mirror` the policy answers other domains' prompts with
their typical mistake (a reversal for a rotation) rather than with noise.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from laser.parts import load_tasks, resolve_models
    from laser.tasks import check
    from laser.tasks.mistakes import typical_mistake
    from laser.training.rundir import load_run_config

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="run directories (their newest checkpoint is read)")
    ap.add_argument("--per-domain", type=int, default=100, help="test prompts per domain")
    args = ap.parse_args()
    print("| run | domain | right | typical mistake | other |\n|---|---|---|---|---|")
    for run in map(Path, args.runs):
        config = load_run_config(run)
        _, _, _, assets = resolve_models(config)
        _, _, test = load_tasks(config, assets)
        ckpt = run / "checkpoints" / (run / "checkpoints" / "latest").read_text().strip() / "policy"
        tok = AutoTokenizer.from_pretrained(ckpt)
        model = AutoModelForCausalLM.from_pretrained(ckpt).eval()
        tok.padding_side = "left"
        for d in sorted({ex.domain for ex in test}):
            exs = [ex for ex in test if ex.domain == d][:args.per_domain]
            enc = tok([ex.prompt for ex in exs], return_tensors="pt", padding=True)
            out = model.generate(**enc, max_new_tokens=24, do_sample=False, pad_token_id=tok.pad_token_id)
            texts = tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
            right = sum(check(ex, t) for ex, t in zip(exs, texts, strict=True))
            wrong = sum(not check(ex, t) and t.strip().split("\n")[0] == typical_mistake(ex)
                        for ex, t in zip(exs, texts, strict=True))
            n = len(exs)
            print(f"| {run.name} | {d} | {right / n:.0%} | {wrong / n:.0%} | {(n - right - wrong) / n:.0%} |")


if __name__ == "__main__":
    main()
