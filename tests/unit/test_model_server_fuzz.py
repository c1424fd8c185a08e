"""Schemathesis fuzzes every operation of the server's OpenAPI description with valid and invalid
bodies, headers and parameters: no request, however malformed, may get a 5xx.

(The cases are drawn with `operation.as_strategy` inside one test: schemathesis' pytest loaders read
pytest internals that pytest 9 renamed.)
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from mlops.core.config import ServingConfig
from mlops.serving.app import create_app
from mlops.serving.model import build_served_model
from tests.support.model_server import churn_frame, fit_pipeline

pytestmark = pytest.mark.slow

EXAMPLES = 100  # per operation and mode


class _Fixed:
    def __init__(self, m: Any) -> None:
        self.m = m

    def resolve(self) -> str:
        return self.m.version

    def load(self, version: str) -> Any:
        return self.m


@pytest.fixture(scope="module")
def api_schema() -> Any:
    pipe, contract, _ = fit_pipeline(churn_frame(800, seed=5), "churned", params={"max_iter": 20},
                                     id_column="customer_id", timestamp_column="event_time")
    served = build_served_model("churn", "1", "run-1", pipe, contract, None)
    app = create_app("churn", serving=ServingConfig(max_rows=50), log_dir=None,
                     environ={"MLOPS_SERVING_ADMIN_TOKEN": "adm"}, source=_Fixed(served))
    app.state.server.watcher.current = served  # loaded, without starting the watcher thread
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def test_schema_lists_every_route(api_schema: Any) -> None:
    ops = {(op.ok().method.upper(), op.ok().path) for op in api_schema.get_all_operations()}
    assert {("POST", "/predict"), ("POST", "/invocations"), ("GET", "/ready"), ("GET", "/metrics"),
            ("POST", "/admin/reload")} <= ops


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
def test_no_request_gets_a_server_error(api_schema: Any, mode: GenerationMode) -> None:
    seen: dict[int, int] = {}
    fuzzed = []
    for result in api_schema.get_all_operations():
        operation = result.ok()
        if mode is GenerationMode.NEGATIVE and operation.method.upper() == "GET":
            continue  # nothing in a parameterless GET to make invalid

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def fuzz(case: Any) -> None:
            response = case.call()
            seen[response.status_code] = seen.get(response.status_code, 0) + 1
            case.validate_response(response, checks=[not_a_server_error])

        fuzz()
        fuzzed.append(operation.path)
    assert {"/predict", "/invocations", "/admin/reload"} <= set(fuzzed)
    assert seen and max(seen) < 500, seen
    if mode is GenerationMode.POSITIVE:
        assert seen.get(200, 0) > 0, seen  # valid records were scored, not only rejected
    else:
        assert any(400 <= code < 500 for code in seen), seen
