"""The one live stack every e2e module shares (started on first use, stopped at the end of the session)."""

from __future__ import annotations

import pytest

from tests.support.stack import Live, live_stack


@pytest.fixture(scope="module")
def live(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Live:
    return live_stack(request, tmp_path_factory)


FIRST = "test_stack.py"  # its first tests check a fresh stack (no run, no champion yet)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run tests/e2e/test_stack.py before the other e2e modules that share the stack; the rest keep their order."""
    e2e = [i for i, item in enumerate(items) if item.path.parent.name == "e2e"]
    ordered = sorted((items[i] for i in e2e), key=lambda item: item.path.name != FIRST)
    for i, item in zip(e2e, ordered, strict=True):
        items[i] = item
