"""`laser` command line: thin wrappers that parse arguments and call one function."""

from __future__ import annotations

import argparse
import inspect
import os
import sys
import threading

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
    from laser.assets.recipe import AssetRecipe, RecipeError, load_recipe

    try:
        if args.quick and args.recipe:
            raise RecipeError("--quick and --recipe name two worlds: choose one")
        recipe = (quick_recipe(args.seed or 0) if args.quick else load_recipe(args.recipe, seed=args.seed)
                  if args.recipe else AssetRecipe(seed=args.seed or 0))
    except RecipeError as e:
        print(f"laser build-assets: {e}", file=sys.stderr)
        return 2
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


def _data(args: argparse.Namespace) -> int:
    """Run `laser data`: published datasets -> train / validation / test JSONL for a run config."""
    from laser.tasks.export import export
    from laser.tasks.loaders import DatasetError

    sources = {}
    for item in args.source or []:
        name, sep, path = item.partition("=")
        if not sep or not path:
            print(f"laser data: --source {item!r}: expected DATASET=PATH (e.g. gsm8k=./gsm8k)", file=sys.stderr)
            return 2
        sources[name] = path
    try:
        report = export(args.datasets, args.out, sources=sources, validation_fraction=args.validation_fraction,
                        seed=args.seed, limit=args.limit)
    except DatasetError as e:
        print(f"laser data: {e}", file=sys.stderr)
        return 2
    print(report.summary())
    print(f"wrote {args.out}/train.jsonl, validation.jsonl, test.jsonl "
          f"(tasks: {{source: jsonl, train: {args.out}/train.jsonl, ...}} in a run config)")
    return 0


