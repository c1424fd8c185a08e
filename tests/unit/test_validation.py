from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops.core.config import UserExpectation, ValidationConfig
from mlops.core.contract import DataContract, infer_contract, merge_expectations
from mlops.core.data import MalformedRow
from mlops.core.errors import DataError
from mlops.core.validation import (
    QUARANTINE_REASON_COLUMN,
    add_malformed,
    enforce_quarantine_limit,
    validate_batch,
    write_quarantine,
)


@pytest.fixture
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 200
    return pd.DataFrame({
        "x": rng.normal(10, 2, n),
        "k": rng.integers(0, 5, n),
        "c": rng.choice(["a", "b"], n),
        "y": rng.integers(0, 2, n),
    })


@pytest.fixture
def contract(frame: pd.DataFrame) -> DataContract:
    return infer_contract(frame, "y", "classification", ValidationConfig())


def test_inferred_contract_has_kinds_ranges_categories(contract: DataContract, frame: pd.DataFrame) -> None:
    by = contract.by_name
    assert by["x"].kind == "numeric" and by["k"].kind == "integer" and by["c"].kind == "categorical"
    assert by["x"].min < frame["x"].min() and by["x"].max > frame["x"].max()  # margin added
    assert by["c"].allowed == ["a", "b"]
    assert DataContract.from_json(contract.to_json()) == contract


def test_clean_batch_passes(frame: pd.DataFrame, contract: DataContract) -> None:
    out = validate_batch(frame, contract)
    assert len(out.good) == len(frame) and out.quarantined.empty


def test_a_fraction_in_an_integer_column_breaks_the_contract(frame: pd.DataFrame, contract: DataContract) -> None:
    """Issue 21: `3.5` was accepted for an integer column; it is quarantined as a wrong type, whole floats
    (`2.0`, as CSV readers give them back) and numbers as text (`"4"`) stay valid."""
    from mlops.core.contract import coerce_to_contract

    bad = frame.copy()
    bad["k"] = bad["k"].astype(object)
    bad.loc[2, "k"], bad.loc[4, "k"], bad.loc[6, "k"], bad.loc[8, "k"] = 3.5, 2.0, "4", "1.25"
    coerced = coerce_to_contract(bad, contract)
    assert sorted(coerced.row_failures) == [2, 8]
    assert coerced.row_failures[2] == ["expect_column_values_to_be_of_type(k, integer): '3.5'"]
    assert np.isnan(coerced.frame.loc[2, "k"]) and coerced.frame.loc[4, "k"] == 2.0 and coerced.frame.loc[6, "k"] == 4.0
    out = validate_batch(bad, contract)
    assert len(out.good) == len(frame) - 2 and sorted(out.quarantined.index) == [2, 8]
    assert out.quarantined[QUARANTINE_REASON_COLUMN].str.contains("of_type(k, integer)", regex=False).all()


def test_numbers_stored_as_numbers_and_as_text_coerce_alike(frame: pd.DataFrame, contract: DataContract) -> None:
    """A column held as float64 or int64 takes a one-pass path (nothing to parse); it must give what the parsing
    path gives for the same values as objects: infinities and fractions of whole-number columns nulled and
    reported with the value, everything else kept, on any index."""
    from mlops.core.contract import coerce_to_contract

    numbers = frame.copy()
    numbers["x"] = numbers["x"].where(numbers.index % 17 != 0)  # some missing
    numbers.loc[3, "x"], numbers.loc[5, "x"] = np.inf, -np.inf
    numbers["k"] = numbers["k"].astype(float)
    numbers.loc[2, "k"], numbers.loc[9, "k"], numbers.loc[11, "k"] = 3.5, np.inf, np.nan
    numbers.index = numbers.index + 1000
    as_objects = numbers.astype({"x": object, "k": object})
    fast, parsed = coerce_to_contract(numbers, contract), coerce_to_contract(as_objects, contract)
    assert fast.row_failures == parsed.row_failures
    assert sorted(fast.row_failures) == [2, 3, 5, 9]  # positions
    assert fast.row_failures[2] == ["expect_column_values_to_be_of_type(k, integer): '3.5'"]
    assert fast.row_failures[3] == ["expect_column_values_to_be_of_type(x, numeric): 'inf'"]
    pd.testing.assert_frame_equal(fast.frame, parsed.frame)
    assert fast.frame["x"].isna().sum() == numbers["x"].isna().sum() + 2
    ints = coerce_to_contract(frame, contract)  # int64: whole by construction
    assert ints.row_failures == {} and ints.frame["k"].dtype == np.float64
    assert (ints.frame["k"] == frame["k"]).all()


