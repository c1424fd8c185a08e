"""Time-indexed demo data: a city's hourly electricity demand with seasons, a trend and a shift. Pure, seeded.

The churn generator stays in mlops.core.data; this one gives the loop many windows to replay
(`mlops backtest`, `make demo-drift`) without outside data. Its regimes (regime_source) are histories where
the last months win, where all history wins, and one with an abrupt change, each with blank targets.
"""

from __future__ import annotations

from datetime import date
from typing import Any, Literal

import numpy as np
import pandas as pd

from mlops.core.config import DEMAND_FREQS, GeneratedSource

Regime = Literal["growth", "stationary", "abrupt"]  # GeneratedSource.regime
DEMAND_START = pd.Timestamp("2023-01-01")
BASE_MW = 1000.0
# fixed-date public holidays (month * 100 + day), as most calendars have a handful
HOLIDAYS = (101, 501, 508, 714, 815, 1101, 1111, 1224, 1225, 1226, 1231)
# share of the daily level by hour of day on a working day: night trough, morning ramp, early-evening peak
HOUR_PROFILE = np.array([0.72, 0.68, 0.66, 0.65, 0.66, 0.70, 0.80, 0.92, 1.00, 1.03, 1.04, 1.05,
                         1.05, 1.04, 1.03, 1.03, 1.05, 1.10, 1.14, 1.12, 1.05, 0.96, 0.86, 0.78])
# the same after rooftop solar and electric cars spread: a midday dip, a steep evening ramp, night charging
RESHAPED_PROFILE = np.array([0.80, 0.78, 0.76, 0.74, 0.72, 0.72, 0.78, 0.86, 0.86, 0.80, 0.74, 0.70,
                             0.68, 0.68, 0.72, 0.80, 0.94, 1.12, 1.28, 1.30, 1.22, 1.08, 0.96, 0.86])
DAY_FACTOR = np.array([1.0, 1.02, 1.02, 1.01, 0.98, 0.86, 0.80])  # Monday .. Sunday; holidays count as Sunday
WEATHER_LOAD = {"clear": 1.0, "cloudy": 1.0, "fog": 1.01, "rain": 1.02, "snow": 1.05}  # lighting, snow melt


