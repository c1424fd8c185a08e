"""End to end: the drift demo as a user runs it (a fresh process, Prefect's ephemeral server, the
MLflow SQLite store), checked by outcome: a retrained champion that beats the old one on drifted data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml

from tests.conftest import REPO, small_config

pytestmark = pytest.mark.e2e


def run(args: list[str], state: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    env = dict(os.environ, MLOPS_HOME=str(state), MLOPS_ARTIFACT_ROOT=(state / "mlartifacts").as_uri())
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("PREFECT_API_URL", None)
    return subprocess.run([sys.executable, "-m", "mlops.cli.monitor", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_demo_drift_retrains_a_champion_that_beats_the_old_one_on_drifted_data(tmp_path: Path) -> None:
    from mlops.core.data import CHURN_START, generate_churn
    from mlops.registry import versions as registry
    from mlops.training.evaluation import holdout_metrics, predict

    state = tmp_path / "state"
    config = tmp_path / "small.yaml"
    # as configs/default.yaml: churn labels arrive late, so drift asks for a retrain in labelled windows too
    config.write_text(yaml.safe_dump(small_config(monitoring={"policy": {"drift_trigger": "always"}})))

    res = run(["demo-drift", "--config", str(config), "--rows", "3000", "--seed", "101"], state)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "Traceback" not in res.stderr
    assert "drift share" in res.stdout and "retrain requested" in res.stdout and "beats the old v1" in res.stdout

    # the outcome, checked in the store the demo used
    uri = f"sqlite:///{state / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    try:
        champ = registry.get_version_by_alias("churn-small", registry.CHAMPION)
        prev = registry.get_version_by_alias("churn-small", registry.PREVIOUS)
        assert str(champ.version) == "2" and str(prev.version) == "1"
        assert champ.tags["lineage.reason"].startswith("drift monitor:")
        assert "/monitor/churn-small/training/" in champ.tags["lineage.data_source"]
        assert prev.tags.get("monitoring.last_verdict") == "retrain"

        held = generate_churn(5000, seed=999, drift=0.8, start=CHURN_START + pd.Timedelta(days=181))
        X, y = held.drop(columns=["churned"]), held["churned"].to_numpy()
        scores = {}
        for v in ("1", "2"):
            model = registry.load_bundle("churn-small", v, with_reference=False).model
            scores[v] = holdout_metrics("classification", y, predict(model, X, "classification"))
        assert scores["2"]["roc_auc"] > scores["1"]["roc_auc"]
        assert scores["2"]["log_loss"] < scores["1"]["log_loss"]
    finally:
        mlflow.set_tracking_uri(None)

    reports = list((state / "reports" / "churn-small").glob("*.html"))
    assert len(reports) == 2  # the calm window and the drifted one

    # the monitor command on the derived config: everything logged was checked, so the window is empty
    again = run(["monitor", "--config", str(state / "demo" / "demo-config.yaml"), "--json"], state)
    assert again.returncode == 0, again.stderr[-3000:]
    out = json.loads(again.stdout)
    assert out["status"] == "empty" and out["model_version"] == "2"


def test_monitor_command_without_a_champion_says_so(tmp_path: Path) -> None:
    config = tmp_path / "small.yaml"
    config.write_text(yaml.safe_dump(small_config()))
    res = run(["monitor", "--config", str(config)], tmp_path / "state", timeout=300)
    assert res.returncode == 4
    assert "no champion for model 'churn-small' yet" in res.stdout and "Traceback" not in res.stderr
