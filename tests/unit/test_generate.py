"""The time-indexed demand generator: deterministic, seasonal, trending, shifting, and worth retraining on."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from mlops.core.config import load_config, parse_config
from mlops.core.data import load_source
from mlops.core.errors import ConfigError
from mlops.core.generate import generate_demand
from tests.conftest import REPO

COLUMNS = ["timestamp", "temperature", "humidity", "wind_speed", "weather", "tariff", "holiday", "demand"]


@pytest.fixture(scope="module")
def year() -> pd.DataFrame:
    return generate_demand(24 * 365, seed=3, shift=0.0)


def test_same_seed_same_table_other_seed_other_table() -> None:
    a, b = generate_demand(2000, seed=1), generate_demand(2000, seed=1)
    pd.testing.assert_frame_equal(a, b)
    assert not a["demand"].equals(generate_demand(2000, seed=2)["demand"])


def test_shape_dtypes_and_gaps(year: pd.DataFrame) -> None:
    assert list(year.columns) == COLUMNS and len(year) == 24 * 365
    assert pd.api.types.is_datetime64_any_dtype(year["timestamp"])
    assert (year["timestamp"].diff().dropna() == pd.Timedelta(hours=1)).all()
    for col in ["temperature", "humidity", "wind_speed", "demand"]:
        assert pd.api.types.is_float_dtype(year[col]), col
    assert pd.api.types.is_integer_dtype(year["holiday"]) and set(year["holiday"]) == {0, 1}
    assert pd.api.types.is_string_dtype(year["weather"]) and pd.api.types.is_string_dtype(year["tariff"])
    assert set(year["weather"].dropna()) == {"clear", "cloudy", "fog", "rain", "snow"}
    assert year.loc[year["timestamp"].dt.strftime("%m-%d") == "12-25", "holiday"].eq(1).all()
    missing = year.isna().mean()
    for col in ["temperature", "humidity", "weather", "demand"]:
        assert 0 < missing[col] < 0.03, col  # a few gaps, as sensors and meters have
    assert missing[["timestamp", "tariff", "holiday", "wind_speed"]].eq(0).all()
    assert year["humidity"].dropna().between(0, 100).all() and (year["wind_speed"] >= 0).all()
    assert (year["demand"].dropna() > 0).all()
    quarter = generate_demand(96, seed=1, freq="15min")["timestamp"]
    assert (quarter.diff().dropna() == pd.Timedelta(minutes=15)).all() and quarter.iloc[-1].day == 1
    clean = generate_demand(2000, seed=1, missing=0.0)
    assert not clean.isna().any().any()


def test_seasons_days_and_holidays_show(year: pd.DataFrame) -> None:
    month = year["timestamp"].dt.month
    temp = year.groupby(month)["temperature"].mean()
    assert temp[7] - temp[1] > 15  # summer is much warmer than winter
    hour = year["timestamp"].dt.hour
    assert year.loc[hour == 15, "temperature"].mean() > year.loc[hour == 4, "temperature"].mean() + 5
    assert year.loc[hour == 18, "demand"].mean() > 1.4 * year.loc[hour == 3, "demand"].mean()
    dow = year["timestamp"].dt.dayofweek
    working = (dow < 5) & (year["holiday"] == 0)
    assert year.loc[working, "demand"].mean() > 1.1 * year.loc[dow == 6, "demand"].mean()
    assert year.loc[working, "demand"].mean() > 1.1 * year.loc[year["holiday"] == 1, "demand"].mean()
    assert set(year.loc[year["weather"] == "snow", "timestamp"].dt.month) <= {1, 2, 3, 4, 10, 11, 12}


def test_trend_grows_the_level_as_configured() -> None:
    flat = generate_demand(2 * 24 * 365, seed=5, trend=0.0, shift=0.0, missing=0.0)
    grown = generate_demand(2 * 24 * 365, seed=5, trend=0.1, shift=0.0, missing=0.0)
    pd.testing.assert_frame_equal(flat.drop(columns="demand"), grown.drop(columns="demand"))  # same weather
    years = (flat["timestamp"] - flat["timestamp"].iloc[0]) / pd.Timedelta(days=365.25)
    np.testing.assert_allclose(grown["demand"] / flat["demand"], 1 + 0.1 * years, rtol=2e-3)


def test_shift_changes_demand_from_its_date_on() -> None:
    at = pd.Timestamp("2023-07-01")
    before = generate_demand(24 * 365, seed=5, shift=0.0, shift_at=at.date(), missing=0.0)
    after = generate_demand(24 * 365, seed=5, shift=0.2, shift_at=at.date(), missing=0.0)
    pd.testing.assert_frame_equal(before.drop(columns="demand"), after.drop(columns="demand"))
    late = (before["timestamp"] >= at).to_numpy()
    assert before["demand"][~late].equals(after["demand"][~late])
    ratio = after["demand"][late] / before["demand"][late]
    assert ratio.min() > 1.2 - 1e-3 and ratio.max() < 1.2 * 1.4 + 1e-3  # level +20%, heating/cooling +40%
    assert ratio.mean() > 1.22  # the thermal part moved too, not just the level
    halfway = (generate_demand(1000, seed=5, shift=0.2, missing=0.0)["demand"]
               / generate_demand(1000, seed=5, shift=0.0, missing=0.0)["demand"]).to_numpy()
    assert np.allclose(halfway[:500], 1.0) and (halfway[500:] > 1.2 - 1e-3).all()  # by default it starts halfway


def test_corrupt_rows_carry_sensor_error_codes() -> None:
    df = generate_demand(5000, seed=1, corrupt=0.01)
    assert (df["temperature"] == -99.9).sum() > 10 and (df["wind_speed"] == 999.0).sum() > 10
    assert not (generate_demand(5000, seed=1)["temperature"] == -99.9).any()


def _features(df: pd.DataFrame) -> pd.DataFrame:
    ts = df["timestamp"].dt
    weather = pd.Categorical(df["weather"], categories=["clear", "cloudy", "fog", "rain", "snow"]).codes
    return pd.DataFrame({"hour": ts.hour, "dayofweek": ts.dayofweek, "month": ts.month, "holiday": df["holiday"],
                         "temperature": df["temperature"], "humidity": df["humidity"],
                         "wind_speed": df["wind_speed"], "weather": weather})


def test_a_model_from_winter_is_wrong_in_august_and_retraining_recovers() -> None:
    from sklearn.ensemble import HistGradientBoostingRegressor
    from threadpoolctl import threadpool_limits

    df = generate_demand(seed=7).dropna(subset=["demand"])
    month = (df["timestamp"].dt.year - 2023) * 12 + df["timestamp"].dt.month
    august = df[month == 8]

    def rmse(train: pd.DataFrame) -> float:
        model = HistGradientBoostingRegressor(max_iter=60, random_state=0).fit(_features(train), train["demand"])
        return float(np.sqrt(np.mean((model.predict(_features(august)) - august["demand"]) ** 2)))

    with threadpool_limits(1):  # tiny fits; OpenMP threads only contend with whatever else runs
        early, recent = rmse(df[month <= 3]), rmse(df[month.between(5, 7)])
    assert early > 1.6 * recent, (early, recent)


def _source(**src: Any) -> dict[str, Any]:
    raw = load_config(REPO / "configs" / "demand.yaml").model_dump(mode="json")
    raw["source"] = {"kind": "generated", **src}
    return raw


def test_demand_config_loads_and_reads_the_generated_table() -> None:
    cfg = load_config(REPO / "configs" / "demand.yaml")
    assert cfg.task == "regression" and cfg.target == "demand" and cfg.timestamp_column == "timestamp"
    assert cfg.source.dataset == "demand" and cfg.source.rows == 17_520
    assert [m.family for m in cfg.models] == ["hist_gradient_boosting"]
    assert parse_config(_source(dataset="demand")).source.rows == 17_520  # two years of hours by default
    small = parse_config(_source(dataset="demand", rows=500, seed=3))
    pd.testing.assert_frame_equal(load_source(small), generate_demand(500, seed=3))
    churn = load_config(REPO / "configs" / "default.yaml").source
    assert churn.dataset == "churn" and churn.rows == 20_000


@pytest.mark.parametrize(("src", "words"), [
    ({"dataset": "demand", "drift": 0.5}, "'drift' applies to dataset churn only"),
    ({"trend": 0.1}, "'trend' applies to dataset demand only"),
    ({"dataset": "demand", "shift_at": "2022-06-01"}, "shift_at 2022-06-01 must fall after start 2023-01-01"),
    ({"dataset": "demand", "rows": 1000, "shift_at": "2024-06-01"}, "by the last row (2023-02-11"),
    ({"dataset": "weather"}, "source.dataset"),
])
def test_bad_generated_source_is_one_sentence(src: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(_source(**src), origin="demand.yaml")
    msg = str(err.value)
    assert words in msg and msg.startswith("demand.yaml: field 'source") and "\n" not in msg
