"""How `make test-slow` spreads the slow tier over two pytest-xdist workers: a module's tests stay on one worker
(its module fixtures start once), and every module whose tests use the shared live stack (the `live` fixture,
tests/e2e/conftest.py) forms one scope, so one stack starts and the modules run on it in collection order
(tests/e2e/test_stack.py first, as on one worker).

Scopes start dearest first (`dearest_first`): the shared stack's, then the other e2e modules (each starts a stack
or servers of its own), then the rest in xdist's order (most tests first), so the last scopes left to run beside
each other are short ones.

The modules that use `live` are found by reading their source (a test or fixture with a `live` parameter),
since xdist's controller sees node ids only; `check_stack_users` fails the run if a collected test uses `live`
from a module this scan missed.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping, Sized
from functools import cache
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
E2E = REPO / "tests" / "e2e"
STACK_SCOPE = "tests/e2e (the shared live stack)"
FIXTURE = "live"


@cache
def stack_modules(folder: Path = E2E) -> frozenset[str]:
    """Node-id paths (tests/e2e/test_x.py) of the modules with a test or fixture taking a `live` parameter."""
    found = set()
    for path in sorted(folder.glob("test_*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if _asks_for_live(node):
                found.add(path.relative_to(REPO).as_posix())
                break
    return frozenset(found)


def _asks_for_live(node: ast.AST) -> bool:
    """A test or fixture (not a helper that happens to name its argument `live`) with a `live` parameter."""
    if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        return False
    is_fixture = any("fixture" in ast.unparse(d) for d in node.decorator_list)
    if not (node.name.startswith("test") or is_fixture):
        return False
    return any(a.arg == FIXTURE for a in [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs])


def scope_of(nodeid: str) -> str:
    module = nodeid.split("::", 1)[0]
    return STACK_SCOPE if module in stack_modules() else module


def cost_rank(scope: str) -> int:
    """How dear a scope is to run, roughly: 0 the shared stack's modules, 1 another e2e module, 2 the rest."""
    return 0 if scope == STACK_SCOPE else 1 if scope.startswith(E2E.relative_to(REPO).as_posix() + "/") else 2


def dearest_first(queue: Mapping[str, Sized]) -> str:
    """The scope to start next from `queue` (scope -> its tests, in xdist's order): the lowest cost rank, and in
    a rank the first in the queue."""
    return min(queue, key=cost_rank)


def check_stack_users(items: list[Any]) -> list[str]:
    """Tests that use the live stack from a module `stack_modules` does not list (they would start a second
    stack on the other worker)."""
    return [item.nodeid for item in items if _uses_live_fixture(item) and item.nodeid.split("::", 1)[0] not in stack_modules()]


def _uses_live_fixture(item: Any) -> bool:
    """The test asks for the `live` fixture (a parametrized argument that happens to be called `live` is not it)."""
    callspec = getattr(item, "callspec", None)
    return FIXTURE in getattr(item, "fixturenames", ()) and FIXTURE not in (callspec.params if callspec else {})


def shared_stack_scheduling(config: Any, log: Any) -> Any:
    """xdist's `loadscope` scheduler with the modules that share the live stack as one scope. (xdist is imported
    here, by the controller only: imported by every conftest load it would be loaded before its plugin is.)"""
    from xdist.scheduler import LoadScopeScheduling

    class SharedStackScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return scope_of(nodeid)

        def _assign_work_unit(self, node: Any) -> None:
            self.workqueue.move_to_end(dearest_first(self.workqueue), last=False)
            super()._assign_work_unit(node)

    return SharedStackScheduling(config, log)
