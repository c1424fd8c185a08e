"""The `backtest` flow under Prefect's test harness on small drifted churn data: the files under the state
folder, the Prefect table and markdown artifacts, one MLflow run with the summary; a bad history fails
the run with one sentence."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml
from prefect.artifacts import Artifact

from flows.backtest import backtest
from tests.support.backtest import backtest_config, drifted_history


def _write(tmp_path: Path, history: pd.DataFrame) -> tuple[Path, Path]:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(backtest_config()))
    data = tmp_path / "history.parquet"
    history.to_parquet(data, index=False)
    return config, data


@pytest.mark.slow
def test_backtest_flow_records_files_artifacts_and_one_mlflow_run(tmp_path: Path, state_dir: Path) -> None:
    history = drifted_history()
    history = history.loc[history["event_time"] < pd.Timestamp("2025-07-01")]  # 4 windows keep it quick
    config, data = _write(tmp_path, history)
    out = backtest(config_path=str(config), data_path=str(data), initial="2M", every="1M")

    assert isinstance(out, dict), out
    assert len(out["windows"]) == 4
    s = out["summary"]
    assert s["baselines"]["every_window"]["retrains"] == 3 and s["baselines"]["never"]["retrains"] == 0
    files = {k: Path(v) for k, v in out["files"].items()}
    assert all(p.is_file() and p.stat().st_size > 0 for p in files.values())
    assert files["report"].parent.parent == state_dir / "backtest"
    assert len(pd.read_parquet(files["predictions"])) == sum(w["rows"] for w in out["windows"])

    table = Artifact.get("churn-backtest-backtest-windows")
    markdown = Artifact.get("churn-backtest-backtest-summary")
    assert table is not None and table.type == "table"
    assert markdown is not None and "Recovered share" in str(markdown.data)

    run = mlflow.MlflowClient().get_run(out["mlflow_run_id"])
    assert run.data.tags["mlops.stage"] == "backtest"
    assert run.data.params["every"] == "1M" and run.data.params["windows"] == "4"
    assert run.data.metrics["every_window_retrains"] == 3
    assert run.data.metrics["mean_metric"] == pytest.approx(s["mean_metric"])
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "backtest")}
    assert {"backtest/metric.png", "backtest/report.md", "backtest/windows.csv"} <= artifacts


def test_backtest_flow_fails_on_a_history_without_timestamps(tmp_path: Path, state_dir: Path) -> None:
    config, data = _write(tmp_path, drifted_history().drop(columns=["event_time"]))
    state = backtest(config_path=str(config), data_path=str(data), initial="2M", every="1M", return_state=True)
    assert state.is_failed()
    assert state.message.startswith("the history has no timestamp column 'event_time'")
