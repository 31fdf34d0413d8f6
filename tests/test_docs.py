"""The front door: README and docs/ links resolve, every `laser <command>` shown exists and answers --help,
the README stays short, and its Python example imports what it names."""

import ast
import re
from pathlib import Path

import pytest

from laser.cli import main

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"```[a-z]*\n(.*?)```", re.S)
SPAN = re.compile(r"`([^`\n]+)`")
# A command starts a line or a span, or follows `$ `, `time ` or a shell operator (not a strategy list's "laser").
COMMAND = re.compile(r"(?:^\s*|[(;&|]\s*|\$\s+|\btime\s+)laser ([a-z][a-z-]*)", re.M)


def _code(text: str) -> list[str]:
    """The text of fenced blocks and inline code spans."""
    return FENCE.findall(text) + SPAN.findall(FENCE.sub("", text))


def _commands() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for page in PAGES:
        for code in _code(page.read_text()):
            for cmd in COMMAND.findall(code):
                found.setdefault(cmd, set()).add(page.name)
    return found


def test_every_relative_link_resolves():
    broken = []
    for page in PAGES:
        for target in LINK.findall(page.read_text()):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            if not (page.parent / target.split("#")[0]).exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert not broken, broken


def test_every_docs_page_is_reachable_from_the_readme():
    readme = (ROOT / "README.md").read_text()
    linked = {Path(t.split("#")[0]).name for t in LINK.findall(readme) if t.startswith("docs/")}
    assert {p.name for p in PAGES[1:]} <= linked, "add the page to the README's documentation index"


def test_the_readme_is_a_front_door():
    assert len((ROOT / "README.md").read_text()) < 10_000


def test_the_commands_found_are_real():
    found = _commands()
    assert {"train", "demo", "bench", "bon", "build-assets"} <= set(found)  # the parser saw the docs' commands


@pytest.mark.parametrize("command", sorted(_commands()))
def test_every_command_shown_answers_help(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0, f"`laser {command}` appears in {sorted(_commands()[command])} but has no --help"
    assert "usage: laser" in capsys.readouterr().out


def test_the_readme_python_example_parses_and_its_imports_exist():
    import importlib

    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert blocks
    for block in blocks:
        tree = ast.parse(block)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                module = importlib.import_module(node.module)
                for alias in node.names:
                    assert hasattr(module, alias.name), f"{node.module}.{alias.name}"
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    importlib.import_module(alias.name)
