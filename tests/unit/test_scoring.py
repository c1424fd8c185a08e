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



# ---------------------------------------------------------------------------------------------
# flag mode (`mlops score`): every row scored in order, the bad ones flagged, one CSV or Parquet file


def run_flagged(model: dict[str, Any], path: Path, out_file: Path, chunk_rows: int, writer: Any = None,
                scorer: Any = None) -> Any:
    return score_file(scorer if scorer is not None else model["pipe"], model["contract"], "churn", "3", "run-3", path,
                      out_file.parent / "record", "score-run-2", chunk_rows=chunk_rows, log_writer=writer,
                      max_quarantine_fraction=0.01, predictions_path=out_file, flag_violations=True)


def read_any(path: Path) -> pd.DataFrame:
    return pd.read_csv(path) if path.suffix == ".csv" else pd.read_parquet(path)


def clean_rows(model: dict[str, Any], rows: int, seed: int) -> pd.DataFrame:
    """Rows that pass the scoring contract (the generator makes a few out-of-range ones)."""
    from mlops.core.validation import validate_batch
    from mlops.serving.scoring import scoring_contract

    df = churn_frame(rows * 2, seed=seed).drop(columns=["churned"])
    outcome = validate_batch(df, scoring_contract(model["contract"]), need_target=False)
    return df.drop(index=outcome.quarantined.index).head(rows).reset_index(drop=True)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_flagged_rows_are_scored_in_input_order_not_dropped(model: dict[str, Any], tmp_path: Path,
                                                            suffix: str) -> None:
    df, bad = messy_input()
    path = tmp_path / "in.csv"
    df.to_csv(path, index=False)
    writer = PredictionLogWriter(tmp_path / "log", Redactor(frozenset({"customer_id"}), "hash", b"k"))
    out = tmp_path / f"predictions{suffix}"
    result = run_flagged(model, path, out, 1000, writer)

    preds = read_any(out)
    assert preds["row"].tolist() == list(range(2500))  # nothing dropped, input order kept
    assert preds["customer_id"].tolist() == df["customer_id"].tolist()  # ids kept
    flagged = preds.loc[preds["contract_violation"].notna()]
    assert set(bad) <= set(flagged["row"]) and len(flagged) < 20
    assert result.rows_flagged == len(flagged) and result.rows_quarantined == 0 and result.rows_scored == 2500
    assert result.bad_rows == "flagged" and not (tmp_path / "record" / "quarantined.csv").exists()
    why = dict(zip(flagged["row"], flagged["contract_violation"], strict=True))
    assert "age" in why[5] and "monthly_charges" in why[999] and "region" in why[1000]
    assert "tenure_months" in why[2001]

    good_rows, proba = expected(model, df, flagged["row"].tolist())  # the good rows: as quarantine mode scores them
    assert np.allclose(preds.set_index("row").loc[good_rows, "prediction_proba"], proba, rtol=0, atol=1e-12)
    as_seen = coerce_to_contract(df.assign(tenure_months=pd.to_numeric(df["tenure_months"], errors="coerce")),
                                 model["contract"], need_target=False).frame  # 'twelve' is missing to the model
    want = model["pipe"].predict_proba(as_seen.loc[[2001, 1000], model["pipe"].feature_names_in_])[:, 1]
    assert np.allclose(preds.set_index("row").loc[[2001, 1000], "prediction_proba"], want, rtol=0, atol=1e-12)
    assert preds["prediction_proba"].notna().all()

    assert result.predictions_path == str(out) and not list(tmp_path.glob(".*partial"))
    log = read_prediction_log(tmp_path / "log")
    assert sorted(log["request_row"].tolist()) == list(range(2500))  # flagged rows are scored, so logged


def test_a_first_chunk_without_violations_still_gives_a_text_flag_column(model: dict[str, Any],
                                                                          tmp_path: Path) -> None:
    df = clean_rows(model, 300, seed=15)
    df.loc[250, "age"] = 150.0
    df.to_parquet(tmp_path / "in.parquet", index=False)
    result = run_flagged(model, tmp_path / "in.parquet", tmp_path / "out.parquet", 100)
    preds = pd.read_parquet(tmp_path / "out.parquet")
    assert result.chunks == 3 and result.rows_flagged == 1 and len(preds) == 300
    assert preds["contract_violation"].notna().tolist() == [i == 250 for i in range(300)]
    assert "age" in preds.loc[250, "contract_violation"]


class _Picky:
    """A model that refuses rows with age over 120, to stand for a row no model can score."""

    def __init__(self, pipe: Any) -> None:
        self.pipe, self.feature_names_in_, self.classes_ = pipe, pipe.feature_names_in_, pipe.classes_

    def _check(self, X: pd.DataFrame) -> None:
        if (X["age"] > 120).any():
            raise ValueError("age beyond what this model knows")

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        self._check(X)
        return self.pipe.predict(X)

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        self._check(X)
        return self.pipe.predict_proba(X)


@pytest.mark.slow
def test_a_row_the_model_cannot_score_keeps_its_place_and_says_why(model: dict[str, Any], tmp_path: Path) -> None:
    df = clean_rows(model, 200, seed=16)
    df.loc[[20, 120, 150], "age"] = 150.0
    df.to_csv(tmp_path / "in.csv", index=False)
    writer = PredictionLogWriter(tmp_path / "log", Redactor(frozenset(), "hash", b"k"))
    result = run_flagged(model, tmp_path / "in.csv", tmp_path / "out.csv", 1000, writer, _Picky(model["pipe"]))
    preds = pd.read_csv(tmp_path / "out.csv")
    assert preds["row"].tolist() == list(range(200)) and result.rows_scored == 197 and result.rows_flagged == 3
    assert any("3 of 200 rows broke the data contract" in w and "contract_violation" in w for w in result.warnings)
    for i in (20, 120, 150):
        assert np.isnan(preds.loc[i, "prediction_proba"])
        assert "age" in preds.loc[i, "contract_violation"] and "not scored (ValueError: age beyond" in \
            preds.loc[i, "contract_violation"]
    others = preds.drop(index=[20, 120, 150])
    frame = coerce_to_contract(df.drop(index=[20, 120, 150]), model["contract"], need_target=False).frame
    want = model["pipe"].predict_proba(frame[model["pipe"].feature_names_in_])[:, 1]
    assert np.allclose(others["prediction_proba"], want, rtol=0, atol=1e-12)
    assert len(read_prediction_log(tmp_path / "log")) == 197  # only what was scored


def test_flag_mode_bad_output_or_input_fails_with_one_sentence_and_leaves_no_file(model: dict[str, Any],
                                                                                   tmp_path: Path) -> None:
    df = clean_rows(model, 300, seed=17)
    df.to_csv(tmp_path / "in.csv", index=False)
    with pytest.raises(DataError, match=r"must end in \.csv or \.parquet"):
        run_flagged(model, tmp_path / "in.csv", tmp_path / "out.txt", 100)
    broken = df.astype({"age": object})
    broken.loc[200:, "age"] = "unknown"  # the last chunk's column is text: structural, the run stops
    broken.to_csv(tmp_path / "broken.csv", index=False)
    with pytest.raises(DataError, match="age"):
        run_flagged(model, tmp_path / "broken.csv", tmp_path / "out.parquet", 100)
    assert not (tmp_path / "out.parquet").exists() and not list(tmp_path.glob(".*partial"))
    with pytest.raises(DataError, match="not found"):
        run_flagged(model, tmp_path / "missing.csv", tmp_path / "out.csv", 100)
