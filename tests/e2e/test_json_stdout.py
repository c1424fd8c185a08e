"""`--json` commands print only JSON on stdout, also against an MLflow tracking server: MLflow prints
"View run / View experiment" links to stdout when a run ends on an http store, never on a local one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO, write_config
from tests.support.loopback import free_port, wait_http

MLOPS = str(Path(sys.executable).parent / "mlops")
MLFLOW = str(Path(sys.executable).parent / "mlflow")
pytestmark = pytest.mark.e2e


@pytest.fixture
def tracking_server(tmp_path: Path) -> Iterator[str]:
    """An MLflow server on loopback (SQLite store, served artifacts), as `mlops up` runs it."""
    port = free_port()
    log = tmp_path / "mlflow-server.log"
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
               MLFLOW_BACKEND_STORE_URI=f"sqlite:///{tmp_path / 'server.db'}")
    with log.open("wb") as out:
        proc = subprocess.Popen([MLFLOW, "server", "--serve-artifacts", "--artifacts-destination",
                                 str(tmp_path / "served"), "--default-artifact-root", "mlflow-artifacts:/",
                                 "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/health", proc, timeout=120, log=log)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run(args: list[str], state: Path, tracking_uri: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, MLOPS_HOME=str(state), MLFLOW_TRACKING_URI=tracking_uri,
               MLOPS_ARTIFACT_ROOT="mlflow-artifacts:/")
    env.pop("PREFECT_API_URL", None)
    env.pop("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", None)
    return subprocess.run([MLOPS, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def test_json_commands_print_only_json_against_a_tracking_server(tmp_path: Path, tracking_server: str) -> None:
    from mlops.core.data import generate_churn

    state = tmp_path / "state"
    config = write_config(tmp_path, models=[{"family": "logistic_regression", "params": {"C": 1.0}}])

    trained = run(["train", "--config", str(config), "--json"], state, tracking_server)
    assert trained.returncode == 0, trained.stderr[-3000:]
    summary = json.loads(trained.stdout)  # the whole of stdout
    assert summary["promoted"] and summary["mlflow_run_id"]

    batch = tmp_path / "batch.csv"
    generate_churn(rows=400, seed=11).drop(columns=["churned"]).to_csv(batch, index=False)
    monitored = run(["monitor", "--config", str(config), "--data", str(batch), "--json", "--no-report"], state,
                    tracking_server)
    assert monitored.returncode == 0, monitored.stderr[-3000:]
    result = json.loads(monitored.stdout)
    assert result["status"] and result["mlflow_run_id"]
