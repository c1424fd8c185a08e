"""The one live stack every e2e module shares (started on first use, stopped at the end of the session)."""

from __future__ import annotations

import pytest

from tests.support.stack import Live, live_stack


@pytest.fixture(scope="module")
def live(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Live:
    return live_stack(request, tmp_path_factory)
