"""Can a linear router tell the domains apart from the policy's contexts? Per pooling and layer.

For the validation prompts of the embedded default, prints the accuracy of a nearest-centroid domain
classifier on the (L2-normalized) contexts, and the mean cosine similarity within a domain and over
all pairs. Contexts that are all nearly the same vector leave LinUCB nothing to route on.

    python benchmarks/lab/context_separability.py [--quick | --recipe configs/worlds/within-source.yaml]
"""

from __future__ import annotations

import argparse

import numpy as np
from transformers import AutoModelForCausalLM, AutoTokenizer

from laser.assets import AssetRecipe, build_assets, quick_recipe
from laser.assets.recipe import load_recipe
from laser.generation import ContextConfig, make_embedder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="the reduced world instead of the default")
    ap.add_argument("--recipe", default=None, help="a world recipe YAML instead of the default")
    args = ap.parse_args()
    recipe = quick_recipe() if args.quick else load_recipe(args.recipe) if args.recipe else AssetRecipe()
    assets = build_assets(recipe, progress=False)
    tok = AutoTokenizer.from_pretrained(assets.policy)
    policy = AutoModelForCausalLM.from_pretrained(assets.policy)
    val = assets.suite().validation
    domains = np.array([ex.domain for ex in val])
    names = sorted(set(domains))
    print(f"{len(val)} validation prompts, {len(names)} domains\n")
    print("| pooling | layer | nearest-centroid domain accuracy | mean cosine within a domain "
          "| mean cosine, all pairs |")
    print("|---|---|---|---|---|")
    for pooling in ("last", "mean"):
        for layer in (-1, 1):
            x = make_embedder(policy, tok, ContextConfig(pooling=pooling, layer=layer), seed=0).embed(
                [ex.prompt for ex in val])
            centroids = np.stack([x[domains == d].mean(0) for d in names])
            acc = (np.array(names)[np.argmax(x @ centroids.T, 1)] == domains).mean()
            within = np.mean([(x[domains == d] @ x[domains == d].T).mean() for d in names])
            print(f"| {pooling} | {layer} | {acc:.1%} | {within:.3f} | {(x @ x.T).mean():.3f} |")


if __name__ == "__main__":
    main()
