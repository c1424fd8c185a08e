"""Prometheus metrics, kept as plain counters (a few dict updates per request).

With several worker processes, each writes a snapshot to a shared folder every couple of seconds
(and when scraped); `/metrics` answered by any worker sums the counters of all of them and lists
each live worker's gauges with a `worker` label.
"""

from __future__ import annotations

import json
import os
import threading
import time
from bisect import bisect_left
from collections import defaultdict
from pathlib import Path
from typing import Any

BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
LIVE_SECONDS = 30.0


class Metrics:
    def __init__(self, share_dir: str | Path | None = None) -> None:
        self.requests: dict[tuple[str, int], int] = defaultdict(int)
        self.buckets: dict[str, list[int]] = {}
        self.sums: dict[str, float] = defaultdict(float)
        self.counters: dict[str, int] = defaultdict(int)  # rows, reloads by outcome, ...
        self.share_dir = Path(share_dir) if share_dir else None
        self.started = time.time()
        self._lock = threading.Lock()

    def observe(self, route: str, code: int, seconds: float, rows: int = 0) -> None:
        self.requests[(route, code)] += 1
        b = self.buckets.get(route)
        if b is None:
            b = self.buckets[route] = [0] * (len(BUCKETS) + 1)
        b[bisect_left(BUCKETS, seconds)] += 1
        self.sums[route] += seconds
        if rows:
            self.counters["rows"] += rows

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] += n

    # -- several workers --------------------------------------------------------------------------

    def snapshot(self, gauges: dict[str, float], extra_counters: dict[str, int]) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "at": time.time(),
            "requests": [[r, c, n] for (r, c), n in list(self.requests.items())],
            "buckets": {r: list(b) for r, b in list(self.buckets.items())},
            "sums": dict(self.sums),
            "counters": {**self.counters, **extra_counters},
            "gauges": gauges,
        }

    def publish(self, gauges: dict[str, float], extra_counters: dict[str, int]) -> None:
        """Write this worker's snapshot where the other workers can read it."""
        if self.share_dir is None:
            return
        snap = self.snapshot(gauges, extra_counters)
        path = self.share_dir / f"metrics-{os.getpid()}.json"
        tmp = path.with_suffix(".tmp")
        with self._lock:
            tmp.write_text(json.dumps(snap))
            os.replace(tmp, path)

    def collect(self, gauges: dict[str, float], extra_counters: dict[str, int]) -> list[dict[str, Any]]:
        mine = self.snapshot(gauges, extra_counters)
        if self.share_dir is None:
            return [mine]
        self.publish(gauges, extra_counters)
        snaps = []
        for p in sorted(self.share_dir.glob("metrics-*.json")):
            try:
                snaps.append(json.loads(p.read_text()))
            except (OSError, ValueError):
                continue
        return snaps or [mine]

    def render(self, gauges: dict[str, float], extra_counters: dict[str, int]) -> str:
        snaps = self.collect(gauges, extra_counters)
        return render(snaps, several=self.share_dir is not None)


HELP = {
    "mlops_requests_total": ("counter", "Requests by route and HTTP status code."),
    "mlops_request_errors_total": ("counter", "Requests answered with a 4xx or 5xx status, by route and code."),
    "mlops_request_duration_seconds": ("histogram", "Time from request start to response, by route."),
    "mlops_predicted_rows_total": ("counter", "Rows scored."),
    "mlops_model_reloads_total": ("counter", "Model load attempts by outcome (swapped, failed, unreachable, refused: "
                                             "gate failed and no override recorded)."),
    "mlops_prediction_log_rows_total": ("counter", "Prediction log rows by outcome (written, dropped)."),
    "mlops_prediction_log_dropped_rows_total": ("counter", "Prediction log rows dropped (full queue or write error)."),
    "mlops_prediction_log_write_errors_total": ("counter", "Prediction log files that failed to write."),
    "mlops_prediction_log_replaced_values_total": ("counter", "Logged values replaced by a marker because they could "
                                                              "not be hashed or stored (the row is kept)."),
    "mlops_model_version": ("gauge", "The registered model version answering requests (0 when none)."),
    "mlops_model_ready": ("gauge", "1 when a model is loaded and serving."),
    "mlops_model_degraded": ("gauge", "1 when serving but not as asked: registry unreachable, or the alias names a "
                                      "version that is not served."),
    "mlops_model_refused_version": ("gauge", "The version the alias names that is refused (gate failed, no override); "
                                             "0 when none."),
    "mlops_prediction_log_queued_rows": ("gauge", "Rows waiting in the prediction log queue."),
}


