"""How often two reward models prefer the same candidate of a pair: their agreement, per domain."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import combinations

import numpy as np

from .base import RewardError


def preference_agreement(scores: Mapping[str, np.ndarray], groups: Sequence, domains: Sequence[str] | None = None
                         ) -> dict[tuple[str, str], dict[str, tuple[float, int]]]:
    """For each pair of RMs and each domain: (agreement, pairs counted).

    `scores[rm]` holds one score per candidate; `groups[i]` says which prompt candidate i answers (only
    candidates of the same prompt are compared). A candidate pair counts for two RMs when both have a
    strict preference (no tie, no NaN); the agreement is the fraction of counted pairs where they prefer
    the same candidate. `domains[i]` is candidate i's domain (all "all" when None); the key "all" always
    pools every domain.
    """
    names = list(scores)
    n = len(groups)
    for rm in names:
        if len(scores[rm]) != n:
            raise RewardError(f"scores[{rm!r}] has {len(scores[rm])} values for {n} candidates")
    if domains is not None and len(domains) != n:
        raise RewardError(f"domains has {len(domains)} values for {n} candidates")
    by_group: dict = {}
    for i, g in enumerate(groups):
        by_group.setdefault(g, []).append(i)
    ii, jj = [], []
    for idx in by_group.values():
        for i, j in combinations(idx, 2):
            ii.append(i)
            jj.append(j)
    ii, jj = np.array(ii, dtype=int), np.array(jj, dtype=int)
    dom = np.array(["all"] * n if domains is None else list(domains), dtype=object)[ii] if len(ii) else np.array([])
    sign = {rm: np.sign(np.asarray(scores[rm], dtype=np.float64)[ii] - np.asarray(scores[rm], dtype=np.float64)[jj])
            for rm in names}
    out: dict[tuple[str, str], dict[str, tuple[float, int]]] = {}
    for a, b in combinations(names, 2):
        sa, sb = sign[a], sign[b]
        counted = (sa != 0) & (sb != 0) & np.isfinite(sa) & np.isfinite(sb)
        row: dict[str, tuple[float, int]] = {}
        for d in ["all", *sorted({x for x in dom if x != "all"})]:
            m = counted & ((dom == d) if d != "all" else True)
            k = int(m.sum())
            row[d] = (float((sa[m] == sb[m]).mean()) if k else float("nan"), k)
        out[(a, b)] = row
    return out


def format_agreement(table: Mapping[tuple[str, str], Mapping[str, tuple[float, int]]]) -> str:
    """The agreement table as markdown: one row per RM pair, one column per domain."""
    if not table:
        return "(fewer than two reward models)"
    cols = list(next(iter(table.values())))
    lines = ["| RM pair | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for (a, b), row in table.items():
        lines.append(f"| {a} / {b} | " + " | ".join(f"{row[c][0]:.2f} ({row[c][1]})" for c in cols) + " |")
    return "\n".join(lines)
