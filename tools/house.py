"""Figures of the code base anyone can reproduce: README length, lines per module, import cycles, local imports.

    python tools/house.py            # a report on stdout
    python tools/house.py --check    # exit 1 if the package-level imports of laser/ or bandits/ have a cycle,
                                     # or bandits/ imports anything beyond numpy, scipy and the standard library

Import cycles are found on module-level imports only (a function-local import runs when it is called and
cannot make an import fail); `TYPE_CHECKING` blocks are skipped. Pure standard library: it reads the
sources, it imports nothing of the project.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("laser", "bandits")
BANDITS_MAY_IMPORT = {"numpy", "scipy"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(node: ast.ImportFrom, mod: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = mod.split(".") if is_package else mod.split(".")[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or \
        (isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def imports(path: Path, modules: set[str]) -> tuple[set[str], int, set[str]]:
    """(project modules imported at module level, number of function-local import statements, top-level
    packages imported anywhere)."""
    mod = module_name(path)
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(), filename=str(path))
    top: set[str] = set()
    external: set[str] = set()
    local = 0

    def targets(node) -> list[str]:
        if isinstance(node, ast.Import):
            return [a.name for a in node.names]
        base = _resolve(node, mod, is_package)
        # `from pkg import sub` imports the submodule pkg.sub when there is one.
        return [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]

    def visit(node, in_function: bool) -> None:
        nonlocal local
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                names = targets(child)
                external.update(n.split(".")[0] for n in names if n)
                if in_function:
                    local += 1
                else:
                    for n in names:
                        while n and n not in modules and "." in n:
                            n = n.rsplit(".", 1)[0]
                        if n in modules and n != mod:
                            top.add(n)
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(tree, False)
    return top, local, external


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def survey() -> dict:
    files = sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))
    modules = {module_name(p) for p in files}
    graph: dict[str, set[str]] = {}
    local_by_module: dict[str, int] = {}
    external_by_package: dict[str, set[str]] = defaultdict(set)
    lines: dict[str, int] = {}
    for p in files:
        mod = module_name(p)
        graph[mod], local_by_module[mod], ext = imports(p, modules)
        external_by_package[mod.split(".")[0]].update(ext)
        lines[mod] = len(p.read_text().splitlines())
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    bandits_ext = sorted(external_by_package["bandits"] - stdlib - BANDITS_MAY_IMPORT - {"bandits"})
    return {"readme_chars": len((ROOT / "README.md").read_text()),
            "docs": {p.name: len(p.read_text()) for p in sorted((ROOT / "docs").glob("*.md"))},
            "lines": lines, "cycles": cycles(graph), "local_imports": local_by_module,
            "bandits_imports_beyond_numpy_scipy": bandits_ext}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 on an import cycle or a bandits/ dependency")
    ap.add_argument("--top", type=int, default=15, help="how many of the longest modules to list")
    args = ap.parse_args(argv)
    s = survey()
    print(f"README.md: {s['readme_chars']:,} characters; docs/: {len(s['docs'])} pages, "
          f"{sum(s['docs'].values()):,} characters")
    lines = s["lines"]
    print(f"modules: {len(lines)}, {sum(lines.values()):,} lines; the {args.top} longest:")
    for mod, n in sorted(lines.items(), key=lambda kv: -kv[1])[:args.top]:
        print(f"  {n:5d}  {mod}")
    local = s["local_imports"]
    print(f"function-local import statements: {sum(local.values())} in {sum(1 for v in local.values() if v)} "
          "modules; the most:")
    for mod, n in sorted(local.items(), key=lambda kv: -kv[1])[:8]:
        if n:
            print(f"  {n:5d}  {mod}")
    print(f"module-level import cycles: {len(s['cycles'])}")
    for c in s["cycles"]:
        print("  " + " <-> ".join(c))
    print("bandits/ imports beyond numpy, scipy and the standard library: "
          f"{', '.join(s['bandits_imports_beyond_numpy_scipy']) or 'none'}")
    if args.check and (s["cycles"] or s["bandits_imports_beyond_numpy_scipy"]):
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
