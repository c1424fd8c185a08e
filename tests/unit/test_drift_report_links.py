"""The drift artifacts a person opens from the Prefect UI: the Evidently report as a page of the MLflow server
(a link a browser follows, never a file:// path), or, with MLflow on a local store, a note saying where the
report is and how to open MLflow; and the monitor run's name and final state."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import tasks.drift
from flows.monitor import window_suffix
from mlops.core.config import MonitoringConfig
from mlops.monitoring.drift import DriftResult, compute_drift
from mlops.monitoring.policy import Decision
from mlops.monitoring.report import report_title
from mlops.monitoring.result import DriftSample, DriftSummary, MonitorResult, RetrainOutcome
from mlops.monitoring.windows import QualityReport
from mlops.registry.monitoring import report_artifact
from tasks.drift import publish_drift

HTML = "/srv/mlops/reports/churn/drift-churn-v3-20260315T120000-abcd1234.html"
SERVER = "http://127.0.0.1:5000"


@pytest.fixture(scope="module")
def drift() -> DriftResult:
    rng = np.random.default_rng(0)
    ref = pd.DataFrame({"a": rng.normal(0, 1, 2000), "b": rng.normal(0, 1, 2000)})
    cur = pd.DataFrame({"a": rng.normal(1.5, 1, 2000), "b": rng.normal(0, 1, 2000)})
    return compute_drift(ref, cur, ["a", "b"], [], MonitoringConfig())


@pytest.fixture
def made(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The artifacts publish_drift creates (kind, key, link or markdown), without a Prefect server."""
    out: list[dict[str, Any]] = []

    def link(url: str, **kw: Any) -> None:
        out.append({"kind": "link", "link": url, **kw})

    def markdown(text: str, **kw: Any) -> None:
        out.append({"kind": "markdown", "markdown": text, **kw})

    monkeypatch.setattr(tasks.drift, "create_link_artifact", link)
    monkeypatch.setattr(tasks.drift, "create_markdown_artifact", markdown)
    return out


def _by_key(made: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {a["key"]: a for a in made}


def test_with_a_server_the_report_link_opens_the_report_on_the_mlflow_monitoring_run(drift, made) -> None:
    publish_drift("churn", "3", drift, {"html_path": HTML, "agreement": 1.0}, 0.3, tracking_uri=SERVER,
                  run_id="r123", experiment_id="7")
    arts = _by_key(made)
    report = arts["churn-drift-report"]
    assert report["kind"] == "link" and not report["link"].startswith("file:")
    assert report["link"] == (f"{SERVER}/#/experiments/7/runs/r123/artifacts/report/"
                              "drift-churn-v3-20260315T120000-abcd1234.html?workflowType=machine_learning")
    run = arts["churn-monitoring-run"]
    assert run["kind"] == "link" and run["link"] == f"{SERVER}/#/experiments/7/runs/r123?workflowType=machine_learning"
    summary = arts["churn-drift-summary"]["markdown"]
    assert f"]({report['link']})" in summary and "file://" not in summary
    assert "**Decides the retrain**: the retrain policy's `drift_share_threshold` 0.3" in summary


def test_without_a_server_the_report_artifact_says_where_the_report_is_and_how_to_open_mlflow(drift, made) -> None:
    uri = "sqlite:////srv/mlops/mlflow.db"
    publish_drift("churn", "3", drift, {"html_path": HTML}, 0.3, tracking_uri=uri, run_id="r123")
    arts = _by_key(made)
    assert {a["kind"] for a in made} == {"markdown"}  # no link a browser cannot follow
    assert "churn-monitoring-run" not in arts
    note = arts["churn-drift-report"]["markdown"]
    assert "report/drift-churn-v3-20260315T120000-abcd1234.html" in note and "`r123`" in note
    assert f"mlflow ui --backend-store-uri {uri}" in note and HTML in note
    summary = arts["churn-drift-summary"]["markdown"]
    assert "under `report/drift-churn-v3-" in summary and f"mlflow ui --backend-store-uri {uri}" in summary


def test_a_report_that_was_not_built_gets_no_report_artifact(drift, made) -> None:
    publish_drift("churn", "3", drift, {"html_path": None, "error": "not asked for"}, 0.3,
                  tracking_uri="sqlite:///x.db", run_id="r1")
    arts = _by_key(made)
    assert set(arts) == {"churn-drift-summary"}
    assert "not built (not asked for)" in arts["churn-drift-summary"]["markdown"]


def test_the_report_title_names_model_version_and_window() -> None:
    assert report_title("churn", "3", "20260315T120000-abcd1234") == \
        "Drift report: churn v3, window 20260315T120000-abcd1234"


@pytest.mark.parametrize("params, expected", [
    ({"current_path": "/data/in/Week 12.parquet"}, "week-12.parquet"),
    ({"at": datetime(2026, 3, 15, 12, 30, 59, tzinfo=UTC)}, "20260315T1230"),
    ({"at": datetime(2026, 3, 15, 14, 30, tzinfo=timezone(timedelta(hours=2)))}, "20260315T1230"),
    ({"at": "2026-03-15T12:30:00Z"}, "20260315T1230"),  # a deployment run's parameters arrive as JSON text
])
def test_a_monitor_run_is_named_after_its_window(params: dict[str, Any], expected: str) -> None:
    assert window_suffix(params) == expected


def test_a_monitor_run_of_the_prediction_log_is_named_after_its_time() -> None:
    before = datetime.now(UTC).replace(second=0, microsecond=0)
    when = datetime.strptime(window_suffix({}), "%Y%m%dT%H%M").replace(tzinfo=UTC)
    assert before <= when <= datetime.now(UTC)


def test_report_artifact_is_the_monitoring_runs_report_folder() -> None:
    assert report_artifact(Path(HTML)) == "report/drift-churn-v3-20260315T120000-abcd1234.html"


def _result(status: str, **parts: Any) -> MonitorResult:
    return MonitorResult(status, "churn", "3", **parts)


def test_the_final_state_says_the_verdict_in_one_line() -> None:
    """What the monitor run's Completed state shows in the Prefect UI (name and message) and its outcome tag."""
    at = datetime(2026, 3, 15, tzinfo=UTC)
    drift = DriftSummary(0.4213, True, ["age"], {"age": 0.6}, None, DriftSample(1, 10, 10))
    hold = _result("checked", drift=drift, decision=Decision(False, ["cooldown"], "hold", at))
    assert (hold.state_name(), hold.state_message(), hold.outcome()) == ("Checked", "checked v3: drift 0.42, hold",
                                                                         "hold")
    asked = _result("checked", drift=drift, decision=Decision(True, ["drift"], "retrain", at, triggers=["drift"]))
    assert asked.state_name() == "Retrain requested" and asked.outcome() == "retrain"
    assert asked.state_message() == "checked v3: drift 0.42, retrain requested"
    asked.training = RetrainOutcome("trained", "version 4 promoted", True)
    assert asked.state_message() == "checked v3: drift 0.42, retrain requested; training trained: version 4 promoted"
    bad = _result("quality_failed", quality=QualityReport(False, ["missing column(s) ['age']\n" + "x" * 400]))
    assert bad.state_name() == "Quality failed" and bad.outcome() == "quality-failed"
    msg = bad.state_message()
    assert msg.startswith("quality failed: missing column(s) ['age']") and "\n" not in msg and len(msg) <= 300
    empty = _result("empty", message="the window holds no rows")
    assert (empty.state_name(), empty.state_message(), empty.outcome()) == ("Empty window", "the window holds no rows",
                                                                            "empty")
