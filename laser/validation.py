"""One wording for pydantic validation errors: each bad key named with what is expected (configs, recipes)."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError


def problems(error: ValidationError, example: str) -> list[str]:
    """One line per problem of `error`: the dotted key, then what is wrong (`example`: where every key is shown)."""
    lines = []
    for err in error.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            lines.append(f"{key}: unknown key (check the spelling; see {example} for every key)")
        else:
            lines.append(f"{key}: {err['msg']} (got {err.get('input')!r})")
    return lines


def read_mapping(path, error: type[Exception], missing: str) -> dict:
    """The mapping a YAML file holds; `error` (with `missing`, the sentence for a file that is not there)
    for a missing file, invalid YAML or a top level that is not a mapping."""
    path = Path(path)
    if not path.is_file():
        raise error(missing)
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise error(f"{path} is not valid YAML: {e}") from None
    if not isinstance(tree, dict):
        raise error(f"{path} must hold a mapping of keys to values, not {type(tree).__name__}")
    return tree
