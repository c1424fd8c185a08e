"""The `score` flow under Prefect's test harness: the champion scores a file larger than one chunk,
bad rows are quarantined, predictions and a run record land in the output folder, and every scored row
reaches the prediction log."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from mlops.serving.predictlog import read_prediction_log
from tests.support.model_server import churn_frame, fit_pipeline, isolated_state, register_model

NAME = "churn-score-flow"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A registered champion in its own state folder (the Prefect harness comes from tests/flows/conftest.py)."""
    work = tmp_path_factory.mktemp("score-flow")
    with isolated_state(work) as state:
        pipe, contract, frame = fit_pipeline(churn_frame(1200, seed=31), "churned", params={"max_iter": 20},
                                             id_column="customer_id", timestamp_column="event_time")
        version = register_model(NAME, pipe, contract, frame)
        config = work / "config.yaml"
        config.write_text(yaml.safe_dump({
            "name": "score-flow", "task": "classification", "source": {"kind": "generated"}, "target": "churned",
            "id_column": "customer_id", "timestamp_column": "event_time",
            "models": [{"family": "hist_gradient_boosting"}], "registry": {"model_name": NAME},
            "serving": {"batch_chunk_rows": 500, "sensitive_columns": ["customer_id"], "sensitive_mode": "drop"},
        }))
        yield {"state": state, "config": config, "version": version, "pipe": pipe, "work": work}


def test_score_flow_scores_in_chunks(setup: dict[str, Any]) -> None:
    from flows.score import score

    df = churn_frame(1300, seed=32).drop(columns=["churned"])
    df.loc[[10, 700], "age"] = 150.0  # impossible: quarantined, not scored
    src = setup["work"] / "to_score.csv"
    df.to_csv(src, index=False)
    out = setup["work"] / "scored"
    result = score(str(setup["config"]), str(src), str(out))

    assert result["model_version"] == setup["version"] and result["chunks"] == 3 and result["rows_read"] == 1300
    assert result["rows_scored"] + result["rows_quarantined"] == 1300
    record = json.loads((out / "run.json").read_text())
    assert record == json.loads(json.dumps(result, default=str))
    preds = pd.read_parquet(out / "predictions.parquet")
    q = pd.read_csv(out / "quarantined.csv")
    assert {10, 700} <= set(q["row"]) and not {10, 700} & set(preds["row"])
    assert sorted(preds["row"].tolist() + q["row"].tolist()) == list(range(1300))
    log = read_prediction_log(Path(setup["state"]) / "predictions")
    mine = log[log["request_id"] == result["run_id"]]
    assert len(mine) == len(preds) and set(mine["log_source"]) == {"batch"}
    assert "customer_id" not in mine.columns  # marked sensitive, mode drop


def test_score_flow_fails_with_one_sentence(setup: dict[str, Any]) -> None:
    from flows.score import score

    state = score(str(setup["config"]), str(setup["work"] / "nowhere.csv"), None, return_state=True)
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:  # the run is named from what it scored
        assert client.read_flow_run(state.state_details.flow_run_id).name.endswith("-nowhere")
    assert state.is_failed() and "not found" in state.message


def test_score_flow_can_flag_instead_of_quarantine(setup: dict[str, Any]) -> None:
    from flows.score import score

    df = churn_frame(700, seed=33).drop(columns=["churned"])
    df.loc[[3, 650], "age"] = 150.0
    src = setup["work"] / "to_flag.parquet"
    df.to_parquet(src, index=False)
    out = setup["work"] / "flagged.csv"
    result = score(str(setup["config"]), str(src), str(setup["work"] / "flag-record"), str(out), flag_violations=True)

    preds = pd.read_csv(out)
    assert preds["row"].tolist() == list(range(700)) and preds["customer_id"].tolist() == df["customer_id"].tolist()
    flagged = set(preds.loc[preds["contract_violation"].notna(), "row"])
    assert {3, 650} <= flagged and result["rows_flagged"] == len(flagged) and result["rows_quarantined"] == 0
    assert preds["prediction_proba"].notna().all() and result["predictions_path"] == str(out)


def test_score_flow_refuses_input_outside_the_data_roots(setup: dict[str, Any], tmp_path: Path) -> None:
    from flows.score import score

    elsewhere = tmp_path / "elsewhere.csv"
    churn_frame(50, seed=34).drop(columns=["churned"]).to_csv(elsewhere, index=False)
    state = score(str(setup["config"]), str(elsewhere), None, return_state=True)
    assert state.is_failed() and "refused" in state.message and "data root" in state.message


def test_score_flow_writes_only_where_runs_may_write(setup: dict[str, Any], tmp_path: Path) -> None:
    """Outputs named by a deployment, an event or the UI stay inside the scores folder or a data root outside the
    state folder, and an existing file is never overwritten; nothing is written before the refusal."""
    from flows.score import score

    src = setup["work"] / "to_confine.csv"
    churn_frame(60, seed=35).drop(columns=["churned"]).to_csv(src, index=False)
    state_dir = Path(setup["state"])
    retraining = state_dir / "monitor" / "churn-score-flow" / "training"  # a data root, but later runs train on it
    kept = setup["work"] / "keep.csv"
    kept.write_text("precious\n")
    for output_dir, predictions_path, says in [
        (str(tmp_path / "out"), None, "a run's output must resolve"),
        (str(retraining), None, "a run's output must resolve"),
        (str(state_dir / "scores" / ".." / "secrets"), None, "a run's output must resolve"),
        (None, str(tmp_path / "p.csv"), "a run's output must resolve"),
        (None, str(kept), "the file exists"),
    ]:
        state = score(str(setup["config"]), str(src), output_dir, predictions_path, return_state=True)
        assert state.is_failed() and "refused" in str(state.message) and says in str(state.message), (output_dir, predictions_path)
    assert not (tmp_path / "out").exists() and not (tmp_path / "p.csv").exists() and not retraining.exists()
    assert kept.read_text() == "precious\n"

    result = score(str(setup["config"]), str(src), str(state_dir / "scores" / "mine"), str(setup["work"] / "p.csv"))
    assert result["rows_read"] == 60 and (setup["work"] / "p.csv").exists()
