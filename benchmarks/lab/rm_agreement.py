"""How often the embedded reward models agree, per domain: the disagreement LASeR exists for.

Every test prompt gets three candidates (its gold answer and two wrong ones, as the policy would write
them). For each pair of reward models, and for each RM against the answer checker ("verifier", the
ground truth), the table gives the fraction of candidate pairs of the same prompt that both order the
same way (pairs counted in brackets). The LASeR paper reports 0.43 agreement between two public RMs on
MMLU; a router only helps where RMs disagree.

    python benchmarks/lab/rm_agreement.py [--quick]
"""

from __future__ import annotations

import argparse
import random

import numpy as np

from laser.assets import AssetRecipe, build_assets, quick_recipe
from laser.assets.pairs import wrong_answer
from laser.rewards import format_agreement, load_reward_model, preference_agreement, verifier


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="the reduced world instead of the default")
    ap.add_argument("--wrong", type=int, default=2, help="wrong answers per prompt")
    args = ap.parse_args()
    assets = build_assets(quick_recipe() if args.quick else AssetRecipe())
    test = assets.suite().test
    rng = random.Random(0)
    prompts, completions, groups, domains = [], [], [], []
    for i, ex in enumerate(test):
        for text in [ex.target(), *(wrong_answer(ex, rng) for _ in range(args.wrong))]:
            prompts.append(ex.prompt)
            completions.append(" " + text)
            groups.append(i)
            domains.append(ex.domain)
    rms = {name: load_reward_model("hf", str(path)) for name, path in assets.reward_models.items()}
    rms["verifier"] = verifier(test)
    scores = {name: rm.score(prompts, completions).values for name, rm in rms.items()}
    table = preference_agreement(scores, groups, domains)
    print(f"Preference agreement on {len(test)} test prompts x {1 + args.wrong} candidates "
          f"(embedded {'reduced' if args.quick else 'default'} world; 'verifier' is the answer checker):\n")
    print(format_agreement(table))
    between = [row["all"][0] for (a, b), row in table.items() if "verifier" not in (a, b)]
    print(f"\nmean agreement between reward models: {np.nanmean(between):.2f}")


if __name__ == "__main__":
    main()
