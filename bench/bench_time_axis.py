"""Encodings of time for a tree on the generated regimes: the calendar `year`, `decimal_year` or `year_month`.

A model of all history is refitted every two months (one HistGradientBoosting with its defaults, the project's
feature pipeline with each encoding's date parts beside month, day of week and hour) and scored on the two months
after each refit, as a champion that serves two windows would be. On growth the calendar year maps each new January
to last January's level; a time axis carries the newest level forward. On data without a trend a time axis can only
let a tree split on time for nothing: the question is what each encoding costs there.

    .venv/bin/python -m bench.bench_time_axis            # writes section time-axis of docs/benchmarks.md
    .venv/bin/python -m bench.bench_time_axis --seeds 8 --no-write
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import pandas as pd

from bench.bench_backtest import regime_config
from bench.report import write_section

ENCODINGS = {
    "year": ["year", "month", "dayofweek", "hour"],
    "decimal_year": ["decimal_year", "month", "dayofweek", "hour"],
    "year_month": ["year_month", "month", "dayofweek", "hour"],
}
REGIMES = ("growth", "stationary", "abrupt")


def serving_errors(regime: str, seed: int, parts: list[str]) -> list[float]:
    """RMSE of each month served, by models of all history refitted every second month."""
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.pipeline import Pipeline

    from mlops.core.contract import infer_contract
    from mlops.core.data import read_source
    from mlops.core.features import build_preprocessor

    cfg = regime_config(regime, seed, date_parts=parts)
    frame = read_source(cfg).frame
    frame = frame[frame[cfg.target].notna()].reset_index(drop=True)
    times = pd.to_datetime(frame[cfg.timestamp_column])
    contract = infer_contract(frame, cfg.target, cfg.task, cfg.validation, timestamp_column=cfg.timestamp_column)
    months = pd.date_range(times.min().normalize() + pd.DateOffset(months=3), times.max(), freq="MS")
    errors = []
    for i in range(0, len(months) - 2, 2):
        train = frame[times < months[i]]
        model = Pipeline([("features", build_preprocessor(contract, cfg.features)),
                          ("model", HistGradientBoostingRegressor(random_state=0))])
        model.fit(train.drop(columns=[cfg.target]), train[cfg.target])
        for j in (i, i + 1):
            served = frame[(times >= months[j]) & (times < months[j + 1])]
            pred = model.predict(served.drop(columns=[cfg.target]))
            errors.append(float(np.sqrt(np.mean((served[cfg.target].to_numpy() - pred) ** 2))))
    return errors


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", nargs="+", type=int, default=[7, 8, 9, 10, 11])
    ap.add_argument("--no-write", action="store_true", help="print the section instead of writing it")
    args = ap.parse_args()
    load, started = os.getloadavg()[0], time.perf_counter()
    lines = ["## Encodings of time (`bench/bench_time_axis.py`)", "",
             f"Each regime of configs/demand.yaml's generator at seeds {', '.join(map(str, args.seeds))}: a model of all "
             "history refitted every second month from month 4 (HistGradientBoosting with its defaults), scored on "
             "each month it serves. Mean rmse over the months served and the seeds (lower is better); in brackets the "
             "change against the calendar `year`, at the seed where it was least and most.", "",
             "| regime | " + " | ".join(f"`{e}`" for e in ENCODINGS) + " |",
             "| --- |" + " --- |" * len(ENCODINGS)]
    for regime in REGIMES:
        means = {e: [float(np.mean(serving_errors(regime, seed, parts))) for seed in args.seeds]
                 for e, parts in ENCODINGS.items()}
        cells = []
        for e, values in means.items():
            change = [v / b - 1 for v, b in zip(values, means["year"], strict=True)]
            cells.append(f"{np.mean(values):.1f}" + ("" if e == "year" else f" ({min(change):+.0%} to {max(change):+.0%})"))
        lines.append(f"| {regime} | " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    lines += ["", f"Each encoding lists its time part before month, day of week and hour. "
              f"{time.perf_counter() - started:.0f} s, load average {load:.1f} at the start. Reproduce: "
              "`.venv/bin/python -m bench.bench_time_axis`."]
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        write_section("time-axis", body)


if __name__ == "__main__":
    main()
