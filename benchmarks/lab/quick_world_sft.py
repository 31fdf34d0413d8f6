"""The test world built with other SFT settings: its policy's figures and the recipe's targets.

    python benchmarks/lab/quick_world_sft.py --cache-dir DIR [--sft KEY=VALUE ...]

Builds `quick_recipe()` with the given `sft` keys replaced (e.g. `--sft max_steps=1200 hold_weight=0
band=[0.3,0.6]`; values are YAML) into DIR and prints the kept SFT step, the greedy validation and test
accuracy and pass@8 per domain, every target of the recipe, and the validation accuracy at each check.
"""

from __future__ import annotations

import argparse

import yaml

from laser.assets import build_assets, quick_recipe


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache-dir", required=True)
    ap.add_argument("--sft", nargs="*", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    recipe = quick_recipe()
    changes = {}
    for item in args.sft:
        key, _, value = item.partition("=")
        value = yaml.safe_load(value)
        changes[key] = tuple(value) if isinstance(value, list) else value
    recipe = recipe.model_copy(update={"sft": recipe.sft.model_validate({**recipe.sft.model_dump(), **changes})})
    assets = build_assets(recipe, cache_dir=args.cache_dir, progress=False)
    p = assets.report["policy"]
    print(f"recipe {recipe.digest()}, sft changes {changes or 'none'}: kept step {p['kept_step']}, "
          f"SFT {assets.report['timings_s']['sft_s']:.0f} s")
    for name in ("validation_accuracy", "test_accuracy", "pass_at_8"):
        print(f"  {name}: " + ", ".join(f"{d} {v:.0%}" for d, v in sorted(p[name].items())))
    for t in assets.report["targets"]:
        print(f"  [{'x' if t['holds'] else ' '}] {t['target']}: {t['detail']}")
    print("  validation by step: " + "; ".join(
        f"{h['step']} " + "/".join(f"{v:.0%}" for _, v in sorted(h["validation"].items())) for h in p["history"]))


if __name__ == "__main__":
    main()
