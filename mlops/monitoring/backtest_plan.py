"""A backtest's plan: the labelled history ordered by time and cut into the initial period and the windows,
every bad input one sentence before any training (mlops.monitoring.backtest replays it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from mlops.core.config import FileSource, PipelineConfig
from mlops.core.data import check_frame, read_table_collecting
from mlops.core.errors import ConfigError, DataError
from mlops.core.periods import parse_period

MIN_INITIAL_ROWS = 50  # labelled rows the first champion needs: a holdout, and CV folds with some rows each


# ---------------------------------------------------------------------------------------------
# the plan: the history ordered by time, the initial period and the windows


@dataclass
class WindowSlice:
    """One replay window: [start, end) in data time and its rows."""

    index: int
    start: pd.Timestamp
    end: pd.Timestamp
    frame: pd.DataFrame

    @property
    def label(self) -> str:
        return f"{self.start:%Y-%m-%d %H:%M} to {self.end:%Y-%m-%d %H:%M}"


@dataclass
class BacktestPlan:
    """The history cut into the initial period and the windows, checked before any training."""

    initial: pd.DataFrame
    windows: list[WindowSlice]
    timestamp_column: str
    initial_period: str
    every: str
    rows: int
    notes: list[str] = field(default_factory=list)


def read_history(path: str | Path, cfg: PipelineConfig) -> tuple[pd.DataFrame, list[str]]:
    """The history file with the config's missing-value markers; malformed CSV rows are left out (noted)."""
    delimiter = cfg.source.delimiter if isinstance(cfg.source, FileSource) else ","
    table = read_table_collecting(path, "auto", delimiter, cfg.na_values)
    notes = [f"{len(table.malformed)} malformed row(s) left out ({table.malformed[0].detail})"] if table.malformed else []
    return table.frame, notes


def plan_backtest(cfg: PipelineConfig, history: pd.DataFrame, initial: str = "3M", every: str = "1M",
                  notes: list[str] | None = None) -> BacktestPlan:
    """Order the history by the config's timestamp column and cut it; every bad input is one DataError sentence."""
    ts = cfg.timestamp_column
    if not ts:
        raise ConfigError("the config has no timestamp_column; a backtest orders the history by it, so name the "
                          "column that holds each row's time")
    if ts not in history.columns:
        raise DataError(f"the history has no timestamp column '{ts}' (the config's timestamp_column), so it cannot "
                        f"be replayed in time order (columns: {[str(c) for c in history.columns][:12]})")
    first, step = parse_period(initial, "--initial"), parse_period(every, "--every")
    notes = list(notes or [])
    times = _as_times(history[ts])
    bad = int(times.isna().sum())
    if bad > 0.05 * len(history):
        raise DataError(f"{bad} of {len(history)} values of timestamp column '{ts}' are not times; fix the column "
                        "or name another timestamp_column")
    if bad:
        notes.append(f"{bad} row(s) without a readable '{ts}' left out")
    frame = history.assign(**{ts: times}).loc[times.notna()].sort_values(ts, kind="stable").reset_index(drop=True)
    frame = check_frame(frame, cfg)
    t0, last = frame[ts].iloc[0], frame[ts].iloc[-1]
    cut = t0.normalize() + first  # windows start at midnight: 3M from 2023-01-01 05:00 ends on 2023-04-01
    initial_rows = frame.loc[frame[ts] < cut]
    labelled = int(initial_rows[cfg.target].notna().sum())
    if labelled < MIN_INITIAL_ROWS:
        raise DataError(f"the initial period ({initial} from {t0:%Y-%m-%d}) holds {labelled} labelled row(s), too few "
                        f"to train the first champion (at least {MIN_INITIAL_ROWS}); give a longer --initial")
    if cut > last:
        raise DataError(f"the history ends ({last:%Y-%m-%d %H:%M}) within the initial period ({initial} from "
                        f"{t0:%Y-%m-%d}), so no window is left to replay; give a shorter --initial or more history")
    windows: list[WindowSlice] = []
    start = cut
    while start <= last:
        end = start + step
        part = frame.loc[(frame[ts] >= start) & (frame[ts] < end)].reset_index(drop=True)
        w = WindowSlice(len(windows) + 1, start, end, part)
        if not len(part):
            raise DataError(f"window {w.index} ({w.label}) has no rows; the history has a gap there, so use a "
                            "longer --every or fill the gap")
        if part[cfg.target].notna().sum() == 0:
            raise DataError(f"window {w.index} ({w.label}) has no labels (target '{cfg.target}' is empty in all "
                            f"{len(part)} rows); a backtest needs each window's labels, so add them or end the "
                            "history before it")
        windows.append(w)
        start = end
    return BacktestPlan(initial_rows.reset_index(drop=True), windows, ts, initial, every, len(frame), notes)


def _as_times(s: pd.Series) -> pd.Series:
    """One datetime dtype whatever the source format (text from CSV, datetimes from Parquet)."""
    if pd.api.types.is_datetime64_any_dtype(s):
        return s
    return pd.to_datetime(s, errors="coerce", format="mixed")
