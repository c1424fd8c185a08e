"""What a retrain trains on: labelled window rows kept until used, shaped like training data, and the
retraining file (the champion's data plus the new rows, repeated rows once, new rows marked).

Also what the monitor decides about a retrain: the file it trains on, whether a fresh model would pay, and who
trains. Nothing here imports Prefect; tasks/monitoring.py is the thin shell.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlops.core.config import PipelineConfig, RetrainPolicyConfig
from mlops.core.contract import DataContract, coerce_to_contract
from mlops.core.data import check_frame, load_source, read_table
from mlops.core.errors import DataError
from mlops.core.rowkeys import NEW_ROW_COLUMN, deduplicate
from mlops.core.tabular import read_options
from mlops.monitoring import payoff
from mlops.monitoring.live_quality import LiveQuality
from mlops.monitoring.result import RetrainOutcome, TrainingFile
from mlops.registry.versions import ModelBundle, training_window


class LabelledStore:
    """Labelled window rows kept under the state folder until a retrain has used them."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def save(self, window_id: str, frame: pd.DataFrame) -> Path | None:
        if not len(frame):
            return None
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"labelled-{window_id}.parquet"
        tmp = self.folder / f".{path.name}.tmp"
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, path)
        return path

    def files(self) -> list[Path]:
        return sorted(self.folder.glob("labelled-*.parquet")) if self.folder.is_dir() else []

    def load(self, window_id: str | None = None) -> pd.DataFrame:
        files = self.files()
        if window_id is not None:
            files = [f for f in files if f.name == f"labelled-{window_id}.parquet"]
        frames = [pd.read_parquet(f) for f in files]
        return pd.concat(frames, ignore_index=True, sort=False) if frames else pd.DataFrame()

    def archive(self, names: list[str]) -> None:
        """Move used files aside so `new` starts afresh after a successful retrain."""
        used = self.folder / "used"
        used.mkdir(parents=True, exist_ok=True)
        for name in names:
            src = self.folder / name
            if src.exists():
                os.replace(src, used / name)


def training_rows(labelled: pd.DataFrame, contract: DataContract) -> pd.DataFrame:
    """Labelled window rows shaped like training data: the contract's columns with its types.

    A log without the id column (dropped as sensitive) gets a stable id from request id and row.
    """

    if not len(labelled):
        return pd.DataFrame(columns=[c.name for c in contract.columns])
    out = labelled.copy()
    idc = contract.id_column
    if idc and idc not in out.columns:
        if {"request_id", "request_row"} <= set(out.columns):
            out[idc] = "log-" + out["request_id"].astype(str) + "-" + out["request_row"].astype(str)
        else:
            out[idc] = [f"new-{uuid.uuid4().hex[:12]}" for _ in range(len(out))]
    keep = [c.name for c in contract.columns if c.name in out.columns]
    return coerce_to_contract(out[keep].reset_index(drop=True), contract).frame


def to_contract_kinds(frame: pd.DataFrame, contract: DataContract) -> tuple[pd.DataFrame, int]:
    """The frame with every contract column cast to its kind (timestamps as datetimes, whether read from
    CSV text or Parquet), so parts from different sources concatenate, sort and write as one table.

    Rows with a value that does not cast are left out (training would quarantine them); returns how many.
    """


    if not len(frame):
        return frame, 0
    present = replace(contract, columns=[c for c in contract.columns if c.name in frame.columns])
    coerced = coerce_to_contract(frame, present)
    out = coerced.frame
    if coerced.row_failures:
        out = out.drop(index=out.index[sorted(coerced.row_failures)])
    return out.reset_index(drop=True), len(coerced.row_failures)


