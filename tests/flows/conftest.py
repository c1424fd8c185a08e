from __future__ import annotations

import os
import tempfile
from unittest import mock

import pytest


@pytest.fixture(autouse=True, scope="session")
def prefect_harness():
    """One temporary Prefect server for every flow test (one per pytest worker).

    Its database starts as a copy of the migrated empty one new state folders start from
    (`mlops.core.startup.seed_prefect_database`), so the server skips the migrations: 9 s to come up
    instead of 18 s on a quiet 2-core machine. Prefect's harness names its database `prefect-test.db` in a
    folder it makes with `mkdtemp`; the copy is put there.
    """
    import prefect.testing.utilities as harness

    from mlops.core.startup import SQLITE_URL_PREFIX, seed_prefect_database

    def seeded_folder() -> str:
        folder = tempfile.mkdtemp(prefix="mlops-prefect-harness-")
        seed_prefect_database(SQLITE_URL_PREFIX + os.path.join(folder, "prefect-test.db"))
        return folder

    with mock.patch.object(harness, "mkdtemp", seeded_folder), harness.prefect_test_harness(server_startup_timeout=120):
        yield
