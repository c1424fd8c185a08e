"""What a retrain trains on: one dtype per column whatever the source format, and `train_on: recent`."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from mlops.core import rowkeys
from mlops.core.config import ValidationConfig, parse_config
from mlops.core.contract import infer_contract
from mlops.core.data import generate_churn, read_table
from mlops.monitoring import retraining
from tests.conftest import small_config


@pytest.fixture(scope="module")
def contract():
    df = generate_churn(600, seed=1)
    return infer_contract(df, "churned", "classification", ValidationConfig(), "customer_id", "event_time")


def _csv_config(tmp_path: Path, rows: int = 400, **policy):
    """A config whose source is a CSV file with a timestamp column (read back as text)."""
    path = tmp_path / "history.csv"
    generate_churn(rows, seed=1).to_csv(path, index=False)
    raw = small_config(source={"kind": "file", "path": str(path)}, monitoring={"policy": policy})
    return parse_config(raw)


@pytest.mark.parametrize("max_rows", [100_000, 300])
def test_a_csv_source_with_a_timestamp_retrains_on_original_plus_new(tmp_path: Path, contract, max_rows: int) -> None:
    cfg = _csv_config(tmp_path)
    original = retraining.load_original(cfg, None)
    assert original is not None and not pd.api.types.is_datetime64_any_dtype(original["event_time"])  # text
    new = retraining.training_rows(generate_churn(120, seed=2, start=pd.Timestamp("2025-08-01")), contract)
    frame, what = retraining.build_training_frame("original_plus_new", original, new, new, contract, max_rows)
    assert str(frame["event_time"].dtype) == "datetime64[ns]" and frame["tenure_months"].dtype == float
    path = retraining.write_training_file(frame, tmp_path / "training", "t")
    back, new_rows = rowkeys.pop_new_rows(read_table(path))
    assert len(back) == min(520, max_rows) and len(new_rows) == 120
    if max_rows < 520:
        assert frame["event_time"].is_monotonic_increasing and "capped" in what


def test_train_on_recent_keeps_a_rolling_window_in_rows_or_days(contract) -> None:
    original = retraining.training_rows(generate_churn(400, seed=1), contract)  # January to June
    new = retraining.training_rows(generate_churn(120, seed=2, start=pd.Timestamp("2025-08-01")), contract)
    newest = new["event_time"].max()
    by_rows, what = retraining.build_training_frame("recent", original, new, new, contract, 100_000, recent_rows=200)
    assert len(by_rows) == 200 and by_rows["event_time"].is_monotonic_increasing
    assert int(by_rows[rowkeys.NEW_ROW_COLUMN].sum()) == 120 and "kept 200 of 520 rows" in what
    assert by_rows["event_time"].min() == pd.concat([original, new])["event_time"].sort_values().iloc[-200]
    by_days, what = retraining.build_training_frame("recent", original, new, new, contract, 100_000, recent_days=30)
    assert by_days["event_time"].min() >= newest - pd.Timedelta(days=30) and "the last 30 day(s)" in what
    assert len(by_days) == int((pd.concat([original, new])["event_time"] >= newest - pd.Timedelta(days=30)).sum())


def test_train_on_recent_is_validated_in_one_sentence(contract) -> None:
    from mlops.core.errors import ConfigError, DataError

    def policy(**p):
        return parse_config(small_config(monitoring={"policy": p})).monitoring.policy

    assert policy(train_on="recent", recent_days=90).recent_days == 90
    with pytest.raises(ConfigError, match=r"train_on 'recent' needs a window: set recent_rows .* or recent_days"):
        policy(train_on="recent")
    with pytest.raises(ConfigError, match=r"apply only to train_on 'recent' \(not 'new'\)"):
        policy(train_on="new", recent_rows=50_000)
    no_time = contract.__class__(contract.columns, contract.target, contract.task, contract.id_column, None)
    rows = retraining.training_rows(generate_churn(150, seed=3), contract).drop(columns=["event_time"])
    no_time.columns = [c for c in contract.columns if c.name != "event_time"]
    with pytest.raises(DataError, match=r"^train_on 'recent' with recent_days needs the data's timestamp column"):
        retraining.build_training_frame("recent", rows, rows.tail(20), rows.tail(20), no_time, 100_000, recent_days=9)