def build_training_frame(train_on: str, original: pd.DataFrame | None, new: pd.DataFrame, window: pd.DataFrame,
                         contract: DataContract, max_rows: int, recent_rows: int | None = None,
                         recent_days: float | None = None) -> tuple[pd.DataFrame, str]:
    """The rows a retrain trains on, and a sentence saying which.

    `new`: the labelled rows monitored since the last retrain; `window`: the labelled rows of the
    window that asked; `original_plus_new`: the champion's training data plus `new` (`auto` too: all known
    history, of which training then chooses its window, mlops.training.window). Repeated rows
    keep their latest copy: the same id, or without an id column the same inputs and target (a
    re-sent row). `recent`: as `original_plus_new`, then only the newest `recent_rows` rows and/or
    the rows of the last `recent_days` days (by the timestamp column) before the newest one, a
    rolling window. Above `max_rows`, the most recent rows are kept. With original rows, the column
    `NEW_ROW_COLUMN` marks the rows the champion never trained on, the only ones a retrain holds
    out (mlops.core.data.split_frame); a new row repeating an original one is not new. Every part is
    cast to the contract's kinds first (`to_contract_kinds`).
    """
    marked = False
    if train_on == "window":
        parts, what = [window], f"the {len(window)} labelled rows of this window"
    elif train_on == "new":
        parts, what = [new], f"the {len(new)} labelled rows monitored since the last retrain"
    elif train_on in {"auto", "original_plus_new", "recent"}:
        if original is None or not len(original):
            parts, what = [new], f"the {len(new)} new labelled rows (the original training data could not be loaded)"
        else:
            parts, marked = [original, new], True
            what = f"the {len(original)} rows the champion trained on plus {len(new)} new labelled rows"
    else:  # pragma: no cover - the config schema rules this out
        raise ValueError(f"unknown train_on {train_on!r}")
    cast = [to_contract_kinds(p.drop(columns=[NEW_ROW_COLUMN], errors="ignore"), contract)
            if p is not None else (pd.DataFrame(), 0) for p in parts]
    frames = [f for f, _ in cast if len(f)]
    if not frames:
        return pd.DataFrame(), what
    left_out = sum(n for _, n in cast)
    if left_out:
        what += f"; {left_out:,} row(s) with values that do not cast to the contract's types left out"
    df = pd.concat(frames, ignore_index=True, sort=False)
    is_new = np.concatenate([np.full(len(f), i > 0) for i, (f, _) in enumerate(cast)]) if marked else None
    columns = [c for c in [*contract.input_columns, contract.target] if c != contract.id_column]
    df, is_new, dropped, by = deduplicate(df, contract.id_column, columns, is_new)
    what += f"; {dropped:,} duplicate row(s) dropped ({by})" if dropped else "; no duplicate rows"
    if is_new is not None:
        df[NEW_ROW_COLUMN] = is_new
    if train_on == "recent":
        df, kept = _recent(df, contract.timestamp_column, recent_rows, recent_days)
        what += f"; {kept}"
    if len(df) > max_rows:
        if contract.timestamp_column and contract.timestamp_column in df.columns:
            df = df.sort_values(contract.timestamp_column, kind="stable")
        df = df.iloc[-max_rows:]
        what += f", capped to the most recent {max_rows}"
    if is_new is not None:
        what += f"; {int(df[NEW_ROW_COLUMN].sum()):,} row(s) the champion never trained on, the only ones held out"
    return df.reset_index(drop=True), what


def _recent(df: pd.DataFrame, ts: str | None, rows: int | None, days: float | None) -> tuple[pd.DataFrame, str]:
    """The rolling window of `train_on: recent`: the newest rows by the timestamp column (else by arrival)."""
    if ts and ts in df.columns:
        df = df.sort_values(ts, kind="stable")
    elif days is not None:
        raise DataError("train_on 'recent' with recent_days needs the data's timestamp column; name it in "
                        "timestamp_column or use recent_rows")
    before, said = len(df), []
    if days is not None:
        start = df[ts].max() - pd.Timedelta(days=days)
        df = df.loc[df[ts] >= start]
        said.append(f"the last {days:g} day(s) (from {start:%Y-%m-%d %H:%M})")
    if rows is not None and len(df) > rows:
        df = df.iloc[-rows:]
    if rows is not None:
        said.append(f"at most the newest {rows:,} row(s)")
    return df, f"train_on recent kept {len(df):,} of {before:,} rows: {' and '.join(said)}"