def generate_demand(
    rows: int = 17_520, seed: int = 7, start: date | pd.Timestamp | None = None, freq: str = "h",
    trend: float = 0.05, shift: float = 0.15, shift_at: date | pd.Timestamp | None = None,
    noise: float = 0.04, missing: float = 0.01, corrupt: float = 0.0,
    response_drift: float = 0.0, reshape: float = 0.0, unlabelled: float = 0.0,
) -> pd.DataFrame:
    """One row per time step: weather readings, calendar facts and the demand in MW (the target).

    Demand = level x (hour and day profile + heating and cooling load) x weather x persistent noise.
    The level grows by `trend` a year; from `shift_at` (default: halfway) it jumps by `shift` and the
    heating and cooling loads by twice that (heat pumps and air conditioning spread), so a model
    trained on one season or before the shift is wrong later. How inputs drive demand can move too:
    gradually, the heating and cooling loads grow by `response_drift` a year and the hour profile moves
    that share a year towards RESHAPED_PROFILE (solar and electric cars); abruptly, from `shift_at` it
    moves `reshape` of the way there. Temperature has yearly and daily cycles and multi-day anomalies;
    readings have gaps (`missing`), `corrupt` rows carry sensor error codes, and `unlabelled` rows have
    every input but no demand yet (the meter reading has not arrived).
    Every random draw is made whatever the knobs, so two calls that differ only in trend or shift
    share their weather and noise; draws for newer knobs come last, so older outputs stay the same.
    """
    if rows < 1:
        raise ValueError("rows must be positive")
    if freq not in DEMAND_FREQS:
        raise ValueError(f"freq must be one of {sorted(DEMAND_FREQS)}, not {freq!r}")
    step = DEMAND_FREQS[freq] / 60.0  # hours per row
    rng = np.random.default_rng(seed)
    t0 = pd.Timestamp(start) if start is not None else DEMAND_START
    ts = pd.date_range(t0, periods=rows, freq=freq).as_unit("us")  # what pandas reads from CSV and Parquet
    cut = pd.Timestamp(shift_at) if shift_at is not None else ts[rows // 2]

    hour = ts.hour.to_numpy() + ts.minute.to_numpy() / 60.0
    doy = ts.dayofyear.to_numpy() + hour / 24.0
    years = ((ts - t0) / pd.Timedelta(days=365.25)).to_numpy(dtype=float)
    dow = ts.dayofweek.to_numpy()
    holiday = np.isin(ts.month.to_numpy() * 100 + ts.day.to_numpy(), HOLIDAYS)
    offday = holiday | (dow >= 5)
    winter = np.cos(2 * np.pi * (doy - 20) / 365.25)  # 1 in late January, -1 in late July

    # every draw, in a fixed order, before any knob is applied
    anomaly = 3.5 * _ar1(rng.normal(size=rows), 0.985**step)  # weather systems lasting days
    cloud = _ar1(rng.normal(size=rows), 0.97**step)
    resid = _ar1(rng.normal(size=rows), 0.9**step)  # what the features cannot explain
    t_noise, h_noise = rng.normal(0, 0.3, rows), rng.normal(0, 5.0, rows)
    gust = rng.gamma(2.0, 1.0, rows)
    gap_len = rng.integers(1, 13, rows)
    u = rng.uniform(size=(5, rows))
    u_label = rng.uniform(size=rows)  # after the others: adding it left every earlier table unchanged

    wet = cloud > 1.0
    temp = 10.5 - 11.0 * winter + 4.5 * np.cos(2 * np.pi * (hour - 15) / 24) * np.where(wet, 0.5, 1.0)
    temp = temp + anomaly + t_noise
    humid = np.clip(68 + 12 * np.cos(2 * np.pi * (hour - 4) / 24) - 1.5 * anomaly + 8 * cloud + h_noise, 12, 100)
    wind = gust * (5 + 2 * winter) + 4 * wet
    weather = np.where(wet, np.where(temp < 0.5, "snow", "rain"),
                       np.where(cloud < -0.3, "clear", np.where(humid > 93, "fog", "cloudy")))
    weekday = ~offday
    tariff = np.where(weekday & (hour >= 17) & (hour < 21), "peak",
                      np.where(weekday & (hour >= 7) & (hour < 17), "shoulder", "offpeak"))

    after = np.asarray(ts >= cut)
    at_hour = (hour - 1.5 * offday) % 24
    profile = np.interp(at_hour, np.arange(25), np.r_[HOUR_PROFILE, HOUR_PROFILE[0]])
    moved = np.clip(response_drift * years + reshape * after, 0.0, 1.0)  # how far towards the reshaped day
    reshaped = np.interp(at_hour, np.arange(25), np.r_[RESHAPED_PROFILE, RESHAPED_PROFILE[0]])
    profile = profile + moved * (reshaped - profile)
    profile = profile * np.where(holiday, DAY_FACTOR[6], DAY_FACTOR[dow]) * np.where(tariff == "peak", 0.97, 1.0)
    feels = temp + 0.04 * (humid - 50)
    thermal = 0.014 * np.maximum(0.0, 15 - temp) + 0.022 * np.maximum(0.0, feels - 21)
    thermal = thermal * np.where(after, 1 + 2 * shift, 1.0) * (1 + response_drift * years)
    level = BASE_MW * (1 + trend * years) * np.where(after, 1 + shift, 1.0)
    load = np.vectorize(WEATHER_LOAD.__getitem__, otypes=[float])(weather)
    demand = level * (profile + thermal) * load * np.exp(noise * resid)

    df = pd.DataFrame({
        "timestamp": ts,
        "temperature": np.round(temp, 1),
        "humidity": np.round(humid, 1),
        "wind_speed": np.round(wind, 1),
        "weather": weather,
        "tariff": tariff,
        "holiday": holiday.astype("int64"),
        "demand": np.round(demand, 1),
    })
    # sensor outages: temperature gaps of 1-12 steps, single missing humidity and weather readings, meter gaps
    gaps = np.zeros(rows, dtype=bool)
    for i in np.flatnonzero(u[0] < missing / 6):
        gaps[i: i + gap_len[i]] = True
    df.loc[gaps, "temperature"] = np.nan
    df.loc[u[1] < missing, "humidity"] = np.nan
    df.loc[u[2] < missing, "weather"] = None
    df.loc[u[3] < missing / 5, "demand"] = np.nan
    df.loc[u_label < unlabelled, "demand"] = np.nan
    if corrupt > 0:  # error codes a logger writes instead of a reading
        bad = np.flatnonzero(u[4] < corrupt)
        df.loc[bad[::2], "temperature"] = -99.9
        df.loc[bad[1::2], "wind_speed"] = 999.0
    return df


def demand_from_source(src: GeneratedSource) -> pd.DataFrame:
    """The demand table a `source: {kind: generated, dataset: demand}` config describes."""
    return generate_demand(src.rows, src.seed, src.start, src.freq, src.trend, src.shift, src.shift_at,
                           src.noise, src.missing, src.corrupt, response_drift=src.response_drift,
                           reshape=src.reshape, unlabelled=src.unlabelled)


def regime_source(regime: Regime, rows: int = 17_520, seed: int = 7, **knobs: Any) -> GeneratedSource:
    """A demand source with `regime`'s preset knobs (GeneratedSource.regime_knobs); `knobs` override them.

    A config selects one the same way: `source: {kind: generated, dataset: demand, regime: growth}`."""
    return GeneratedSource(dataset="demand", regime=regime, rows=rows, seed=seed, **knobs)


def _ar1(e: np.ndarray, phi: float) -> np.ndarray:
    """A stationary AR(1) series with unit variance from standard normal innovations `e`."""
    from scipy.signal import lfilter

    scale = np.sqrt(1 - phi**2)
    x = e.astype(float)
    x[0] /= scale  # start in the stationary distribution, not at zero
    return lfilter([scale], [1.0, -phi], x)
