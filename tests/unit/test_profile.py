"""The data profile: every column gets a role and a reason; nothing is dropped silently."""

import json

import numpy as np
import pandas as pd
import pytest

from mlops.core.config import FeatureConfig, ValidationConfig
from mlops.core.contract import infer_contract
from mlops.core.features import DateParts, build_preprocessor, feature_columns
from mlops.core.profile import profile_frame
from mlops.core.validation import QUARANTINE_REASON_COLUMN, validate_batch


def _frame(n: int = 400, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "Unnamed: 0": np.arange(n),
        "charges": rng.normal(60, 15, n).round(2).astype(str),
        "plan": rng.choice(["basic", "plus", "pro"], n),
        "signup": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 300, n), unit="D"),
        "notes": [f"called about bill {i}" for i in range(n)],
        "country": "US",
        "empty": np.nan,
        "y": rng.integers(0, 2, n),
    })


def _profile(df: pd.DataFrame, **kw: object):  # noqa: ANN202 - test helper
    return profile_frame(df, "y", "classification", **kw)


def test_a_few_stray_words_keep_a_column_numeric_and_are_reported() -> None:
    df = _frame()
    df.loc[[3, 50, 51], "charges"] = ["n.a.", "unknown", "n.a."]
    col = _profile(df).by_name["charges"]
    assert (col.role, col.kind, col.feature) == ("feature", "numeric", True)
    assert col.offending == {"n.a.": 2, "unknown": 1}
    assert "'charges': 3 value(s) are not numbers: 'n.a.' x2, 'unknown' x1" in _profile(df).offending_lines()[0]
    # their rows go to quarantine with the value they held, the others are accepted as numbers
    contract = infer_contract(df, "y", "classification", ValidationConfig())
    assert contract.by_name["charges"].kind == "numeric" and contract.by_name["charges"].role == "feature"
    out = validate_batch(df, contract)
    assert sorted(out.quarantined.index) == [3, 50, 51]
    assert "expect_column_values_to_be_of_type(charges, numeric): 'unknown'" in out.quarantined.loc[50,
                                                                                                   QUARANTINE_REASON_COLUMN]
    assert pd.api.types.is_float_dtype(out.good["charges"])


def test_an_unnamed_unique_monotonic_index_is_an_id_not_a_feature() -> None:
    df = _frame()
    prof = _profile(df)
    col = prof.by_name["Unnamed: 0"]
    assert (col.role, col.feature) == ("id", False) and "unique per row, monotonic" in col.why
    contract = infer_contract(df, "y", "classification", ValidationConfig())
    assert contract.by_name["Unnamed: 0"].role == "id"
    assert "Unnamed: 0" not in feature_columns(contract)["numeric"]
    # a named integer column counting up one per row is an id too; shuffled numbers or few rows are not
    assert _profile(df.rename(columns={"Unnamed: 0": "row_no"})).by_name["row_no"].role == "id"
    shuffled = df.assign(**{"Unnamed: 0": np.random.default_rng(1).permutation(len(df))})
    assert _profile(shuffled.rename(columns={"Unnamed: 0": "k"})).by_name["k"].role == "feature"
    few = df.head(10).assign(y=[0, 1] * 5).rename(columns={"Unnamed: 0": "row_no"})
    assert _profile(few).by_name["row_no"].role == "feature"


def test_every_column_that_is_not_a_feature_has_a_reason() -> None:
    prof = _profile(_frame())
    decided = {c.name: (c.role, c.kind) for c in prof.columns}
    assert decided == {"Unnamed: 0": ("id", "integer"), "charges": ("feature", "numeric"),
                       "plan": ("feature", "categorical"), "signup": ("feature", "datetime"),
                       "notes": ("ignored", "text"), "country": ("ignored", "text"), "empty": ("ignored", "text"),
                       "y": ("target", "categorical")}
    reasons = dict(prof.not_used)
    assert reasons["notes"].startswith("ignored: 400 distinct values (more than validation.max_categories = 50)")
    assert reasons["country"] == "ignored: constant (every value is 'US')"
    assert reasons["empty"] == "ignored: all values are missing"
    assert prof.features == ["charges", "plan", "signup"]
    # the contract takes the profile's decisions as they are, in the same words
    contract = infer_contract(_frame(), "y", "classification", ValidationConfig(), profile=prof)
    assert {c.name: (c.role, c.kind) for c in contract.columns} == decided
    # a profile of other data is a bug, not something to profile again
    with pytest.raises(ValueError, match="the data profile has no column 'extra'"):
        infer_contract(_frame().assign(extra=1.0), "y", "classification", ValidationConfig(), profile=prof)
    assert sorted(n for g in feature_columns(contract).values() for n in g) == ["charges", "plan", "signup"]


