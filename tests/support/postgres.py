"""The production profile's tests need Debian's postgresql package: off CI they skip with a reason naming it,
under CI (`.ci/run` installs it and sets CI) they fail."""

from __future__ import annotations

import os

import pytest

from mlops.stack.options import StackError
from mlops.stack.postgres import find_bin_dir


def require_postgresql() -> None:
    """Skip (fail under CI) when the PostgreSQL server binaries are not installed."""
    try:
        find_bin_dir(os.environ)
    except StackError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI must have PostgreSQL (.ci/run installs it): {exc}")
        pytest.skip(f"PostgreSQL is not installed here ({exc}); `apt-get install postgresql` or run .ci/run")
