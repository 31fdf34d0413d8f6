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
# Frameworks that take seconds to import or are optional: a function that needs one imports it, so that
# `laser --help`, reading a config and the light commands start without them.
HEAVY = {"torch", "transformers", "trl", "vllm", "datasets", "peft", "accelerate", "safetensors", "wandb",
         "matplotlib", "tensorboard", "scipy.stats", "bitsandbytes"}
# A module whose function-local imports are its design: the CLI imports each command's modules when that
# command runs, so that `laser --help` and every command's --help start without numpy, pydantic or torch.
DISPATCH = {"laser.cli"}
# The bottom layer: its few function-local imports check a value against a higher layer (a strategy name,
# a checker) when a config is validated, so that the config schema depends on nothing above it.
BOTTOM = {"laser.config"}


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


def imports(path: Path, modules: set[str]) -> tuple[set[str], int, set[str], list[list[str]], set[str]]:
    """(project modules imported at module level, number of function-local import statements, top-level
    packages imported anywhere, what each function-local import statement imports, the modules outside the
    project imported at module level with their parents: `scipy.stats` -> scipy, scipy.stats)."""
    mod = module_name(path)
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(), filename=str(path))
    top: set[str] = set()
    external: set[str] = set()
    local = 0
    deferred: list[list[str]] = []
    top_external: set[str] = set()

    def targets(node) -> list[str]:
        if isinstance(node, ast.Import):
            return [a.name for a in node.names]
        base = _resolve(node, mod, is_package)
        # `from pkg import sub` imports the submodule pkg.sub when there is one (kept whole outside the project,
        # where HEAVY may name a submodule).
        return [f"{base}.{a.name}" if f"{base}.{a.name}" in modules or not _project(base, modules) else base
                for a in node.names]

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
                    deferred.append([_project(n, modules) or n for n in names if n])
                else:
                    for n in names:
                        inside = _project(n, modules)
                        if inside and inside != mod:
                            top.add(inside)
                        elif not inside and n:
                            top_external.update(_prefixes(n))
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(tree, False)
    return top, local, external, deferred, top_external - set(PACKAGES)


def _project(name: str, modules: set[str]) -> str | None:
    """The project module that an imported name lives in, or None for a module outside the project."""
    while name and name not in modules and "." in name:
        name = name.rsplit(".", 1)[0]
    return name if name in modules else None


def _prefixes(name: str) -> set[str]:
    """`a.b.c` -> {a, a.b, a.b.c}: an external import as HEAVY may name it."""
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts) + 1)}


def closure(graph: dict[str, set[str]], start: str) -> set[str]:
    """Every project module that importing `start` runs (module-level imports, transitively), `start` included."""
    seen, todo = set(), [start]
    while todo:
        v = todo.pop()
        if v in seen:
            continue
        seen.add(v)
        # importing a.b.c runs a/__init__ and a/b/__init__ first
        todo += [p for p in _prefixes(v) if p in graph and p not in seen]
        todo += [w for w in graph.get(v, ()) if w not in seen]
    return seen


def classify_local(mod: str, deferred: list[list[str]], graph: dict[str, set[str]],
                   external: dict[str, set[str]]) -> dict[str, int]:
    """Why each function-local import of `mod` is local: `heavy` (it loads a framework of HEAVY, itself or
    through the project modules it imports at module level), `cycle` (at module level it would close an
    import cycle through `mod`), `dispatch` (in a module of DISPATCH), `upward` (in the bottom layer,
    BOTTOM, checking a value against a layer above it), or `other` (none of these: it could move to the
    top of the module)."""
    out = {"dispatch": 0, "heavy": 0, "cycle": 0, "upward": 0, "other": 0}
    for names in deferred:
        reach: set[str] = set()
        for n in names:
            reach |= closure(graph, n) if n in graph else {n}
        loads = {e for m in reach for e in (external.get(m, set()) if m in graph else _prefixes(m))}
        out["dispatch" if mod in DISPATCH else "heavy" if loads & HEAVY else "cycle" if mod in reach
            else "upward" if mod in BOTTOM else "other"] += 1
    return out


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


def _function_lengths(path: Path, mod: str) -> dict[str, int]:
    """Lines of every function and method of a module (nested ones under their parent's name)."""
    out: dict[str, int] = {}

    def visit(node, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}.{child.name}"
                if not isinstance(child, ast.ClassDef):
                    out[name] = child.end_lineno - child.lineno + 1
                visit(child, name)

    visit(ast.parse(path.read_text()), mod)
    return out


def survey() -> dict:
    files = sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))
    modules = {module_name(p) for p in files}
    graph: dict[str, set[str]] = {}
    local_by_module: dict[str, int] = {}
    external_by_package: dict[str, set[str]] = defaultdict(set)
    top_external: dict[str, set[str]] = {}
    deferred: dict[str, list[list[str]]] = {}
    lines: dict[str, int] = {}
    functions: dict[str, int] = {}  # "module.Class.function": lines
    for p in files:
        mod = module_name(p)
        functions.update(_function_lengths(p, mod))
        graph[mod], local_by_module[mod], ext, deferred[mod], top_external[mod] = imports(p, modules)
        external_by_package[mod.split(".")[0]].update(ext)
        lines[mod] = len(p.read_text().splitlines())
    why = {"dispatch": 0, "heavy": 0, "cycle": 0, "upward": 0, "other": 0}
    other_by_module: dict[str, int] = {}
    for mod in sorted(deferred):
        c = classify_local(mod, deferred[mod], graph, top_external)
        for k in why:
            why[k] += c[k]
        other_by_module[mod] = c["other"]
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    bandits_ext = sorted(external_by_package["bandits"] - stdlib - BANDITS_MAY_IMPORT - {"bandits"})
    return {"readme_chars": len((ROOT / "README.md").read_text()),
            "docs": {p.name: len(p.read_text()) for p in sorted((ROOT / "docs").glob("*.md"))},
            "lines": lines, "functions": functions, "cycles": cycles(graph), "local_imports": local_by_module,
            "local_why": why,
            "local_other": other_by_module,
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
    print(f"the {args.top} longest functions:")
    for name, n in sorted(s["functions"].items(), key=lambda kv: -kv[1])[:args.top]:
        print(f"  {n:5d}  {name}")
    local = s["local_imports"]
    print(f"function-local import statements: {sum(local.values())} in {sum(1 for v in local.values() if v)} "
          "modules; the most:")
    for mod, n in sorted(local.items(), key=lambda kv: -kv[1])[:8]:
        if n:
            print(f"  {n:5d}  {mod}")
    why = s["local_why"]
    print(f"  why local: {why['heavy']} load a heavy framework ({', '.join(sorted(HEAVY))}; directly or through "
          f"the project modules they import), {why['dispatch']} are the CLI's per-command imports, {why['upward']} "
          f"check a config value against a layer above the config, {why['cycle']} would close an import cycle, "
          f"{why['other']} for none of these reasons")
    for m, n in s["local_other"].items():
        if n:
            print(f"  {n:5d}  {m} (none of these reasons)")
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