def _fmt(v: float) -> str:
    if isinstance(v, int) or float(v).is_integer():
        return str(int(v))
    return repr(float(v))


def _labels(**kw: Any) -> str:
    inner = ",".join(f'{k}="{str(v).replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
                     for k, v in kw.items())
    return "{" + inner + "}" if inner else ""


def render(snaps: list[dict[str, Any]], several: bool = False) -> str:
    requests: dict[tuple[str, int], int] = defaultdict(int)
    buckets: dict[str, list[int]] = {}
    sums: dict[str, float] = defaultdict(float)
    counters: dict[str, int] = defaultdict(int)
    now = time.time()
    for s in snaps:
        for route, code, n in s["requests"]:
            requests[(route, int(code))] += n
        for route, b in s["buckets"].items():
            acc = buckets.setdefault(route, [0] * len(b))
            for i, v in enumerate(b):
                acc[i] += v
        for route, v in s["sums"].items():
            sums[route] += v
        for k, v in s["counters"].items():
            counters[k] += v
    lines: list[str] = []

    def head(name: str) -> None:
        kind, text = HELP[name]
        lines.append(f"# HELP {name} {text}")
        lines.append(f"# TYPE {name} {kind}")

    head("mlops_requests_total")
    for (route, code), n in sorted(requests.items()):
        lines.append(f"mlops_requests_total{_labels(route=route, code=code)} {n}")
    head("mlops_request_errors_total")
    for (route, code), n in sorted(requests.items()):
        if code >= 400:
            lines.append(f"mlops_request_errors_total{_labels(route=route, code=code)} {n}")
    head("mlops_request_duration_seconds")
    for route, b in sorted(buckets.items()):
        cum = 0
        for le, v in zip([*BUCKETS, "+Inf"], b, strict=True):
            cum += v
            lines.append(f"mlops_request_duration_seconds_bucket{_labels(route=route, le=le)} {cum}")
        lines.append(f"mlops_request_duration_seconds_sum{_labels(route=route)} {_fmt(sums[route])}")
        lines.append(f"mlops_request_duration_seconds_count{_labels(route=route)} {cum}")
    head("mlops_predicted_rows_total")
    lines.append(f"mlops_predicted_rows_total {counters.get('rows', 0)}")
    head("mlops_model_reloads_total")
    for outcome in ("swapped", "failed", "unreachable", "refused"):
        lines.append(f"mlops_model_reloads_total{_labels(outcome=outcome)} {counters.get('reload_' + outcome, 0)}")
    head("mlops_prediction_log_rows_total")
    for outcome in ("written", "dropped"):
        lines.append(f"mlops_prediction_log_rows_total{_labels(outcome=outcome)} {counters.get('log_' + outcome, 0)}")
    head("mlops_prediction_log_dropped_rows_total")
    lines.append(f"mlops_prediction_log_dropped_rows_total {counters.get('log_dropped', 0)}")
    head("mlops_prediction_log_write_errors_total")
    lines.append(f"mlops_prediction_log_write_errors_total {counters.get('log_write_errors', 0)}")
    head("mlops_prediction_log_replaced_values_total")
    lines.append(f"mlops_prediction_log_replaced_values_total {counters.get('log_replaced_values', 0)}")
    for gauge in ("mlops_model_version", "mlops_model_ready", "mlops_model_degraded", "mlops_model_refused_version",
                  "mlops_prediction_log_queued_rows"):
        head(gauge)
        for s in snaps:
            if several and now - s["at"] > LIVE_SECONDS:
                continue
            value = s["gauges"].get(gauge, 0)
            label = _labels(worker=s["pid"]) if several else ""
            lines.append(f"{gauge}{label} {_fmt(value)}")
    return "\n".join(lines) + "\n"
