"""How much one preference pair tells the validation metric: the first-order effect of a single pair's
DPO + NLL step on the gold answers' log-likelihood of the validation examples nearest to its prompt.

    python benchmarks/lab/pair_influence.py [--prompts 400] [--neighbors 16]

Pairs are the SFT policy's own right and wrong samples on training prompts (as a round draws them).
For each pair, influence = d . G, where d is the descent direction of the round's loss (DPO at the
reference, i.e. beta/2 times the gradient of the summed log-probability margin, plus the chosen
answer's mean-token NLL gradient) and G the gradient of the mean gold log-likelihood of the pair's
`neighbors` nearest validation examples (cosine of the policy's last-token contexts, as the router's
credit uses). A reward that a router could learn a judge's accuracy from would be positive for the
right-first pair far more often than for the reversed one; the script prints how often it is.
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import numpy as np
import torch


def main() -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from laser.assets.judges import on_policy_pairs, sample_policy
    from laser.config import RunConfig
    from laser.generation.contexts import ContextEmbedder
    from laser.parts import load_tasks, resolve_models
    from laser.training.feedback import answer_token_logprobs

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=400, help="training prompts to sample pairs from")
    ap.add_argument("--neighbors", type=int, default=16, help="validation examples per pair")
    ap.add_argument("--beta", type=float, default=0.1)
    args = ap.parse_args()
    torch.manual_seed(0)
    config = RunConfig.model_validate({"name": "pair-influence"})
    policy_path, _, _, assets = resolve_models(config)
    train, validation, _ = load_tasks(config, assets)
    tok = AutoTokenizer.from_pretrained(policy_path)
    model = AutoModelForCausalLM.from_pretrained(policy_path).eval()
    prompts = [train[i] for i in np.random.default_rng(0).permutation(len(train))[:args.prompts]]
    pairs = on_policy_pairs(prompts, sample_policy(model, tok, prompts, n=8, temperature=1.0, seed=0), seed=0)
    feedback = [validation[i] for i in sorted(np.random.default_rng(1).permutation(len(validation))[:128])]
    embedder = ContextEmbedder(model, tok, pooling="last")
    val_ctx = embedder.embed([ex.prompt for ex in feedback])
    pair_ctx = embedder.embed([r["prompt"] for r in pairs])
    params = [p for p in model.parameters() if p.requires_grad]

    def logp(prompt: str, answer: str, reduce: str) -> torch.Tensor:
        tokens = answer_token_logprobs(model, tok, [prompt], [answer.strip()])[0]
        return tokens.mean() if reduce == "mean" else tokens.sum()

    def grad(value: torch.Tensor) -> torch.Tensor:
        return torch.cat([g.reshape(-1) for g in torch.autograd.grad(value, params)])

    def step(prompt: str, chosen: str, rejected: str) -> torch.Tensor:
        margin = logp(prompt, chosen, "sum") - logp(prompt, rejected, "sum")
        return grad(args.beta / 2 * margin + logp(prompt, chosen, "mean"))

    out: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for i, r in enumerate(pairs):
        near = np.argsort(-(val_ctx @ pair_ctx[i]))[:args.neighbors]
        g = grad(torch.stack([logp(feedback[j].prompt, feedback[j].target(), "mean") for j in near]).mean())
        right = float(step(r["prompt"], r["chosen"], r["rejected"]) @ g)
        reversed_ = float(step(r["prompt"], r["rejected"], r["chosen"]) @ g)
        out[r["domain"]].append((right, reversed_))
    print("| domain | pairs | right-first pair helps | right-first beats reversed |")
    print("|---|---|---|---|")
    for domain, v in sorted(out.items()):
        a = np.array(v)
        print(f"| {domain} | {len(a)} | {np.mean(a[:, 0] > 0):.0%} | {np.mean(a[:, 0] > a[:, 1]):.0%} |")


if __name__ == "__main__":
    main()
