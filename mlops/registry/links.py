"""Browser links between the two UIs: MLflow pages (runs, model versions, artifacts) for Prefect's link
artifacts, and the Prefect flow run page for MLflow run descriptions. Pure string building, no calls."""

from __future__ import annotations

from urllib.parse import quote

# MLflow 3.17's UI shows every page in the view its sidebar switch (or this query parameter) names, and starts
# in the GenAI view; every link built here asks for the classic machine-learning view (checked in Chromium:
# the experiment link lands on its Runs tab, the artifact link shows the file, HTML in a frame).
ML_VIEW_QUERY = "workflowType=machine_learning"


def mlflow_base_url(tracking_uri: str | None = None) -> str | None:
    """The MLflow server a browser can open (the tracking URI when it is http(s)), or None for a local store."""
    if tracking_uri is None:
        import mlflow

        tracking_uri = mlflow.get_tracking_uri()
    uri = str(tracking_uri or "").strip()
    return uri.rstrip("/") if uri.startswith(("http://", "https://")) else None


def mlflow_routes(run_id: str | None = None, experiment_id: str | None = None, model: str | None = None,
                  version: str | int | None = None, artifact: str | None = None) -> dict[str, str]:
    """The MLflow UI routes (`#/...`, relative to the server) of whatever is given: `experiment`, `run`,
    `artifact` (the run page with that file open), `model` and `model_version`. Relative routes also work
    as links inside MLflow's own markdown (run and version descriptions)."""
    out: dict[str, str] = {}
    if experiment_id:
        out["experiment"] = f"#/experiments/{experiment_id}?{ML_VIEW_QUERY}"
    if run_id and experiment_id:
        out["run"] = f"#/experiments/{experiment_id}/runs/{run_id}?{ML_VIEW_QUERY}"
        if artifact:
            path = quote(artifact.strip("/"), safe="/")
            out["artifact"] = f"#/experiments/{experiment_id}/runs/{run_id}/artifacts/{path}?{ML_VIEW_QUERY}"
    if model:
        out["model"] = f"#/models/{quote(model, safe='')}?{ML_VIEW_QUERY}"
        if version is not None and str(version):
            out["model_version"] = f"#/models/{quote(model, safe='')}/versions/{version}?{ML_VIEW_QUERY}"
    return out


def mlflow_urls(run_id: str | None = None, model: str | None = None, version: str | int | None = None,
                artifact: str | None = None, experiment_id: str | None = None,
                tracking_uri: str | None = None) -> dict[str, str] | None:
    """Browser URLs of an MLflow run, model version and artifact, or None when MLflow runs without a server.

    Keys (each present when its inputs are): `server`, `experiment`, `run`, `artifact` (the run's page with
    the file open: HTML, e.g. the drift report under `report/`, displays there) and `artifact_download`
    (the raw file, which MLflow always sends as a download), `model`, `model_version`. The run's
    experiment is looked up when not given (one call)."""
    base = mlflow_base_url(tracking_uri)
    if base is None:
        return None
    if run_id and not experiment_id:
        experiment_id = _experiment_of(run_id)
    out = {"server": base}
    out |= {k: f"{base}/{route}" for k, route in mlflow_routes(run_id, experiment_id, model, version, artifact).items()}
    if run_id and artifact:
        out["artifact_download"] = (f"{base}/get-artifact?path={quote(artifact.strip('/'), safe='')}"
                                    f"&run_uuid={quote(run_id, safe='')}")
    return out


def mlflow_run_url(tracking_uri: str, experiment_id: str, run_id: str) -> str | None:
    """The run's page in the MLflow UI when the store is a tracking server (None for a local store)."""
    return (mlflow_urls(run_id=run_id, experiment_id=experiment_id, tracking_uri=tracking_uri) or {}).get("run")


def mlflow_version_url(tracking_uri: str, model_name: str, version: str | int | None) -> str | None:
    """A registered version's page in the MLflow UI when the store is a tracking server (None otherwise)."""
    return (mlflow_urls(model=model_name, version=version, tracking_uri=tracking_uri) or {}).get("model_version")


def mlflow_ui_command(tracking_uri: str, program: str = "mlflow") -> str:
    """How to open a local MLflow store (SQLite or files) in a browser: the `mlflow ui` command line."""
    return f"{program} ui --backend-store-uri {tracking_uri} --host 127.0.0.1 --port 5000"


def mlflow_where(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    """One log-line figure: the run's URL, or how to open the local store."""
    return (mlflow_run_url(tracking_uri, experiment_id, run_id)
            or f"run {run_id}; open with `{mlflow_ui_command(tracking_uri)}`")


def mlflow_open_markdown(tracking_uri: str, pages: list[str]) -> str:
    """What a Prefect artifact says instead of links when MLflow runs without a server (no browser can follow a
    sqlite:// or file:// address): the `mlflow ui` command, then the `pages` to find."""
    lines = "\n".join(f"- {text}" for text in pages)
    return (f"# Open in MLflow\n\nMLflow runs without a server here (store `{tracking_uri}`), so there is no page to "
            f"link to. Open it with\n\n```\n{mlflow_ui_command(tracking_uri)}\n```\n\nthen browse to "
            f"http://127.0.0.1:5000 and find:\n\n{lines}\n")


def _experiment_of(run_id: str) -> str | None:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        return str(MlflowClient().get_run(run_id).info.experiment_id)
    except MlflowException:
        return None


def prefect_ui_base() -> str | None:
    """The Prefect UI a browser can open: PREFECT_UI_URL, else the API URL without `/api` (Prefect's own
    rule); None when there is no UI (the CLI's private API sets PREFECT_UI_URL empty) or no server."""
    try:
        from prefect.settings import PREFECT_UI_URL
    except ImportError:  # pragma: no cover - Prefect is a dependency
        return None
    url = str(PREFECT_UI_URL.value() or "").strip().rstrip("/")
    return url if url.startswith(("http://", "https://")) else None


def prefect_flow_run_url(flow_run_id: str | None, ui_base: str | None = None) -> str | None:
    """The flow run's page in the Prefect UI (`<ui>/runs/flow-run/<id>`), or None without a UI or an id."""
    base = ui_base.rstrip("/") if ui_base else prefect_ui_base()
    if not base or not flow_run_id or flow_run_id == "local":
        return None
    return f"{base}/runs/flow-run/{flow_run_id}"