def _train(args: argparse.Namespace) -> int:
    """Run `laser train`: config file + overrides -> rounds -> runs/<name>/metrics.jsonl."""
    from laser.config import ConfigError, load_config
    from laser.rewards.base import RewardModelFailed
    from laser.statefile import StateFileError
    from laser.training.distributed import is_main_process
    from laser.training.run import train
    from laser.training.rundir import RunLockedError, load_run_config

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
    except (ConfigError, RunLockedError, FileNotFoundError, StateFileError, RewardModelFailed) as e:
        print(f"laser train: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # RunStopped: after a completed, checkpointed round; else at once
        return getattr(e, "exit_code", 130)
    if is_main_process():  # once per run, not once per rank
        print(f"final test accuracy {last['mean_accuracy']:.1%}; metrics: {config.run_dir / 'metrics.jsonl'}")
    return 0


def _stop(args: argparse.Namespace) -> int:
    """Run `laser stop`: ask the run writing RUN_DIR to stop (after its round in progress, or at once)."""
    from laser.training.rundir import RunNotRunning, stop_run

    try:
        pid, state = stop_run(args.run_dir, now=args.now, wait=args.wait)
    except RunNotRunning as e:
        print(f"laser stop: {e}", file=sys.stderr)
        return 1
    what = "at once" if args.now else "after its round in progress, with a checkpoint"
    if state == "stopped":
        print(f"laser stop: the run in {args.run_dir} (process {pid}) stopped {what}; continue it with "
              f"laser train --resume {args.run_dir}")
        return 0
    print(f"laser stop: asked the run in {args.run_dir} (process {pid}) to stop {what}" +
          ("; it is still running (see its output)" if args.wait else ""))
    return 0


def _demo(args: argparse.Namespace) -> int:
    """Run `laser demo`: every strategy x seed on the embedded default, then the comparison table."""
    from laser.config import RunConfig, load_config
    from laser.demo import run_demo

    def run() -> None:
        base = load_config(args.config, list(args.set or [])) if args.config or args.set else RunConfig(name="demo")
        run_demo(base, seeds=args.seeds, strategies=args.strategies, out=args.out, progress=not args.quiet,
                 jobs=args.jobs)

    return _resumable("laser demo", run)


def _resumable(command: str, run) -> int:
    """Run a grid command: a bad config or input exits 2 with the message, Ctrl-C says how to continue."""
    from laser.config import ConfigError
    from laser.training.rundir import RunLockedError

    try:
        run()
    except (ConfigError, RunLockedError, FileNotFoundError, ValueError) as e:  # GridError is a ValueError
        print(f"{command}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{command}: interrupted; run the same command again to continue where it stopped", file=sys.stderr)
        return 130
    return 0


def _bench(args: argparse.Namespace) -> int:
    """Run `laser bench`: every strategy x seeds, then the comparison under benchmarks/results/."""
    import datetime

    from laser.bench import DEFAULT_STRATEGIES, FULL, QUICK, run_bench
    from laser.config import RunConfig, load_config

    mode = QUICK if args.quick else FULL
    name = args.name or ("quick" if args.quick else "strategies")
    overrides = [f"{k}={v}" for k, v in mode["overrides"].items()] + list(args.set or [])
    def run() -> None:
        base = load_config(args.config, overrides) if args.config or overrides else RunConfig()
        base = base.model_copy(update={"name": name})
        out = args.out or f"benchmarks/results/{datetime.date.today().isoformat()}-{name}"
        run_bench(base, args.strategies or DEFAULT_STRATEGIES, args.seeds or mode["seeds"],
                  args.runs or f"runs/bench-{name}", out, jobs=args.jobs,
                  command="laser bench " + " ".join(sys.argv[2:] if args.argv is None else args.argv),
                  progress=not args.quiet)

    return _resumable("laser bench", run)


def _soup(args: argparse.Namespace) -> int:
    """Run `laser soup`: finished runs -> interpolated policies -> test accuracy of each, table and plot."""
    from pathlib import Path

    from laser.config import ConfigError
    from laser.soup import SoupError, format_soup, run_soup

    out = Path(args.out) if args.out else Path(args.runs[0]).parent / f"soup-{args.weights.replace(',', '_')}"
    try:
        soup = run_soup(args.runs, args.weights, step=args.step, out=out, progress=not args.quiet)
    except (SoupError, ConfigError, FileNotFoundError) as e:
        print(f"laser soup: {e}", file=sys.stderr)
        return 2
    print(format_soup(soup))
    print(f"\nwrote {out / 'soup.md'}, {out / 'soup.json'} and {out / 'soup.png'}")
    return 0


def _plan(args: argparse.Namespace) -> int:
    """Run `laser plan`: a run config -> memory per process and FLOPs per round, from config.json files alone."""
    import json

    from laser.config import ConfigError, load_config
    from laser.plan import format_plan, plan_dict, run_plan

    try:
        configs = {}
        for item in args.model_config or []:
            name, sep, path = item.partition("=")
            if not sep or not path:
                raise ConfigError(f"--model-config {item!r}: expected MODEL=CONFIG.json (the model's path or hub id "
                                  "as the run config names it)")
            configs[name] = path
        config = load_config(args.config, list(args.set or []))
        result = run_plan(config, gpus=args.gpus, gpu_memory=args.gpu_memory, processes=args.processes,
                          device="cpu" if args.cpu else "cuda", prompt_tokens=args.prompt_tokens,
                          completion_tokens=args.completion_tokens, model_configs=configs)
    except ConfigError as e:  # PlanError is a ConfigError
        print(f"laser plan: {e}", file=sys.stderr)
        return 2
    print(json.dumps(plan_dict(result), indent=1) if args.json else format_plan(result))
    return 0 if result.fits is not False else 1


def _serve_router(args: argparse.Namespace) -> int:
    """Run `laser serve-router`: the routed reward endpoint, until Ctrl-C or SIGTERM (its state saved then)."""
    import signal

    from laser.config import ConfigError, load_config
    from laser.integrations.endpoint import make_server
    from laser.parts import build_routing_service

    try:
        config = load_config(args.config, args.set)
        if args.prior < 0:
            raise ValueError(f"--prior must be >= 0 (held-out rows), got {args.prior}")
        service = build_routing_service(config, args.validation, args.state, args.init_from, args.save_every,
                                        prior=args.prior)
    except (ConfigError, FileNotFoundError, ValueError) as e:
        print(f"laser serve-router: {e}", file=sys.stderr)
        return 2
    server = make_server(service, args.host, args.port)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    host, port = server.server_address[:2]
    print(f"laser serve-router: {len(service.reward.reward_models)} reward models "
          f"({', '.join(service.reward.reward_models)}), {len(service.validation)} held-out rows; "
          f"POST http://{host}:{port}/get_reward (OpenRLHF: --reward.remote_url), /feedback; GET /health, /stats"
          + (f"; offline prior: {service.prior['informative']} informative of {service.prior['prompts']} held-out "
             f"rows, {service.prior['rm_forward']} RM passes" if service.prior else ""), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        service.save()
    return 0


def _serve_rms(args: argparse.Namespace) -> int:
    """Run `laser serve-rms`: a vLLM pooling server per sequence-classifier RM, until Ctrl-C or SIGTERM."""
    from laser.bon.setup import BonError, parse_rms
    from laser.config import ConfigError, load_config
    from laser.serve import ServeError, servable, serve

    try:
        if args.config:
            from laser.parts import resolve_models

            _, configs, _, _ = resolve_models(load_config(args.config))
        else:
            configs, _ = parse_rms(args.rms)
        if args.only:
            unknown = sorted(set(args.only) - set(configs))
            if unknown:
                raise ServeError(f"--only {' '.join(unknown)}: not among the reward models {sorted(configs)}")
            configs = {n: c for n, c in configs.items() if n in args.only}
        models = servable(configs)
        return serve(models, port=args.port, host=args.host, log_dir=args.log_dir, timeout=args.timeout)
    except (ServeError, BonError, ConfigError) as e:
        print(f"laser serve-rms: {e}", file=sys.stderr)
        return 2


def _bon(args: argparse.Namespace) -> int:
    """Run `laser bon`: prompts JSONL -> best-of-n with a strategy -> one JSONL row per prompt, streamed."""
    import json
    from pathlib import Path

    from pydantic import ValidationError

    from laser.bon import BonError, BonSettings, format_summary, read_prompts, run_bon
    from laser.bon.runner import state_path
    from laser.bon.setup import build_runner, learn_bon_prior
    from laser.config import ConfigError
    from laser.tasks import DatasetError, load_jsonl

    def fail(msg: str) -> int:
        print(f"laser bon: {msg}", file=sys.stderr)
        return 2

    if args.n < 1:
        return fail(f"--n must be >= 1 (candidates per prompt), got {args.n}")
    feedback = args.feedback or ("none" if args.router or (args.strategy or "laser").split(":")[0] != "laser"
                                 else "nll")
    try:
        settings = BonSettings(**{k: getattr(args, k) for k in BonSettings.model_fields if k != "feedback"},
                               feedback=feedback)
    except ValidationError as e:
        err = e.errors()[0]
        return fail(f"--{str(err['loc'][0]).replace('_', '-')}: {err['msg']} (got {err.get('input')!r})")
    try:
        rows, skipped = read_prompts(args.input, skip_bad_rows=args.skip_bad_rows, answer_format=args.answer_format)
        out = Path(args.out)
        side = out.with_name(out.name + ".skipped.jsonl")
        if skipped:
            side.parent.mkdir(parents=True, exist_ok=True)
            side.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in skipped), encoding="utf-8")
            print(f"laser bon: skipped {len(skipped)} bad row(s) of {args.input}; listed in {side}", file=sys.stderr)
        if not rows:
            return fail(f"{args.input} has no usable rows")
        if out.exists() and not args.resume:
            raise BonError(f"--out {out} already exists; pass --resume to continue it, or choose another path")
        if args.prior < 0:
            raise BonError(f"--prior must be >= 0 (held-out rows), got {args.prior}")
        if args.prior and args.router:
            raise BonError("--prior teaches a fresh router: with --router the trained router is used as it is")
        if args.prior and (args.policy or args.rms) and not args.validation:
            raise BonError("--prior with your own --policy or --rms needs --validation: held-out rows of your task "
                           "(the default ones are the embedded world's)")
        if args.validation and not args.prior:
            raise BonError("--validation is read by --prior only: add --prior ROWS, or leave --validation out")
        if args.prior and (args.strategy or "laser").split(":")[0] != "laser":
            raise BonError(f"--prior teaches a laser router, not --strategy {args.strategy}")
        held_out = None
        if args.validation:  # read before any model loads: a bad file is told at once
            held_out = load_jsonl(args.validation, answer_format=args.answer_format)[0]
            if not held_out:
                raise BonError(f"--validation {args.validation} has no rows")
        runner, setup = build_runner(settings, policy=args.policy, rms=args.rms, strategy=args.strategy,
                                     router=args.router, engine=args.engine)
        try:
            if args.prior and not (args.resume and state_path(out).exists()):  # a resume has the prior in its state
                prior = learn_bon_prior(runner, setup, args.prior, held_out)
                print(f"[laser bon] offline prior: {prior['informative']} informative of {prior['prompts']} held-out "
                      f"rows, {prior['rm_forward']} RM passes", file=sys.stderr)
            if not args.quiet:
                mode = "frozen" if feedback == "none" else f"online, {feedback} feedback"
                print(f"[laser bon] policy {setup.policy}; reward models {', '.join(runner.rms)}; strategy "
                      f"{runner.strategy.name} ({mode})" + (f"; router {setup.router.checkpoint}" if setup.router
                                                              else ""), file=sys.stderr)
            summary = run_bon(runner, rows, out, resume=args.resume, progress=not args.quiet)
        finally:
            runner.engine.close()
    except (BonError, ConfigError, DatasetError, FileNotFoundError) as e:
        return fail(str(e))
    except KeyboardInterrupt:
        print(f"laser bon: interrupted; finished rows are in {args.out}; add --resume to continue", file=sys.stderr)
        return 130
    summary["skipped_rows"] = len(skipped)
    print(format_summary(summary))
    if skipped:
        print(f"{len(skipped)} bad input row(s) skipped: {side}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `laser`."""
    ap = argparse.ArgumentParser(prog="laser", description=__doc__)
    ap.add_argument("--version", action="version", version=f"laser {__version__}")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("policies", help="list the bandit policies usable as routers, with their parameters")
    p.set_defaults(func=_policies)
    p = sub.add_parser("build-assets", help="build the embedded world (tiny policy, judge LMs, a length-hacked RM)",
                       description="Build the embedded default world into the cache, or find it there. "
                                   "Default cache: $LASER_ASSETS_DIR, else ~/.cache/laser/assets.")
    p.add_argument("--cache-dir", default=None,
                   help="where to build (default: $LASER_ASSETS_DIR or ~/.cache/laser/assets)")
    p.add_argument("--quick", action="store_true",
                   help="the reduced two-domain world used by the tests (about two minutes)")
    p.add_argument("--recipe", default=None, metavar="WORLD.yaml",
                   help="build the world this recipe describes (see configs/worlds/; default: the built-in one)")
    p.add_argument("--seed", type=int, default=None,
                   help="seed of the task suite and of every training run (default 0, or the recipe's)")
    p.add_argument("--force", action="store_true", help="rebuild even if the cache holds this recipe")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_build_assets)
    p = sub.add_parser("data", help="GSM8K / StrategyQA / MMLU as the train, validation and test JSONL a run reads",
                       description="Read published datasets (the hub, or a local copy: a save_to_disk directory "
                                   "or parquet files named by split) with their presets and write "
                                   "<out>/train.jsonl, validation.jsonl and test.jsonl, mixed in the order given. "
                                   "A dataset without a validation split gives a seeded share of its training "
                                   "rows; no prompt is in two splits.")
    p.add_argument("datasets", nargs="+", choices=["gsm8k", "strategyqa", "mmlu"], metavar="DATASET",
                   help="gsm8k, strategyqa, mmlu (the paper's three)")
    p.add_argument("--out", required=True, help="directory for the three JSONL files (e.g. data/paper)")
    p.add_argument("--source", action="append", metavar="DATASET=PATH",
                   help="read DATASET from a local copy instead of the hub (repeatable)")
    p.add_argument("--validation-fraction", type=float, default=0.1,
                   help="share of the training rows held out where a dataset has no validation split (0.1)")
    p.add_argument("--seed", type=int, default=0, help="seed of that held-out share (0)")
    p.add_argument("--limit", type=int, default=None, help="at most this many rows per split and dataset")
    p.set_defaults(func=_data)
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
    p = sub.add_parser("stop", help="stop the run writing a run directory, after its round in progress (checkpointed)",
                       description="Send SIGTERM to the process that holds RUN_DIR's lock: the run completes the "
                                   "round in progress, checkpoints it and exits; `laser train --resume RUN_DIR` "
                                   "continues it. With --now, a second signal follows: the run stops at once and "
                                   "the round in progress is dropped (the last checkpoint stays as it was).")
    p.add_argument("run_dir", help="the run directory (runs/<name>)")
    p.add_argument("--now", action="store_true", help="stop at once, dropping the round in progress")
    p.add_argument("--wait", type=float, default=600.0,
                   help="seconds to wait for the run to exit (default 600; 0: do not wait)")
    p.set_defaults(func=_stop)
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
    p.add_argument("--jobs", type=int, default=2 if len(os.sched_getaffinity(0)) >= 2 else 1,
                   help="runs in parallel, each on its share of the cores (default 2 on a machine with 2 or more)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_demo)
    p = sub.add_parser("bench", help="every strategy x seeds on the embedded default: CIs, cost, plots",
                       description="Train LASeR (kernel UCB, LinUCB, LinTS, Exp3), random, sequential, three "
                                   "ensembles, every single RM, the baselines that read LASeR's validation labels "
                                   "and the oracle for several seeds (finished runs "
                                   "reused, interrupted ones resumed), then write report.md, results.json and "
                                   "plots under benchmarks/results/<date>-<name>/.")
    p.add_argument("--quick", action="store_true", help="1 seed, 16 rounds: about 7 minutes on 2 cores")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds (default 0 1 2 3 4; --quick: 0)")
    p.add_argument("--strategies", nargs="+", default=None,
                   help="default: laser laser:linucb laser:lints laser:exp3 random sequential ensemble:mean "
                        "ensemble:worst_case ensemble:uncertainty_weighted singles single:auto ensemble:val_weighted "
                        "static:by_domain soup:uniform oracle "
                        "(singles = single:<rm> for every RM; soup:uniform = their rewarded soup, no training)")
    p.add_argument("--jobs", type=int, default=2 if len(os.sched_getaffinity(0)) >= 2 else 1,
                   help="runs in parallel, each on its share of the cores (default 2: 1.25x faster than one at a "
                        "time on 2 cores)")
    p.add_argument("--config", default=None, help="base run config (default: the built-in defaults)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value (repeatable)")
    p.add_argument("--name", default=None, help="name of the results folder (default strategies, or quick)")
    p.add_argument("--runs", default=None, help="where the runs go (default runs/bench-<name>)")
    p.add_argument("--out", default=None, help="results folder (default benchmarks/results/<date>-<name>)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_bench, argv=None)
    p = sub.add_parser("soup", help="rewarded soups: interpolate finished runs' policies and evaluate each mix",
                       description="Mix the final policies of runs that started from one policy (one per reward "
                                   "model, say), theta = sum_k lambda_k theta_k, evaluate each soup on the test "
                                   "split as the runs evaluate, and write soup.md, soup.json and soup.png.")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="finished run directories (at least two)")
    p.add_argument("--weights", default="uniform",
                   help="uniform, grid (every point of the simplex at --step) or l1,l2,... (one weight per run, "
                        "summing to 1); default uniform")
    p.add_argument("--step", type=float, default=0.25, help="grid spacing of --weights grid (default 0.25)")
    p.add_argument("--out", default=None, help="folder of the results (default: beside the first run, "
                                               "soup-<weights>)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_soup)
    p = sub.add_parser("bon", help="best-of-n: sample n responses per prompt, let the router pick the RM that judges",
                       description="Sample --n responses per prompt with the policy, route each prompt to a reward "
                                   "model (or several) by --strategy, keep the best-scored response. Streams one JSONL "
                                   "row per prompt to --out as it goes.")
    p.add_argument("--input", required=True, help="prompts JSONL: 'prompt', optional 'id', 'answer', 'domain'")
    p.add_argument("--out", required=True, help="output JSONL (one row per prompt, appended as batches finish)")
    p.add_argument("--policy", default=None, help="policy directory (default: the router run's trained policy, "
                                                  "else the embedded policy)")
    p.add_argument("--rms", default=None, help="reward models: embedded[:judges|classifiers], a YAML file, or "
                                               "name=[kind:]path,... (default: the router run's, else embedded)")
    p.add_argument("--strategy", default=None, help="laser[:<bandit>], single:<rm>, random, ensemble:<aggregator>, "
                                                    "sequential, oracle (default: the router run's, else laser)")
    p.add_argument("--router", default=None, metavar="RUN_DIR", help="reuse the router trained by laser train in "
                                                                     "RUN_DIR (its newest checkpoint)")
    from laser.config import BON_FEEDBACK, BonSettings

    p.add_argument("--feedback", choices=BON_FEEDBACK, default=None,
                   help="online learning of a laser router: nll (chosen response's mean token log-prob), gold "
                        "(its correctness; rows need 'answer') or none (frozen). Default: none with --router, nll "
                        "for a fresh laser router")
    _settings_flags(p, BonSettings, {"n": "responses sampled per prompt", "temperature": "sampling temperature",
                                     "top_p": "nucleus sampling", "max_new_tokens": "longest response, in tokens",
                                     "batch_size": "prompts per routing step (an online router learns after each)",
                                     "seed": "sampling seed",
                                     "keep_candidates": "write every candidate with its score"})
    p.add_argument("--engine", choices=["auto", "vllm", "hf"], default=None, help="generation engine (default auto)")
    p.add_argument("--prior", type=int, default=0, metavar="ROWS",
                   help="a fresh laser router first learns from ROWS held-out rows (--validation, else the run "
                        "config's validation split), every RM scoring the policy's samples of each: an offline prior "
                        "(0: none)")
    p.add_argument("--validation", default=None, help="held-out rows for --prior (JSONL, gold answers or "
                                                      "chosen/rejected)")
    p.add_argument("--answer-format", default="exact", help="checker for rows without answer_format (default exact)")
    p.add_argument("--resume", action="store_true", help="continue --out: skip the rows already in it")
    p.add_argument("--skip-bad-rows", action="store_true",
                   help="skip unusable input rows (listed in <out>.skipped.jsonl) instead of stopping")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_bon)
    p = sub.add_parser("serve-rms", help="serve sequence-classifier RMs, one vLLM pooling server each",
                       description="Start one vLLM pooling server per reward model (kind: hf) of a run config or "
                                   "an RM list, wait until each answers, print the URLs and a reward_models: block "
                                   "of kind: remote entries to paste, and stop them all on Ctrl-C or SIGTERM.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", default=None, help="a run config: serve its models.reward_models")
    src.add_argument("--rms", default=None,
                     help="embedded:classifiers, a YAML file ({name: {kind, path}}), or name=path,name=path")
    p.add_argument("--only", nargs="+", default=None, metavar="NAME", help="serve only these RMs")
    p.add_argument("--port", type=int, default=8100, help="port of the first server; the next ones follow (8100)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1; 0.0.0.0 for a cluster)")
    p.add_argument("--log-dir", default="runs/serve-rms", help="one log file per server (runs/serve-rms)")
    p.add_argument("--timeout", type=float, default=600, help="seconds to wait for every server to answer (600)")
    p.set_defaults(func=_serve_rms)
    p = sub.add_parser("serve-router", help="one reward endpoint that routes each query to one RM (OpenRLHF, verl)",
                       description="Serve a run config's reward models behind one OpenRLHF-style reward endpoint "
                                   "that routes each query to one RM by the policy's context of its prompt, and "
                                   "learns from held-out samples only (docs/integrations.md).")
    p.add_argument("--config", required=True, help="a run config: its reward models, policy (contexts) and router")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    p.add_argument("--validation", default=None,
                   help="held-out rows (JSONL, gold answers or chosen/rejected); default: the config's split")
    p.add_argument("--state", default=None, help="the router's state file: read at start, saved as it serves")
    p.add_argument("--init-from", default=None, help="a run's checkpoint directory: start from its trained router")
    p.add_argument("--prior", type=int, default=0, metavar="ROWS",
                   help="a fresh router first learns from ROWS held-out rows, every RM scoring the policy's samples "
                        "of each (an offline prior; 0: none; ignored with --init-from or an existing --state)")
    p.add_argument("--save-every", type=int, default=100, help="save the state every this many requests (100)")
    p.add_argument("--port", type=int, default=8000, help="port (8000; 0: any free port)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1; 0.0.0.0 for a cluster)")
    p.set_defaults(func=_serve_router)
    p = sub.add_parser("plan", help="memory per process and FLOPs per round of a run config (no model is loaded)",
                       description="Read each model's config.json (a local directory, --model-config, or the paper's "
                                   "models, known here) and print, per process: the policy's weights, LoRA, optimizer "
                                   "state, DPO reference, the update's activations, the engine's weights and KV "
                                   "cache, each reward model; the total of each stage of a round against the GPU, and "
                                   "what would make it fit; then the FLOPs of a round per strategy. Exits 1 when it "
                                   "does not fit.")
    p.add_argument("--config", default=None, help="YAML run config (default: every default)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value (repeatable)")
    p.add_argument("--gpus", type=int, default=1, help="GPUs (one process each under DDP; default 1)")
    p.add_argument("--gpu-memory", default=None, metavar="SIZE", help="memory of each GPU, e.g. 80GiB (no verdict "
                                                                          "without it)")
    p.add_argument("--processes", type=int, default=None, help="processes of the launch (default: one per GPU)")
    p.add_argument("--cpu", action="store_true", help="plan for the host instead (float32, the engine's kv_cache_mb)")
    p.add_argument("--prompt-tokens", type=int, default=None,
                   help="tokens of a rendered prompt (default: measured on the training prompts, else 256)")
    p.add_argument("--completion-tokens", type=int, default=None,
                   help="tokens of a completion (default: round.max_new_tokens, the longest)")
    p.add_argument("--model-config", action="append", metavar="MODEL=CONFIG.json",
                   help="the config.json of a model the run config names (repeatable)")
    p.add_argument("--json", action="store_true", help="print the plan as JSON (bytes and FLOPs)")
    p.set_defaults(func=_plan)
    return ap


def _settings_flags(p: argparse.ArgumentParser, model, helps: dict[str, str]) -> None:
    """A `--flag` for each field of a settings model named in `helps`, its type and default taken from the model
    (the default lives in one place; the model validates the values)."""
    for name, text in helps.items():
        field = model.model_fields[name]
        flag = "--" + name.replace("_", "-")
        if isinstance(field.default, bool):
            p.add_argument(flag, action="store_true", default=field.default, help=text)
        else:
            p.add_argument(flag, type=type(field.default), default=field.default,
                           help=f"{text} (default {field.default})")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `laser` console script."""
    ap = build_parser()
    args = ap.parse_args(argv)
    if getattr(args, "argv", False) is None and argv is not None:
        args.argv = list(argv[1:])  # the command line as given, for the record in a benchmark report
    if not getattr(args, "func", None):
        ap.print_help()
        return 2
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