def load_original(cfg: PipelineConfig, data_source_tag: str | None) -> pd.DataFrame | None:
    """The data the champion trained on: the file in its lineage when it still exists, else the config's source."""

    try:
        if data_source_tag and data_source_tag not in {"generated", "sklearn", "file"} and Path(data_source_tag).exists():
            read = read_options(cfg)
            return check_frame(read_table(data_source_tag, "auto", read.delimiter, list(read.na_values)), cfg)
        return load_source(cfg)
    except DataError:
        return None


def write_training_file(frame: pd.DataFrame, folder: Path, stamp: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"train-{stamp}.parquet"
    tmp = folder / f".{path.name}.tmp"
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, path)
    return path


def training_file(cfg: PipelineConfig, champion: ModelBundle, store: LabelledStore, window_id: str | None,
                  folder: Path, stamp: str) -> TrainingFile:
    """Write the file a retrain trains on (policy.train_on: the champion's training data plus the labelled rows
    kept in `store`, or only window `window_id`'s, ...); no file when there is nothing new to learn from."""
    policy = cfg.monitoring.policy
    new = store.load()
    window = store.load(window_id) if window_id else pd.DataFrame()
    used = [f.name for f in store.files()]
    nothing_new = not len(window) if policy.train_on == "window" else not len(new)
    if nothing_new:
        return TrainingFile(None, 0, policy.train_on,
                            f"no labelled rows to train on (train_on={policy.train_on}); send labels with the "
                            "window (labels file joined by request id or the id column)")
    original = (load_original(cfg, champion.tags.get("lineage.data_source"))
                if policy.train_on in {"auto", "original_plus_new", "recent"} else None)
    frame, what = build_training_frame(policy.train_on, original, new, window, champion.contract,
                                       policy.max_training_rows, policy.recent_rows, policy.recent_days)
    path = write_training_file(frame, folder, stamp)
    new_rows = int(frame[NEW_ROW_COLUMN].sum()) if NEW_ROW_COLUMN in frame.columns else len(frame)
    return TrainingFile(str(path), len(frame), policy.train_on, what, new_rows, used)


def fresh_model_payoff(cfg: PipelineConfig, champion: ModelBundle, live: LiveQuality | None,
                       store: LabelledStore) -> dict[str, Any] | None:
    """Would a retrain pay? When the window's labels judged the champion, a fresh model (the champion's
    configuration, fitted on the labelled history inside the champion's training window) is scored beside it
    (mlops.monitoring.payoff); None when the window holds no judged labels or too few rows to judge. Call it
    before this window's labelled rows are kept in `store`, so the history holds only earlier windows."""
    if live is None or live.status != "ok" or live.labelled is None or not len(live.labelled):
        return None
    window = training_rows(live.labelled, champion.contract)
    original = load_original(cfg, champion.tags.get("lineage.data_source"))
    history, _ = build_training_frame("original_plus_new", original, store.load(), window, champion.contract,
                                      cfg.monitoring.policy.max_training_rows)
    history = payoff.history_in_window(history.drop(columns=[NEW_ROW_COLUMN], errors="ignore"),
                                       training_window(champion.run_id), cfg.timestamp_column)
    gain = payoff.fresh_gain(champion.model, history, window, cfg)
    return None if gain is None else gain.record(cfg.primary_metric)


def hand_off(policy: RetrainPolicyConfig) -> RetrainOutcome | None:
    """Who trains after a yes that can run: the training deployment (the `mlops.retrain.requested` event hands it
    over), or None: the monitor run itself (`policy.run_training_locally`)."""
    if not policy.run_training_locally:
        return RetrainOutcome("requested", "the mlops.retrain.requested event hands the retrain to the training "
                              "deployment (policy.run_training_locally is off)")
    return None
