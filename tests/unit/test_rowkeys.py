"""Row hashes (mlops.core.rowkeys): the same row hashes the same however its values were stored, different rows
hash apart, and the share of a window's rows a version trained on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops.core import rowkeys
from mlops.core.config import ValidationConfig
from mlops.core.contract import infer_contract
from mlops.core.data import generate_churn


@pytest.fixture(scope="module")
def contract():
    df = generate_churn(600, seed=1)
    return infer_contract(df, "churned", "classification", ValidationConfig(), "customer_id", "event_time")


@pytest.mark.parametrize("a, b", [
    (pd.Series([1, 2, None], dtype="Int64"), pd.Series(["1", "2.0", None], dtype=object)),
    (pd.Series([1.5, np.nan]), pd.Series(["1.5", ""]).replace("", None)),
    (pd.Series([True, False]), pd.Series(["True", "false"])),
    (pd.Series(pd.to_datetime(["2025-01-01 10:00:00", "2025-02-01 00:00:00.5"], format="mixed")),
     pd.Series(["2025-01-01T11:00:00+01:00", "2025-02-01 00:00:00.500"])),
    (pd.Series(["north", None, "3"], dtype="category"), pd.Series(["north", np.nan, 3.0], dtype=object)),
])
def test_row_hashes_ignore_how_a_value_was_stored(a: pd.Series, b: pd.Series) -> None:
    assert (rowkeys.column_hashes(a) == rowkeys.column_hashes(b)).all()
    left, right = pd.DataFrame({"x": a, "y": 1}), pd.DataFrame({"y": 1.0, "x": b})
    assert (rowkeys.row_hashes(left, ["x", "y"]) == rowkeys.row_hashes(right, ["y", "x"])).all()


def test_row_hashes_tell_different_rows_apart() -> None:
    df = generate_churn(5000, seed=4)
    h = rowkeys.row_hashes(df, list(df.columns))
    assert len(np.unique(h)) == 5000
    swapped = df.assign(tenure_months=df["support_calls"], support_calls=df["tenure_months"])
    differs = (df["tenure_months"] != df["support_calls"]).to_numpy()
    assert differs.sum() > 4000 and not (rowkeys.row_hashes(swapped, list(df.columns)) == h)[differs].any()


def test_seen_in_training_share_near_one_for_repeats_and_zero_for_fresh_rows(tmp_path: Path, contract) -> None:
    from mlops.core.contract import coerce_to_contract

    train = coerce_to_contract(generate_churn(2000, seed=1), contract).frame  # as training holds them
    path = rowkeys.save_training_hashes(train, contract, ["age"], tmp_path / "h.npz")
    known = rowkeys.RowHashSet.load(path)
    assert "customer_id" not in known.columns and "age" not in known.columns and len(known.hashes) == 2000
    csv = tmp_path / "window.csv"
    generate_churn(2000, seed=1).head(800).to_csv(csv, index=False)  # the same rows, read back from CSV
    repeat = rowkeys.seen_in_training(pd.read_csv(csv), known, "3")
    assert repeat["share"] == 1.0 and repeat["seen_rows"] == 800 and "v3 trained on" in repeat["reason"]
    mixed = pd.concat([pd.read_csv(csv).head(300), generate_churn(700, seed=9)], ignore_index=True)
    assert rowkeys.seen_in_training(mixed, known)["share"] == pytest.approx(0.3)
    assert rowkeys.seen_in_training(generate_churn(1000, seed=9), known)["share"] == 0.0
    old = rowkeys.seen_in_training(generate_churn(10, seed=9), None, "1")
    assert old["share"] is None and old["reason"].startswith("unknown: v1 keeps no training row hashes")
    hashed = generate_churn(10, seed=9)
    hashed.attrs["hashed_columns"] = ["region"]
    assert rowkeys.seen_in_training(hashed, known)["share"] is None
