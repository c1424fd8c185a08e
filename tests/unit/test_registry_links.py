"""Links between the UIs (issue 13): MLflow browser URLs for runs, versions and artifacts (None without a
server), the Prefect flow run page, run-name parts, and the monitoring run linked both ways with the version."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlops.registry import links
from mlops.registry import versions as registry
from mlops.registry.monitoring import log_monitoring_run, report_artifact
from mlops.registry.tracking import reason_slug, training_run_name

SERVER = "http://127.0.0.1:5000"


def test_mlflow_urls_for_a_run_a_version_and_an_artifact() -> None:
    urls = links.mlflow_urls(run_id="abc123", model="churn model", version=3, artifact="report/drift-churn-v3.html",
                             experiment_id="7", tracking_uri=SERVER + "/")
    assert urls is not None and urls["server"] == SERVER
    assert urls["run"] == f"{SERVER}/#/experiments/7/runs/abc123?workflowType=machine_learning"
    assert urls["experiment"] == f"{SERVER}/#/experiments/7?workflowType=machine_learning"
    assert urls["artifact"] == (f"{SERVER}/#/experiments/7/runs/abc123/artifacts/report/drift-churn-v3.html"
                                "?workflowType=machine_learning")
    assert urls["artifact_download"] == f"{SERVER}/get-artifact?path=report%2Fdrift-churn-v3.html&run_uuid=abc123"
    assert urls["model"] == f"{SERVER}/#/models/churn%20model?workflowType=machine_learning"
    assert urls["model_version"] == f"{SERVER}/#/models/churn%20model/versions/3?workflowType=machine_learning"


def test_mlflow_urls_only_for_what_is_given() -> None:
    assert links.mlflow_urls(model="m", tracking_uri="https://mlflow.example") == {
        "server": "https://mlflow.example", "model": "https://mlflow.example/#/models/m?workflowType=machine_learning"}
    assert set(links.mlflow_urls(run_id="r", experiment_id="1", tracking_uri=SERVER)) == {"server", "experiment", "run"}


@pytest.mark.parametrize("uri", ["sqlite:///tmp/mlflow.db", "file:///tmp/mlruns", "/tmp/mlruns", "databricks", ""])
def test_mlflow_urls_are_none_without_a_server(uri: str) -> None:
    assert links.mlflow_urls(run_id="r", model="m", version=1, experiment_id="1", tracking_uri=uri) is None
    assert links.mlflow_base_url(uri) is None


def test_mlflow_urls_look_up_the_run_experiment(state_dir: Path) -> None:
    import mlflow

    experiment = mlflow.create_experiment("links")  # not the active experiment an earlier test left behind
    with mlflow.start_run(experiment_id=experiment) as run:
        pass
    routes = links.mlflow_urls(run_id=run.info.run_id, tracking_uri=SERVER)
    assert routes is not None
    assert routes["run"].startswith(f"{SERVER}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}")


def test_the_prefect_flow_run_page() -> None:
    rid = "9b5b070f-f5af-47a1-9b85-c127f6002f02"
    assert links.prefect_flow_run_url(rid, "http://127.0.0.1:4200/") == f"http://127.0.0.1:4200/runs/flow-run/{rid}"
    assert links.prefect_flow_run_url(None, "http://127.0.0.1:4200") is None
    assert links.prefect_flow_run_url("local", "http://127.0.0.1:4200") is None


def test_the_prefect_ui_comes_from_its_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:4200/api"}, restore_defaults={PREFECT_UI_URL}):
        assert links.prefect_ui_base() == "http://127.0.0.1:4200"  # the API URL without /api
    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:4200/api", PREFECT_UI_URL: "https://prefect.example"}):
        assert links.prefect_flow_run_url("x") == "https://prefect.example/runs/flow-run/x"
    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:4200/api", PREFECT_UI_URL: ""}):
        assert links.prefect_ui_base() is None  # the CLI's private API has no UI


@pytest.mark.parametrize(("reason", "slug"), [
    ("manual", "manual"), ("", "manual"), ("drift monitor: drift share 0.61 >= 0.3", "drift-monitor-drift-share-0.61-0.3"),
    ("Retrain requested", "retrain-requested"), ("first data: /in/churn-2026-06.csv", "first-data-churn-2026-06.csv"),
    ("a very long reason that goes on and on past the limit", "a-very-long-reason-that-goes-on-and-on-8e46fd"),
    ("new file landed from the data vendor: /srv/inbox/churn-2026-06.csv",
     "new-file-landed-from-the-data-vendor-churn-2026-06.csv"),
])
def test_the_reason_as_a_run_name_part(reason: str, slug: str) -> None:
    assert reason_slug(reason) == slug
    assert training_run_name("churn", reason) == f"train-churn-{slug}"
    assert training_run_name("churn", reason, "4") == f"train-churn-v4-{slug}"


def test_runs_started_by_the_data_vendor_webhook_have_distinguishable_names() -> None:
    """Issue 21: the documented data-vendor reason (configs/webhooks.yaml) for three files gave three runs of the
    same name, cut at 40 characters; the file name is kept whole, in the Prefect and the MLflow run name alike."""
    from flows.forms import name_part

    files = ["churn-2026-06-01.csv", "churn-2026-06-02.csv", "churn_2026_06_03_corrected.parquet"]
    reasons = [f"new file landed from the data vendor: /srv/mlops/inbox/vendor/{f}" for f in files]
    prefect_names = [name_part(r) for r in reasons]
    mlflow_names = [training_run_name("churn-classifier", r, "7") for r in reasons]
    assert len(set(prefect_names)) == len(set(mlflow_names)) == 3
    for file, prefect_name, mlflow_name in zip(files, prefect_names, mlflow_names, strict=True):
        assert prefect_name.endswith(file.lower().replace("_", "-"))
        assert mlflow_name == f"train-churn-classifier-v7-{prefect_name}"
    # long reasons without a file that differ only at their end still differ, cut at a word boundary
    a, b = (reason_slug(f"upstream schema fix deployed for the nightly export of table {t}") for t in ("orders", "users"))
    assert a != b and a.startswith("upstream-schema-fix-deployed-for-the-") and "-nightl-" not in a


def test_a_monitoring_run_and_the_version_it_checked_point_at_each_other(state_dir: Path, tmp_path: Path) -> None:
    c = registry.client()
    c.create_registered_model("watched")
    c.create_model_version("watched", source="file:///nowhere/1")
    report = tmp_path / "drift-watched-v1-20260101T000000-abcd1234.html"
    report.write_text("<html><title>drift</title></html>")
    tags = {"monitor.window_id": "20260101T000000-abcd1234", "monitor.window_rows": "500",
            "monitor.verdict": "hold", "monitor.retrain": "false", "monitor.drift_share": "0.1000",
            "monitor.prefect_flow_run_id": "11111111-2222-3333-4444-555555555555"}
    rid, exp_id = log_monitoring_run("exp", (state_dir / "mlartifacts").as_uri(), "watched", "1", tags,
                                     {"drift_share": 0.1, "nan": float("nan")}, {"report": report},
                                     {"monitor/decision.json": json.dumps({"verdict": "hold"})})
    run = c.get_run(rid)
    assert run.info.run_name == "monitor-watched-v1-20260101T000000-abcd1234"
    assert run.data.tags["model_name"] == "watched" and run.data.tags["model_version"] == "1"
    assert "[watched version 1](#/models/watched/versions/1?workflowType=machine_learning)" in run.data.tags["mlflow.note.content"]
    assert "11111111-2222-3333-4444-555555555555" in run.data.tags["mlflow.note.content"]
    assert run.data.metrics == {"drift_share": 0.1}
    assert report_artifact(report) in [f.path for f in c.list_artifacts(rid, "report")]
    exp = c.get_experiment(exp_id)
    assert exp.name == "exp-monitoring" and exp.tags["mlflow.experimentKind"] == "custom_model_development"
    mv = c.get_model_version("watched", "1")
    assert mv.tags["monitoring.last_run_id"] == rid and mv.tags["monitoring.last_experiment_id"] == exp_id
    assert mv.tags["monitoring.last_verdict"] == "hold" and mv.tags["monitoring.last_run_url"] == ""  # no server