def test_bad_rows_are_quarantined_with_the_expectation_they_broke(frame: pd.DataFrame, contract: DataContract,
                                                                  tmp_path: Path) -> None:
    bad = frame.copy()
    bad["x"] = bad["x"].astype(object)
    bad.loc[3, "x"] = 1e9
    bad.loc[5, "c"] = "zzz"
    bad.loc[7, "x"] = "not a number"
    bad.loc[9, "y"] = np.nan
    out = validate_batch(bad, contract)
    assert len(out.good) == len(frame) - 4
    reasons = dict(zip(out.quarantined.index, out.quarantined[QUARANTINE_REASON_COLUMN], strict=True))
    assert "expect_column_values_to_be_between(x" in reasons[3]
    assert "expect_column_values_to_be_in_set(c" in reasons[5]
    assert "expect_column_values_to_be_of_type(x, numeric)" in reasons[7]
    assert "expect_column_values_to_not_be_null(y" in reasons[9]
    path = write_quarantine(out, tmp_path)
    written = pd.read_csv(path)
    assert len(written) == 4 and QUARANTINE_REASON_COLUMN in written.columns


def test_too_many_bad_rows_stop_the_run(frame: pd.DataFrame, contract: DataContract) -> None:
    bad = frame.copy()
    bad.loc[:30, "c"] = "zzz"
    out = validate_batch(bad, contract)
    with pytest.raises(DataError, match=r"31 of 200 rows .* above the allowed 5.0%"):
        enforce_quarantine_limit(out, 0.05, None)
    enforce_quarantine_limit(out, 0.2, None)  # under the limit: goes on


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.drop(columns=["x"]), r"\['x'\] required by the data contract are missing"),
        (lambda d: d.assign(x="text"), "should be numeric"),
        (lambda d: d.assign(c=None), "entirely empty"),
        (lambda d: d.iloc[:0], "no rows"),
    ],
)
def test_structural_failures(frame: pd.DataFrame, contract: DataContract, mutate, message: str) -> None:
    with pytest.raises(DataError, match=message):
        validate_batch(mutate(frame), contract)


def test_null_burst_is_a_batch_failure(frame: pd.DataFrame, contract: DataContract) -> None:
    bad = frame.copy()
    bad.loc[:100, "x"] = np.nan
    with pytest.raises(DataError, match="expect_column_values_to_not_be_null"):
        validate_batch(bad, contract)


def test_user_expectations_are_merged(frame: pd.DataFrame, contract: DataContract) -> None:
    merged = merge_expectations(contract, [UserExpectation(type="between", column="x", min=9, max=11)])
    out = validate_batch(frame, merged)
    assert 0 < len(out.quarantined) < len(frame)
    assert out.quarantined[QUARANTINE_REASON_COLUMN].str.contains("min_value=9").all()
    with pytest.raises(DataError, match="no such column"):
        merge_expectations(contract, [UserExpectation(type="not_null", column="nope")])


def test_malformed_rows_join_the_quarantine_with_their_reason(frame: pd.DataFrame, contract: DataContract,
                                                              tmp_path: Path) -> None:
    header = list(frame.columns)
    malformed = [MalformedRow("d.csv", 41, ["1.5", "2"], header), MalformedRow("d.csv", 203, ["9.1"], header, last=True)]
    bad = frame.copy()
    bad.loc[5, "c"] = "zzz"
    out = add_malformed(validate_batch(bad, contract), malformed)
    assert out.checked == len(frame) + 2 and len(out.quarantined) == 3 and len(out.good) == len(frame) - 1
    path = write_quarantine(out, tmp_path)
    written = pd.read_csv(path)
    reasons = written[QUARANTINE_REASON_COLUMN].tolist()
    assert reasons[1:] == ["malformed: d.csv line 41 has 2 fields, the header has 4",
                           "malformed: d.csv the last row (line 203) has 1 fields, the header has 4"]
    assert written.loc[1, "x"] == 1.5 and pd.isna(written.loc[2, "c"])
    # malformed rows weigh on the quarantine limit like any other bad row
    with pytest.raises(DataError, match=r"3 of 202 rows"):
        enforce_quarantine_limit(out, 0.01, path)


def test_columns_that_are_not_features_do_not_fail_validation(frame: pd.DataFrame) -> None:
    wide = frame.assign(notes=[f"free text {i}" for i in range(len(frame))], constant="same")
    contract = infer_contract(wide, "y", "classification", ValidationConfig())
    assert contract.by_name["notes"].role == contract.by_name["constant"].role == "ignored"
    later = wide.assign(constant=None)  # a "null burst" in a column no model uses
    later.loc[:50, "notes"] = None
    out = validate_batch(later, contract)
    assert len(out.good) == len(frame) and out.quarantined.empty
