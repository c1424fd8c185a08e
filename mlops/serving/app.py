"""The model server's ASGI app (Starlette): scoring, MLflow's scoring protocol, health, metrics, reload.

Routes
- `POST /predict`: one record, a list of records, or {"records": [...]} -> predictions (and class
  probabilities), the model version that answered, the request id.
- `POST /invocations`: MLflow's scoring protocol (`dataframe_split`, `dataframe_records`, `inputs`,
  `instances`) -> {"predictions": [...]}, as `mlflow models serve` answers.
- `GET /health` (alive), `GET /ready`, `GET /model`, `GET /metrics`, `GET /openapi.json`;
  `POST /admin/reload` (token always required) checks the alias now.

`/ready` answers 503 until a model is loaded. Once one serves it answers 200 (the server can answer
requests, so a load balancer keeps sending them) with `"status": "ok"`, or with `"status": "degraded"`,
the reasons in `"degraded"` (a list) and `"reason"` (one line), and the header
`X-Mlops-Status: degraded` when the registry is unreachable or the alias names a version that is not
served (refused because its gate failed with no override recorded, or failing to load), so the server
answers with an older one. `/model` and `/metrics` (`mlops_model_degraded`,
`mlops_model_refused_version`, reloads with outcome `refused`) say the same.

Every request is checked against the version's data contract before scoring; a bad request gets a
4xx naming the field (malformed JSON 400, no/incorrect token 401, too large 413, not JSON 415, a
contract violation 422) and never a 5xx. Each scoring response carries `X-Request-ID` and
`X-Model-Version`.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from mlops.core.config import ServingConfig
from mlops.core.errors import SettingsError
from mlops.core.settings import configure_environment, get_settings, quiet_libraries
from mlops.serving.columns import check_records
from mlops.serving.metrics import Metrics
from mlops.serving.model import ServedModel
from mlops.serving.openapi import openapi_schema
from mlops.serving.predictlog import LogRecord, PredictionLogWriter, Redactor, hash_key_from_env, output_columns
from mlops.serving.records import RequestError, parse_json
from mlops.serving.swap import ModelSource, RegistrySource, Watcher

log = logging.getLogger("mlops.model_server")

TOKEN_ENV = "MLOPS_SERVING_TOKEN"
ADMIN_TOKEN_ENV = "MLOPS_SERVING_ADMIN_TOKEN"
SHARE_DIR_ENV = "MLOPS_SERVING_SHARE_DIR"
JSON_TYPE = re.compile(r"^application/(?:[a-z0-9.+-]+\+)?json$")
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
INLINE_ROWS = 256  # larger requests are parsed and scored in a worker thread, off the event loop
INLINE_BYTES = 256 * 1024
NUMPY = orjson.OPT_SERIALIZE_NUMPY
ROUTES = frozenset({"/predict", "/invocations", "/health", "/ready", "/model", "/metrics", "/openapi.json",
                    "/admin/reload"})


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        try:
            return orjson.dumps(content, option=NUMPY)
        except orjson.JSONEncodeError as exc:
            if "surrogate" not in str(exc):
                raise
            # text that is not valid Unicode (a lone surrogate a client sent) is shown escaped, never a 500
            return orjson.dumps(_valid_text(content), option=NUMPY)


def _valid_text(value: Any) -> Any:
    """`value` with every string made valid UTF-8 (a lone surrogate becomes its `\\udXXX` escape)."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {_valid_text(k): _valid_text(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_valid_text(v) for v in value]
    return value


def _jsonable(a: Any) -> Any:
    return a.tolist() if getattr(a, "dtype", None) is not None and a.dtype.kind in "OUSMm" else a


