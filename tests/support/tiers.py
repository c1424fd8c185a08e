"""The two test tiers, read from the Makefile: `make test` runs FAST_TIER, `make test-slow` runs SLOW_TIER,
`make test-all` runs both. Every test must fall in exactly one of them, so nothing drops out of CI."""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import cache
from pathlib import Path

from _pytest.mark.expression import Expression

REPO = Path(__file__).resolve().parents[2]
TIER_NAMES = ("FAST_TIER", "SLOW_TIER")


@cache
def tier_expressions(makefile: Path = REPO / "Makefile") -> dict[str, str]:
    """The `-m` expression of each tier, as the Makefile defines it (`FAST_TIER := ...`)."""
    text = makefile.read_text()
    found = {}
    for name in TIER_NAMES:
        match = re.search(rf"^{name}\s*:=\s*(.+?)\s*$", text, re.MULTILINE)
        if match is None:
            raise ValueError(f"{makefile} does not define {name} := <marker expression>")
        found[name] = match.group(1)
    return found


def tiers_of(markers: set[str], expressions: dict[str, str] | None = None) -> list[str]:
    """The tiers whose marker expression selects a test carrying `markers` (pytest's own `-m` evaluation)."""
    expressions = expressions or tier_expressions()
    return [name for name, expr in expressions.items()
            if Expression.compile(expr).evaluate(lambda ident, **_: ident in markers)]


def tier_problems(tests: Iterable[tuple[str, set[str]]], expressions: dict[str, str] | None = None) -> list[str]:
    """One line per test (node id, marker names) that is in no tier or in both, or an e2e module's test without `e2e`."""
    problems = []
    for nodeid, markers in tests:
        tiers = tiers_of(markers, expressions)
        if len(tiers) != 1:
            problems.append(f"{nodeid}: in {len(tiers)} tiers ({', '.join(tiers) or 'none'}), markers {sorted(markers)}")
        if nodeid.startswith("tests/e2e/") and "e2e" not in markers:
            problems.append(f"{nodeid}: under tests/e2e/ but not marked e2e (it would run in the fast tier)")
    return problems
