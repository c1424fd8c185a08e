"""The time-indexed demand generator: deterministic, seasonal, trending, shifting, and worth retraining on."""

from __future__ import annotations

import hashlib
from datetime import date
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mlops.core.config import GeneratedSource, load_config, parse_config
from mlops.core.data import load_source
from mlops.core.errors import ConfigError
from mlops.core.generate import demand_from_source, generate_demand, regime_source
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


# the generator's output before the regime knobs existed (sha256 of the CSV), for the defaults and demand.yaml
DEFAULT_CSV_SHA256 = "d7ea639e74fd42680ed72bb4bec5be02f9e4e3f090b68ab4baab39940544337b"
DEMAND_YAML_CSV_SHA256 = "92e02ef9e98ef8e12b81b503b20e8ede83c3a7b03eacd53920b1f631782d95bc"


def _sha256(df: pd.DataFrame) -> str:
    return hashlib.sha256(df.to_csv(index=False).encode()).hexdigest()


def test_the_regime_knobs_at_their_defaults_leave_every_table_as_it_was() -> None:
    assert _sha256(generate_demand()) == DEFAULT_CSV_SHA256
    assert _sha256(demand_from_source(load_config(REPO / "configs" / "demand.yaml").source)) == DEMAND_YAML_CSV_SHA256


def test_unlabelled_rows_keep_their_inputs_and_lose_only_the_target() -> None:
    labelled = generate_demand(20_000, seed=1)
    df = generate_demand(20_000, seed=1, unlabelled=0.05)
    pd.testing.assert_frame_equal(df.drop(columns="demand"), labelled.drop(columns="demand"))  # same inputs, gaps
    blank = df["demand"].isna() & labelled["demand"].notna()
    assert 0.045 < blank.mean() < 0.055
    assert df["demand"][~blank].equals(labelled["demand"][~blank])
    clean = generate_demand(20_000, seed=1, missing=0.0, unlabelled=0.05)
    assert 0.045 < clean["demand"].isna().mean() < 0.055
    assert not clean.drop(columns="demand").isna().any().any()  # every input present, blank target or not


def test_same_seed_same_regime_table_other_seed_other_table() -> None:
    knobs = {"response_drift": 0.3, "reshape": 0.5, "unlabelled": 0.05}
    pd.testing.assert_frame_equal(generate_demand(3000, seed=4, **knobs), generate_demand(3000, seed=4, **knobs))
    a, b = (demand_from_source(regime_source("abrupt", rows=3000, seed=4)) for _ in range(2))
    pd.testing.assert_frame_equal(a, b)
    assert not a["demand"].equals(demand_from_source(regime_source("abrupt", rows=3000, seed=5))["demand"])


def test_a_regime_presets_only_the_knobs_the_config_leaves_out() -> None:
    src = regime_source("growth", rows=2000, noise=0.1)
    assert (src.trend, src.shift, src.response_drift, src.unlabelled) == (0.5, 0.0, 0.3, 0.05)
    assert src.noise == 0.1 and "trend" not in src.model_fields_set  # the config's own value wins
    assert GeneratedSource.model_validate(src.model_dump(exclude_unset=True)) == src
    cfg = parse_config(_source(dataset="demand", rows=2000, regime="abrupt", reshape=0.5))
    assert (cfg.source.shift, cfg.source.reshape, cfg.source.noise) == (0.1, 0.5, 0.03)
    df = load_source(cfg)
    assert 0.03 < df["demand"].isna().mean() < 0.08 and not df["timestamp"].isna().any()
    plain = GeneratedSource(dataset="demand")
    assert plain.regime is None and (plain.trend, plain.unlabelled, plain.reshape) == (0.05, 0.0, 0.0)
    with pytest.raises(ConfigError, match="'regime' applies to dataset demand only"):
        parse_config(_source(regime="growth"), origin="demand.yaml")


def _month_rmse(df: pd.DataFrame, month: int, since: list[int]) -> list[float]:
    """RMSE on `month` (1 = January 2023) of a model trained on the months from each of `since` up to it."""
    from sklearn.ensemble import HistGradientBoostingRegressor
    from threadpoolctl import threadpool_limits

    df = df.dropna(subset=["demand"])
    m = (df["timestamp"].dt.year - 2023) * 12 + df["timestamp"].dt.month
    test = df[m == month]
    out = []
    with threadpool_limits(1):
        for first in since:
            train = df[(m >= first) & (m < month)]
            model = HistGradientBoostingRegressor(max_iter=60, random_state=0).fit(_features(train), train["demand"])
            out.append(float(np.sqrt(np.mean((model.predict(_features(test)) - test["demand"]) ** 2))))
    return out


def test_growth_regime_the_last_three_months_beat_all_history() -> None:
    df = demand_from_source(regime_source("growth", rows=24 * 396, seed=3))  # to early February 2024
    everything, recent = _month_rmse(df, 13, [1, 10])  # January 2024: its level is higher than any seen
    assert recent < 0.6 * everything, (recent, everything)


def test_stationary_regime_all_history_beats_the_last_three_months() -> None:
    df = demand_from_source(regime_source("stationary", rows=24 * 547, seed=3))  # to the end of June 2024
    year = df["timestamp"].dt.year
    assert abs(df.loc[year == 2024, "demand"].mean() / df.loc[(year == 2023) & (df["timestamp"].dt.month <= 6),
                                                              "demand"].mean() - 1) < 0.03  # no trend
    scores = np.array([_month_rmse(df, k, [1, k - 3]) for k in (16, 17, 18)])  # spring: last year saw it
    everything, recent = scores.mean(axis=0)
    assert everything < 0.8 * recent, scores


def test_abrupt_regime_the_last_three_months_win_after_the_change() -> None:
    at = date(2024, 1, 1)
    df = demand_from_source(regime_source("abrupt", rows=24 * 456, seed=3, shift_at=at))  # to the end of March
    after = df["timestamp"] >= pd.Timestamp(at)
    hour = df["timestamp"].dt.hour
    midday_to_evening = [df.loc[part & (hour == 12), "demand"].mean() / df.loc[part & (hour == 19), "demand"].mean()
                         for part in (~after, after)]
    assert midday_to_evening[1] < 0.8 * midday_to_evening[0]  # the day's shape changed, not only its level
    for k in (14, 15):  # February and March 2024
        everything, recent = _month_rmse(df, k, [1, k - 3])
        assert recent < 0.5 * everything, (k, recent, everything)