class ModelServer:
    """Request handling, with the model source, config, tokens and log folder injected."""

    def __init__(self, model_name: str, serving: ServingConfig, source: ModelSource, token: str | None,
                 admin_token: str | None, log_dir: Path | None, share_dir: Path | None, alias: str,
                 freeze_gc: bool = False) -> None:
        self.model_name = model_name
        self.alias = alias
        self.serving = serving
        self.max_rows = serving.max_rows
        self.max_body = serving.max_body_bytes
        self.metrics = Metrics(share_dir)
        self.share_dir = share_dir
        trigger = share_dir / "reload-request" if share_dir else None
        self.watcher = Watcher(source, serving.poll_seconds, self.metrics, trigger, on_tick=self.publish_metrics,
                               freeze_gc=freeze_gc)
        self.token = b"Bearer " + token.encode() if token else None
        self.admin_token = b"Bearer " + admin_token.encode() if admin_token else None
        self.plog: PredictionLogWriter | None = None
        if log_dir is not None and serving.log_predictions:
            redactor = Redactor(frozenset(serving.sensitive_columns), serving.sensitive_mode, hash_key_from_env())
            self.plog = PredictionLogWriter(log_dir, redactor, max_queue_rows=serving.log_queue_rows,
                                            flush_rows=serving.log_flush_rows, flush_seconds=serving.log_flush_seconds)
        import anyio

        self.limiter = anyio.CapacityLimiter(2)

    # -- plumbing -----------------------------------------------------------------------------------

    def _log_counters(self) -> dict[str, int]:
        if self.plog is None:
            return {}
        s = self.plog.stats
        return {"log_written": s.written_rows, "log_dropped": s.dropped_rows, "log_write_errors": s.write_errors,
                "log_replaced_values": s.replaced_values}

    def _gauges(self) -> dict[str, float]:
        m = self.watcher.current
        version = 0.0
        if m is not None:
            try:
                version = float(m.version)
            except ValueError:
                version = -1.0
        st = self.watcher.state
        refused = 0.0
        if st.refused is not None:
            try:
                refused = float(st.refused["version"])
            except ValueError:
                refused = -1.0
        return {"mlops_model_version": version, "mlops_model_ready": 1.0 if m else 0.0,
                "mlops_model_degraded": 1.0 if st.degraded(m.version if m else None) else 0.0,
                "mlops_model_refused_version": refused,
                "mlops_prediction_log_queued_rows": float(self.plog.stats.queued_rows if self.plog else 0)}

    def publish_metrics(self) -> None:
        self.metrics.publish(self._gauges(), self._log_counters())

    def _error(self, route: str, t0: float, exc: RequestError, headers: dict[str, str] | None = None) -> Response:
        response = JSONResponse(exc.body(), status_code=exc.status, headers=headers)  # rendered before it is counted
        self.metrics.observe(route, exc.status, time.perf_counter() - t0)
        return response

    def _check_auth(self, request: Request, expected: bytes | None) -> None:
        if expected is None:
            return
        got = request.headers.get("authorization", "").encode("latin-1", "replace")
        if not hmac.compare_digest(got, expected):
            raise RequestError(401, "missing or wrong bearer token (send 'Authorization: Bearer <token>')")

    async def _read_body(self, request: Request) -> bytes:
        headers = request.headers
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                raise RequestError(400, "Content-Length must be a non-negative integer")
            if int(length) > self.max_body:
                raise RequestError(413, f"the body is {length} bytes; the limit is {self.max_body} bytes",
                                   field="body")
        media = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if not JSON_TYPE.match(media):
            raise RequestError(415, f"Content-Type must be application/json, got '{media[:80] or 'nothing'}'",
                               field="content-type")
        if length is not None and int(length) <= 65536:
            return await request.body()
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > self.max_body:
                raise RequestError(413, f"the body exceeds the limit of {self.max_body} bytes", field="body")
        return bytes(body)

    # -- scoring --------------------------------------------------------------------------------

    def _parse_validate_score(self, m: ServedModel, body: bytes, route: str) -> tuple[Any, Any]:
        payload = parse_json(body)
        if route == "/predict":
            records = m.validator.records_from_payload(payload)
        else:
            records = m.validator.records_from_mlflow(payload)
        batch = check_records(m.validator, records, self.max_rows)
        return batch, m.score(batch)

    async def _score(self, request: Request, route: str) -> Response:
        t0 = time.perf_counter()
        rid = request.headers.get("x-request-id")
        if not rid or not REQUEST_ID.match(rid):
            rid = uuid.uuid4().hex
        m = self.watcher.current
        headers = {"x-request-id": rid}
        try:
            self._check_auth(request, self.token)
            if m is None:
                raise RequestError(503, "no model is loaded yet; see /ready")
            headers["x-model-version"] = m.version
            body = await self._read_body(request)
            if len(body) <= INLINE_BYTES:
                batch, scored = self._parse_validate_score(m, body, route)
            else:
                import anyio

                batch, scored = await anyio.to_thread.run_sync(self._parse_validate_score, m, body, route,
                                                               limiter=self.limiter)
        except RequestError as exc:
            if exc.status == 401:
                headers["www-authenticate"] = "Bearer"
            return self._error(route, t0, exc, headers)
        except ClientDisconnect:  # the client went away mid-body: nobody to answer
            self.metrics.observe(route, 499, time.perf_counter() - t0)
            return Response(status_code=400)
        except Exception:
            log.exception("scoring failed (request %s, model v%s)", rid, m.version if m else "-")
            self.metrics.observe(route, 500, time.perf_counter() - t0)
            return JSONResponse({"error": "internal error while scoring; the server log has the details",
                                 "request_id": rid}, status_code=500, headers=headers)
        preds, proba = scored.predictions, scored.probabilities
        if self.plog is not None:
            self.plog.submit(LogRecord(rid, time.time(), m.name, m.version, batch.columns,
                                       output_columns(preds, proba, m.classes), batch.n))
        if route == "/predict":
            out: dict[str, Any] = {"request_id": rid, "model": m.name, "model_version": m.version,
                                   "predictions": _jsonable(preds)}
            if proba is not None:
                out["classes"] = m.classes
                out["probabilities"] = proba
        else:
            out = {"predictions": _jsonable(preds)}
        resp = JSONResponse(out, headers=headers)
        self.metrics.observe(route, 200, time.perf_counter() - t0, batch.n)
        return resp

    async def predict(self, request: Request) -> Response:
        return await self._score(request, "/predict")

    async def invocations(self, request: Request) -> Response:
        return await self._score(request, "/invocations")

    # -- the rest -------------------------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        m = self.watcher.current
        return JSONResponse({"status": "ok", "ready": m is not None, "model": self.model_name,
                             "model_version": m.version if m else None, "state": self.watcher.state.status})

    async def ready(self, request: Request) -> Response:
        m = self.watcher.current
        if m is None:
            return JSONResponse({"ready": False, "state": self.watcher.state.status,
                                 "reason": self.watcher.state.last_error or "loading the model"},
                                status_code=503, headers={"retry-after": "1"})
        degraded = self.watcher.state.degraded(m.version)
        if degraded:
            return JSONResponse({"ready": True, "status": "degraded", "reason": "; ".join(degraded),
                                 "degraded": degraded, "model": m.name,
                                 "model_version": m.version, "alias_version": self.watcher.state.target_version},
                                headers={"x-mlops-status": "degraded"})
        return JSONResponse({"ready": True, "status": "ok", "model": m.name, "model_version": m.version},
                            headers={"x-mlops-status": "ok"})

    async def model(self, request: Request) -> Response:
        m = self.watcher.current
        st = self.watcher.state
        degraded = st.degraded(m.version if m else None)
        watch = {"alias": self.alias, "status": "degraded" if degraded else st.status,
                 "alias_version": st.target_version, "last_error": st.last_error, "refused": st.refused,
                 "registry_error": st.registry_error, "degraded": degraded,
                 "poll_seconds": self.watcher.poll_seconds, "swaps": st.swaps[-5:]}
        if m is None:
            return JSONResponse({"error": "no model is loaded yet", "model": self.model_name, "watch": watch},
                                status_code=503)
        return JSONResponse({**m.describe(), "watch": watch,
                             "prediction_log": self.plog.stats.as_dict() if self.plog else None})

    async def metrics_route(self, request: Request) -> Response:
        text = self.metrics.render(self._gauges(), self._log_counters())
        return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(openapi_schema(self.watcher.current, self.max_rows, auth=self.token is not None))

    async def reload(self, request: Request) -> Response:
        t0 = time.perf_counter()
        route = "/admin/reload"
        if self.admin_token is None:
            return self._error(route, t0, RequestError(403, f"reloading is disabled: set {ADMIN_TOKEN_ENV} (or "
                                                             f"{TOKEN_ENV}) to allow it"))
        try:
            self._check_auth(request, self.admin_token)
        except RequestError as exc:
            return self._error(route, t0, exc, {"www-authenticate": "Bearer"})
        if self.share_dir is not None:  # tell the other workers too
            (self.share_dir / "reload-request").write_text(str(time.time()))
        before = self.watcher.current.version if self.watcher.current else None
        if request.query_params.get("wait", "").lower() not in {"1", "true", "yes"}:
            self.watcher.kick()
            self.metrics.observe(route, 202, time.perf_counter() - t0)
            return JSONResponse({"status": "check requested", "serving": before}, status_code=202)
        import anyio

        ok = await anyio.to_thread.run_sync(self.watcher.check)
        after = self.watcher.current.version if self.watcher.current else None
        self.metrics.observe(route, 200, time.perf_counter() - t0)
        return JSONResponse({"ok": ok, "previous": before, "serving": after, "changed": before != after,
                             "alias_version": self.watcher.state.target_version,
                             "error": self.watcher.state.last_error})

    async def not_found(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        route = request.url.path if request.url.path in ROUTES else "other"
        self.metrics.observe(route, exc.status_code, 0.0)
        detail = exc.detail if isinstance(exc.detail, str) else "error"
        return JSONResponse({"error": detail.lower() if exc.status_code in (404, 405) else detail},
                            status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        if self.plog is not None:
            self.plog.start()
        self.watcher.start()
        try:
            yield
        finally:
            self.watcher.stop()
            if self.plog is not None:
                self.plog.close()
            self.publish_metrics()


def create_app(
    model_name: str,
    *,
    alias: str = "champion",
    tracking_uri: str | None = None,
    serving: ServingConfig | None = None,
    log_dir: str | Path | None = "default",
    share_dir: str | Path | None = None,
    source: ModelSource | None = None,
    environ: Mapping[str, str] | None = None,
    freeze_gc: bool = False,
) -> Starlette:
    """Build the server for `models:/<model_name>@<alias>`.

    Tokens come from `environ` (default: the process environment): MLOPS_SERVING_TOKEN protects the
    scoring routes when set; MLOPS_SERVING_ADMIN_TOKEN (else MLOPS_SERVING_TOKEN) protects
    /admin/reload, which is refused without one. `log_dir` is the prediction log folder (default
    `$MLOPS_HOME/predictions`; None turns logging off). `source` replaces the MLflow registry (tests).
    `freeze_gc` moves each loaded model out of the garbage collector's scans (a server process only:
    it changes the whole interpreter). The log folder and its hash key always come from the process.
    """
    process = get_settings()
    given = process if environ is None else get_settings(environ)
    serving = serving or ServingConfig()
    if log_dir == "default":
        log_dir = process.prediction_log_dir
    token = given.serving_token.get_secret_value() if given.serving_token else None
    admin = given.serving_admin_token.get_secret_value() if given.serving_admin_token else token
    if source is None:
        source = RegistrySource(model_name, alias, tracking_uri, serving.enforce_contract_ranges)
    server = ModelServer(model_name, serving, source, token, admin, Path(log_dir) if log_dir else None,
                         Path(share_dir) if share_dir else None, alias, freeze_gc)
    routes = [
        Route("/predict", server.predict, methods=["POST"]),
        Route("/invocations", server.invocations, methods=["POST"]),
        Route("/health", server.health, methods=["GET"]),
        Route("/ready", server.ready, methods=["GET"]),
        Route("/model", server.model, methods=["GET"]),
        Route("/metrics", server.metrics_route, methods=["GET"]),
        Route("/openapi.json", server.openapi, methods=["GET"]),
        Route("/admin/reload", server.reload, methods=["POST"]),
    ]
    app = Starlette(routes=routes, lifespan=server.lifespan, exception_handlers={HTTPException: server.not_found})
    app.state.server = server
    return app


def limit_threads() -> None:
    """One BLAS/OpenMP thread per worker: requests are tiny and workers already use every core."""
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except Exception:  # noqa: BLE001 - only a speed setting
        pass


def app_from_env() -> Starlette:
    """The app factory uvicorn workers call (`--workers N`); settings come from MLOPS_SERVING_* variables."""
    limit_threads()
    # The prediction-log writer and the alias watcher are threads: hand the GIL back to the event loop
    # within 1 ms (default 5 ms) so a log flush does not queue requests behind it.
    sys.setswitchinterval(0.001)
    s = configure_environment()
    quiet_libraries()
    if not s.serving_model:
        raise SettingsError("MLOPS_SERVING_MODEL is not set; start the server with `python -m mlops.serving "
                            "--model NAME` (or --config FILE)")
    raw = s.serving_config_json
    serving = ServingConfig.model_validate(json.loads(raw)) if raw else ServingConfig()
    return create_app(
        s.serving_model,
        alias=s.serving_alias,
        tracking_uri=s.tracking_uri,
        serving=serving,
        log_dir=None if s.serving_log_dir == "off" else s.serving_log_dir,
        share_dir=s.serving_share_dir,
        freeze_gc=True,
    )


def make_share_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="mlops-serving-"))