def test_date_like_strings_are_dates_and_unique_tokens_are_ids() -> None:
    df = _frame().assign(signup=lambda d: d["signup"].dt.strftime("%Y-%m-%d"),
                         code=[f"C{i:06d}" for i in range(400)])
    prof = _profile(df)
    assert (prof.by_name["signup"].role, prof.by_name["signup"].kind) == ("feature", "datetime")
    assert prof.by_name["code"].role == "id" and "unique per row" in prof.by_name["code"].why


def test_declared_types_override_inference() -> None:
    df = _frame()
    prof = _profile(df, declared={"Unnamed: 0": "numeric", "plan": "text", "country": "categorical",
                                  "signup": "drop"})
    by = prof.by_name
    assert (by["Unnamed: 0"].role, by["Unnamed: 0"].kind, by["Unnamed: 0"].feature) == ("feature", "numeric", True)
    assert (by["plan"].role, by["plan"].kind, by["plan"].feature) == ("ignored", "text", False)
    assert (by["country"].role, by["country"].kind) == ("feature", "categorical")
    assert by["signup"].role == "ignored" and by["signup"].why == "declared drop in columns"


def test_profile_outputs_for_cli_artifact_and_mlflow() -> None:
    df = _frame()
    df.loc[[1, 2], "charges"] = "oops"
    prof = _profile(df, markers={"plan": {"?": 4}}, malformed=["d.csv line 7 has 2 fields, the header has 8"])
    lines = prof.summary_lines()
    assert lines[0].startswith("Columns    3 features (1 numeric, 1 category, 1 date); not used: Unnamed: 0 (id: ")
    assert "notes (ignored: 400 distinct values" in lines[0] and "country (ignored: constant" in lines[0]
    assert any(ln.startswith("Markers    'plan': read as missing: '?' x4") for ln in lines)
    assert any(ln.startswith("Bad values 'charges': 2 value(s) are not numbers: 'oops' x2") for ln in lines)
    assert any(ln.startswith("Malformed  1 line(s) quarantined: d.csv line 7") for ln in lines)
    md = prof.to_markdown()
    assert "| `notes` | ignored | no | text | 0 | 400 |" in md and "## Not used as features" in md
    assert "| `charges` | feature | yes | numeric |" in md
    assert json.loads(json.dumps(prof.to_dict()))["not_used"][0]["column"] == "Unnamed: 0"


def test_profile_follows_the_champions_contract() -> None:
    df = _frame()
    contract = infer_contract(df, "y", "classification", ValidationConfig(), declared={"plan": "text"})
    prof = _profile(df.assign(extra=1.5)).follow_contract({c.name: (c.role, c.kind) for c in contract.columns},
                                                          "the champion's data contract")
    assert (prof.by_name["plan"].role, prof.by_name["plan"].feature) == ("ignored", False)
    assert prof.by_name["plan"].why == ("as in the champion's data contract (here: feature, categorical: "
                                        "3 distinct values)")
    assert prof.by_name["extra"].why == "not in the champion's data contract"


def test_date_only_columns_get_no_hour_part() -> None:
    rng = np.random.default_rng(0)
    n = 200
    X = pd.DataFrame({
        "day": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 365, n), unit="D"),
        "at": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 365 * 24 * 3600, n), unit="s"),
    })
    parts = DateParts(("month", "dayofweek", "hour")).fit(X)
    assert parts.parts_ == {"day": ["month", "dayofweek"], "at": ["month", "dayofweek", "hour"]}
    names = list(parts.get_feature_names_out())
    assert names == ["day_month", "day_dayofweek", "at_month", "at_dayofweek", "at_hour"]
    assert parts.transform(X).shape == (n, len(names))
    # a model fitted before per-column parts existed still applies every configured part
    legacy = DateParts(("month", "hour")).fit(X)
    del legacy.parts_
    assert legacy.transform(X).shape == (n, 4)


