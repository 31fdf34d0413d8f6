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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `laser`."""
    ap = argparse.ArgumentParser(prog="laser", description=__doc__)
    ap.add_argument("--version", action="version", version=f"laser {__version__}")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("policies", help="list the bandit policies usable as routers, with their parameters")
    p.set_defaults(func=_policies)
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
