"""`laser` command line: thin wrappers that parse arguments and call one function."""

from __future__ import annotations

import argparse
import inspect
import sys

from laser import __version__


def _policies(_: argparse.Namespace) -> int:
    """Print every bandit policy with its parameters and defaults."""
    import bandits

    for name, cls in sorted(bandits.POLICIES.items()):
        params = [f"{p.name}={p.default!r}" for p in inspect.signature(cls.__init__).parameters.values()
                  if p.name not in ("self", "n_arms", "dim")]
        summary = (cls.__doc__ or "").strip().splitlines()[0]
        print(f"{name:18} {summary}\n{'':18} params: {', '.join(params)}")
    return 0


def _build_assets(args: argparse.Namespace) -> int:
    """Build the embedded default (or find it in the cache) and print where it is and how it measures."""
    from laser.assets import AssetsError, build_assets, format_report, quick_recipe
    from laser.assets.recipe import AssetRecipe

    recipe = quick_recipe(args.seed) if args.quick else AssetRecipe(seed=args.seed)
    try:
        assets = build_assets(recipe, cache_dir=args.cache_dir, force=args.force, progress=not args.quiet)
    except AssetsError as e:
        print(f"laser build-assets: {e}", file=sys.stderr)
        return 1
    print(format_report(assets.report))
    print(f"\nassets: {assets.root}\n  tokenizer: {assets.tokenizer}\n  policy: {assets.policy}")
    for name, path in assets.reward_models.items():
        print(f"  reward model {name} (classifier, hf backend): {path}")
    for name, path in assets.judges.items():
        print(f"  judge LM {name} (likelihood backend): {path}")
    return 0


def _train(args: argparse.Namespace) -> int:
    """Run `laser train`: config file + overrides -> rounds -> runs/<name>/metrics.jsonl."""
    from laser.config import ConfigError, load_config
    from laser.training.run import RunLockedError, load_run_config, train

    overrides = list(args.set or [])
    if args.strategy:
        overrides.append(f"strategy={args.strategy}")
    if args.name:
        overrides.append(f"name={args.name}")
    try:
        if args.resume:
            if args.config or overrides:
                raise ConfigError("--resume continues a run with the config it was started with: drop --config, "
                                  "--set, --strategy and --name")
            config = load_run_config(args.resume)
        else:
            config = load_config(args.config, overrides)
        last = train(config, progress=not args.quiet, resume=bool(args.resume))
    except (ConfigError, RunLockedError, FileNotFoundError) as e:
        print(f"laser train: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    print(f"final test accuracy {last['mean_accuracy']:.1%}; metrics: {config.run_dir / 'metrics.jsonl'}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    """Run `laser demo`: every strategy x seed on the embedded default, then the comparison table."""
    from laser.config import ConfigError, RunConfig, load_config
    from laser.demo import run_demo
    from laser.training.run import RunLockedError

    try:
        base = load_config(args.config, list(args.set or [])) if args.config or args.set else RunConfig(name="demo")
        run_demo(base, seeds=args.seeds, strategies=args.strategies, out=args.out, progress=not args.quiet)
    except (ConfigError, RunLockedError, FileNotFoundError, ValueError) as e:
        print(f"laser demo: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("laser demo: interrupted; run the same command again to continue where it stopped", file=sys.stderr)
        return 130
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `laser`."""
    ap = argparse.ArgumentParser(prog="laser", description=__doc__)
    ap.add_argument("--version", action="version", version=f"laser {__version__}")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("policies", help="list the bandit policies usable as routers, with their parameters")
    p.set_defaults(func=_policies)
    p = sub.add_parser("build-assets", help="build the embedded default (tiny policy + specialist reward models)",
                       description="Build the embedded default world into the cache, or find it there. "
                                   "Default cache: $LASER_ASSETS_DIR, else ~/.cache/laser/assets.")
    p.add_argument("--cache-dir", default=None,
                   help="where to build (default: $LASER_ASSETS_DIR or ~/.cache/laser/assets)")
    p.add_argument("--quick", action="store_true",
                   help="the reduced two-domain world used by the tests (about a minute)")
    p.add_argument("--seed", type=int, default=0, help="seed of the task suite and of every training run")
    p.add_argument("--force", action="store_true", help="rebuild even if the cache holds this recipe")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_build_assets)
    p = sub.add_parser("train", help="iterative DPO with a reward strategy (LASeR or a baseline)",
                       description="Train a policy by rounds of sample -> route -> score -> DPO. Writes "
                                   "runs/<name>/config.yaml and metrics.jsonl.")
    p.add_argument("--config", default=None, help="YAML run config (default: every default; see configs/)")
    p.add_argument("--strategy", default=None,
                   help="laser[:<bandit>], single:<rm>, random, ensemble:<aggregator>, sequential, oracle")
    p.add_argument("--name", default=None, help="run name (directory under output_dir)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config value, e.g. --set round.n=16 (repeatable)")
    p.add_argument("--resume", default=None, metavar="RUN_DIR",
                   help="continue the run in RUN_DIR from its newest checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_train)
    p = sub.add_parser("demo", help="LASeR vs random, ensemble:mean and the best single RM on the embedded default",
                       description="Build the embedded default if needed, train every strategy for every seed "
                                   "(finished runs are reused, interrupted ones resumed) and print the comparison "
                                   "table; writes <out>/report.md, results.json and plots.")
    p.add_argument("--config", default=None, help="base run config (default: the built-in defaults)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value (repeatable)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default: 0 1 2)")
    p.add_argument("--strategies", nargs="+", default=["laser", "random", "ensemble:mean", "best-single"],
                   help="strategies to compare; best-single = single:<RM with the best measured mean accuracy>")
    p.add_argument("--out", default="runs/demo", help="where the runs and the report go (default: runs/demo)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_demo)
    return ap


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `laser` console script."""
    ap = build_parser()
    args = ap.parse_args(argv)
    if not getattr(args, "func", None):
        ap.print_help()
        return 2
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