def test_a_decimal_year_goes_on_where_the_training_rows_end_and_a_calendar_year_does_not() -> None:
    """Fitted on one calendar year, `year` is constant and dropped (a tree then reads the trend from the month and
    maps next January to last January's level); `decimal_year` is a time axis that the next January extends."""
    from mlops.core.periods import decimal_year

    times = pd.Series(pd.date_range("2023-01-01", "2023-12-31 23:00", freq="h"))
    fitted = DateParts(("year", "decimal_year", "month", "hour")).fit(times.to_frame("at"))
    assert fitted.parts_ == {"at": ["decimal_year", "month", "hour"]}
    assert list(fitted.get_feature_names_out()) == ["at_decimal_year", "at_month", "at_hour"]
    seen = fitted.transform(times.to_frame("at"))[:, 0]
    assert seen[0] == 2023.0 and np.all(np.diff(seen) > 0) and seen[-1] < 2024.0
    later = fitted.transform(pd.DataFrame({"at": pd.to_datetime(["2024-01-01 00:00", "2024-07-02 00:00"])}))
    assert later[:, 0].tolist() == [2024.0, 2024.5]  # 2024 is a leap year: 183 of 366 days gone by
    assert decimal_year(pd.Timestamp("2024-07-02").to_pydatetime()) == 2024.5  # the model server's one-row path
    two_years = pd.Series(pd.date_range("2023-06-01", periods=400, freq="D"))
    calendar = DateParts(("year", "month")).fit(two_years.to_frame("at"))
    assert calendar.transform(two_years[[0, 399]].to_frame("at"))[:, 0].tolist() == [2023.0, 2024.0]


def test_a_year_month_is_a_time_axis_in_whole_months() -> None:
    """`year_month` steps once a month (constant inside one, so no split finer than a month), next January comes
    after December, and in one month's rows it is constant and dropped."""
    from mlops.core.periods import year_month

    times = pd.Series(pd.date_range("2023-01-01", "2023-12-31 23:00", freq="h"))
    fitted = DateParts(("year_month", "month", "hour")).fit(times.to_frame("at"))
    assert fitted.parts_ == {"at": ["year_month", "month", "hour"]}
    seen = fitted.transform(times.to_frame("at"))[:, 0]
    assert sorted(set(seen.tolist())) == [2023.0 + m / 12.0 for m in range(12)] and np.all(np.diff(seen) >= 0)
    later = fitted.transform(pd.DataFrame({"at": pd.to_datetime(["2024-01-31 23:00", "2024-07-02 00:00", None])}))
    assert later[:2, 0].tolist() == [2024.0, 2024.5] and later[0, 0] > seen.max()
    assert year_month(pd.Timestamp("2024-07-31 23:59").to_pydatetime()) == 2024.5  # the model server's one-row path
    one_month = pd.Series(pd.date_range("2024-03-01", periods=500, freq="h"))[:744 // 2]
    assert DateParts(("year_month", "hour")).fit(one_month.to_frame("at")).parts_ == {"at": ["hour"]}


def test_date_parts_read_datetimes_as_they_are_and_parse_text_the_same_way() -> None:
    from mlops.core.periods import as_times

    times = pd.Series(pd.date_range("2024-01-01", periods=300, freq="7h"))
    assert as_times(times) is times  # already datetimes: not parsed again
    text = times.dt.strftime("%Y-%m-%d %H:%M:%S").astype(object)
    text.iloc[3] = "not a time"
    parsed = as_times(text)
    assert parsed.isna().tolist() == [i == 3 for i in range(300)] and (parsed.drop(3) == times.drop(3)).all()
    with pytest.raises(ValueError):
        as_times(text, errors="raise")
    fitted = DateParts(("month", "dayofweek", "hour")).fit(times.to_frame("at"))
    from_times, from_text = fitted.transform(times.to_frame("at")), fitted.transform(text.to_frame("at"))
    assert np.isnan(from_text[3]).all() and not np.isnan(from_times).any()
    assert np.array_equal(np.delete(from_times, 3, axis=0), np.delete(from_text, 3, axis=0))


def test_preprocessor_has_no_hour_feature_for_a_date_only_column() -> None:
    df = _frame().drop(columns=["Unnamed: 0"])
    contract = infer_contract(df, "y", "classification", ValidationConfig())
    pre = build_preprocessor(contract, FeatureConfig()).fit(df.drop(columns=["y"]).assign(
        charges=lambda d: d["charges"].astype(float)))
    names = list(pre.get_feature_names_out())
    assert "signup_month" in names and "signup_hour" not in names
    assert not any(n.startswith(("notes", "country", "empty")) for n in names)
