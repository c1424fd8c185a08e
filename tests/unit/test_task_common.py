"""The shared task decorator retries transient I/O failures and nothing else."""

from __future__ import annotations

import httpx
import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, TEMPORARILY_UNAVAILABLE

from mlops.core.errors import DataError, RegistryError
from tasks.common import is_transient, stage_task


@pytest.mark.parametrize("exc", [
    ConnectionRefusedError("refused"),
    TimeoutError("slow"),
    httpx.ConnectError("no route"),
    httpx.HTTPStatusError("busy", request=httpx.Request("GET", "http://127.0.0.1/"),
                          response=httpx.Response(503)),
    MlflowException("(sqlite3.OperationalError) database is locked"),
    MlflowException("try later", error_code=TEMPORARILY_UNAVAILABLE),
])
def test_io_trouble_is_transient(exc: BaseException) -> None:
    assert is_transient(exc)


@pytest.mark.parametrize("exc", [
    DataError("the data has no rows"),
    RegistryError("model 'x' has no version 9"),
    ValueError("a bug"),
    MlflowException("RESOURCE_DOES_NOT_EXIST", error_code=RESOURCE_DOES_NOT_EXIST),
    httpx.HTTPStatusError("bad", request=httpx.Request("GET", "http://127.0.0.1/"), response=httpx.Response(422)),
])
def test_user_errors_and_bugs_are_not_retried(exc: BaseException) -> None:
    assert not is_transient(exc)


def test_only_io_tasks_retry() -> None:
    io = stage_task("io-thing", io=True)(lambda: None)
    plain = stage_task("plain-thing")(lambda: None)
    assert io.retries == 2 and io.retry_condition_fn is not None and io.name == "io-thing"
    assert plain.retries == 0 and plain.retry_condition_fn is None
