"""Which wrong arithmetic answers fool the embedded reward models? Pairwise accuracy by kind of mistake.

For every arithmetic test prompt, the gold answer is paired with one wrong answer of each kind (off by
one, by two, by ten, by nine or eleven, digits reversed, a random number nearby); each reward model's
accuracy is the fraction of pairs where it scores the gold answer higher.

    python benchmarks/rm_near_misses.py [--quick]
"""

from __future__ import annotations

import argparse
import random

import numpy as np

from laser.assets import AssetRecipe, build_assets, quick_recipe
from laser.rewards import load_reward_model

KINDS = {
    "off by 1": lambda v, r: v + r.choice((-1, 1)),
    "off by 2": lambda v, r: v + r.choice((-2, 2)),
    "off by 10": lambda v, r: v + r.choice((-10, 10)),
    "off by 9 or 11": lambda v, r: v + r.choice((-11, 11, 9, -9)),
    "digits reversed": lambda v, r: int(str(abs(v))[::-1]) * (1 if v >= 0 else -1),
    "random nearby": lambda v, r: r.randint(min(v, 0) - 10, abs(v) + 20),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="the reduced world (it has no arithmetic: nothing to show)")
    args = ap.parse_args()
    assets = build_assets(quick_recipe() if args.quick else AssetRecipe())
    suite = assets.suite()
    items = [ex for ex in suite.test if ex.domain == "arithmetic"]
    if not items:
        print("this world has no arithmetic domain")
        return
    rms = {name: load_reward_model("hf", str(path)) for name, path in assets.reward_models.items()}
    print(f"{len(items)} arithmetic test prompts; pairwise accuracy of gold vs one wrong answer of each kind\n")
    print("| kind of mistake | pairs | " + " | ".join(rms) + " |\n|---|---|" + "---|" * len(rms))
    for kind, make in KINDS.items():
        rng = random.Random(kind)
        rows = [(ex.prompt, " " + ex.answer, " " + str(w)) for ex in items
                if (w := make(int(ex.answer), rng)) != int(ex.answer)]
        prompts = [r[0] for r in rows]
        cells = []
        for rm in rms.values():
            gold = rm.score(prompts, [r[1] for r in rows]).values
            wrong = rm.score(prompts, [r[2] for r in rows]).values
            cells.append(f"{np.mean(gold > wrong):.0%}")
        print(f"| {kind} | {len(rows)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
