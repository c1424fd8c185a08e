"""Batch scoring without Prefect: chunked reading, contract check with quarantine, predictions identical
to the Pipeline, a run record, and the prediction log."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mlops.core.contract import coerce_to_contract
from mlops.core.errors import DataError
from mlops.serving.predictlog import PredictionLogWriter, Redactor, hash_value, read_prediction_log
from mlops.serving.scoring import iter_chunks, score_file
from tests.support.model_server import churn_frame, fit_pipeline


@pytest.fixture(scope="module")
def model() -> dict[str, Any]:
    pipe, contract, _ = fit_pipeline(churn_frame(1500, seed=12), "churned", params={"max_iter": 20},
                                     id_column="customer_id", timestamp_column="event_time")
    return {"pipe": pipe, "contract": contract}


def messy_input(rows: int = 2500) -> tuple[pd.DataFrame, list[int]]:
    df = churn_frame(rows, seed=13).drop(columns=["churned"])
    df["tenure_months"] = df["tenure_months"].astype(object)
    changes = [(5, "age", 150.0),  # out of the contract's range
               (999, "monthly_charges", -50.0),
               (1000, "region", "atlantis"),  # unknown category
               (2001, "tenure_months", "twelve")]  # not a number
    bad = [i for i, _, _ in changes if i < rows]
    for i, col, value in changes:
        if i < rows:
            df.loc[i, col] = value
    return df, bad


def expected(model: dict[str, Any], df: pd.DataFrame, bad: list[int]) -> tuple[np.ndarray, np.ndarray]:
    good = df.drop(index=bad)
    good = good.assign(tenure_months=pd.to_numeric(good["tenure_months"]))
    frame = coerce_to_contract(good, model["contract"], need_target=False).frame
    return good.index.to_numpy(), model["pipe"].predict_proba(frame[model["pipe"].feature_names_in_])[:, 1]


def run(model: dict[str, Any], path: Path, out: Path, chunk_rows: int, writer: Any = None) -> Any:
    return score_file(model["pipe"], model["contract"], "churn", "3", "run-3", path, out, "score-run-1",
                      chunk_rows=chunk_rows, log_writer=writer, max_quarantine_fraction=0.01)


def test_csv_in_chunks(model: dict[str, Any], tmp_path: Path) -> None:
    df, bad = messy_input()
    path = tmp_path / "in.csv"
    df.to_csv(path, index=False)
    writer = PredictionLogWriter(tmp_path / "log", Redactor(frozenset({"customer_id"}), "hash", b"k"))
    result = run(model, path, tmp_path / "out", 1000, writer)

    assert result.chunks == 3 and result.rows_read == 2500
    q = pd.read_csv(tmp_path / "out" / "quarantined.csv")
    quarantined = q["row"].tolist()
    assert set(bad) <= set(quarantined) and len(quarantined) < 20  # plus a few genuinely out-of-range rows
    assert result.rows_quarantined == len(quarantined) and result.rows_scored == 2500 - len(quarantined)
    preds = pd.read_parquet(tmp_path / "out" / "predictions.parquet")
    rows, proba = expected(model, df, quarantined)
    assert preds["row"].tolist() == rows.tolist()
    assert preds["customer_id"].tolist() == df.loc[rows, "customer_id"].tolist()
    assert np.allclose(preds["prediction_proba"], proba, rtol=0, atol=1e-12)
    assert set(preds["model_version"]) == {"3"}
    reasons = dict(zip(q["row"], q["_quarantine_reasons"], strict=True))
    assert "age" in reasons[5] and "monthly_charges" in reasons[999] and "region" in reasons[1000]
    assert "tenure_months" in reasons[2001]

    record = json.loads((tmp_path / "out" / "run.json").read_text())
    assert record["rows_scored"] == len(rows) and record["model_version"] == "3" and record["chunks"] == 3
    assert record["predictions_path"].endswith("predictions.parquet") and record["rows_per_second"] > 0
    assert record["null_fractions"]["age"] > 0 and record["warnings"] == []

    log = read_prediction_log(tmp_path / "log")
    assert len(log) == len(rows) and set(log["log_source"]) == {"batch"} and set(log["request_id"]) == {"score-run-1"}
    assert log.sort_values("request_row")["request_row"].tolist() == rows.tolist()
    first = log.sort_values("request_row").iloc[0]
    assert first["customer_id"] == hash_value(df.loc[0, "customer_id"], b"k")


def test_parquet_folder_gives_the_same_predictions(model: dict[str, Any], tmp_path: Path) -> None:
    df, bad = messy_input(1800)
    df = df.assign(tenure_months=pd.to_numeric(df["tenure_months"], errors="coerce"))  # Parquet keeps types
    folder = tmp_path / "in"
    folder.mkdir()
    df.iloc[:1100].to_parquet(folder / "a.parquet", index=False)
    df.iloc[1100:].to_parquet(folder / "b.parquet", index=False)
    result = run(model, folder, tmp_path / "out", 400)
    assert result.chunks == 3 + 2 and result.rows_read == 1800
    preds = pd.read_parquet(tmp_path / "out" / "predictions.parquet")
    assert preds["row"].is_monotonic_increasing and len(preds) == result.rows_scored
    assert 999 not in preds["row"].tolist() and 5 not in preds["row"].tolist()
    q = pd.read_csv(tmp_path / "out" / "quarantined.csv")
    assert sorted(preds["row"].tolist() + q["row"].tolist()) == list(range(1800))


def test_chunks_are_bounded(tmp_path: Path) -> None:
    df = churn_frame(1000, seed=1)
    df.to_parquet(tmp_path / "x.parquet", index=False)
    df.to_csv(tmp_path / "x.csv", index=False)
    for name in ("x.parquet", "x.csv"):
        sizes = [len(c) for _, c in iter_chunks(tmp_path / name, 300)]
        assert sizes == [300, 300, 300, 100]


def test_too_many_bad_rows_is_a_warning_in_the_record(model: dict[str, Any], tmp_path: Path) -> None:
    df = churn_frame(300, seed=14).drop(columns=["churned"])
    df.loc[:29, "age"] = 150.0
    df.to_csv(tmp_path / "in.csv", index=False)
    result = run(model, tmp_path / "in.csv", tmp_path / "out", 1000)
    assert result.rows_quarantined == 30 and any("broke the data contract" in w for w in result.warnings)


def test_bad_inputs_fail_with_one_sentence(model: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        run(model, tmp_path / "missing.csv", tmp_path / "out", 100)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no .csv or .parquet"):
        run(model, tmp_path / "empty", tmp_path / "out", 100)
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(DataError, match="not a readable Parquet file"):
        run(model, tmp_path / "broken.parquet", tmp_path / "out", 100)
    churn_frame(50, seed=1).drop(columns=["plan"]).to_csv(tmp_path / "noplan.csv", index=False)
    with pytest.raises(DataError, match="plan"):
        run(model, tmp_path / "noplan.csv", tmp_path / "out", 100)

