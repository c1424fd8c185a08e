"""The one task decorator every stage uses: no result caching, and for tasks that talk to MLflow or
over HTTP, retries on transient failures (a server restarting, a busy SQLite store, a 503), never on
an error the user caused (bad data, bad config), which would only fail the same way again."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from prefect import task
from prefect.cache_policies import NONE

from mlops.core.errors import MLOpsError

F = TypeVar("F", bound=Callable[..., Any])

IO_RETRIES = 2
IO_RETRY_DELAYS = [1.0, 5.0]
# exception class names (anywhere in the class hierarchy) that mean "try again": connection and
# timeout errors of the standard library, requests and httpx
TRANSIENT_NAMES = frozenset({"ConnectionError", "TimeoutError", "Timeout", "TimeoutException", "TransportError",
                             "RemoteProtocolError"})
TRANSIENT_STATUS = frozenset({429, 502, 503, 504})
TRANSIENT_MLFLOW_CODES = frozenset({"TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED"})


def is_transient(exc: BaseException) -> bool:
    """Whether a failure may pass by itself: I/O trouble yes, a user's error or a bug no."""
    if isinstance(exc, MLOpsError):
        return False
    if any(cls.__name__ in TRANSIENT_NAMES for cls in type(exc).__mro__):
        return True
    response = getattr(exc, "response", None)
    if getattr(response, "status_code", None) in TRANSIENT_STATUS:
        return True
    if type(exc).__name__ == "MlflowException":
        code = str(getattr(exc, "error_code", ""))
        return code in TRANSIENT_MLFLOW_CODES or "database is locked" in str(exc)
    return False


def _retry_if_transient(_task: Any, _task_run: Any, state: Any) -> bool:
    exc = state.result(raise_on_failure=False)
    return isinstance(exc, BaseException) and is_transient(exc)


def stage_task(name: str, *, io: bool = False, **options: Any) -> Callable[[F], F]:
    """`@task` with the project's defaults; `io=True` for tasks that read or write MLflow or call HTTP."""
    settings: dict[str, Any] = {"name": name, "cache_policy": NONE}
    if io:
        settings |= {"retries": IO_RETRIES, "retry_delay_seconds": IO_RETRY_DELAYS,
                     "retry_condition_fn": _retry_if_transient}
    return task(**(settings | options))  # type: ignore[return-value]
