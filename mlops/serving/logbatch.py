"""Scoring into the prediction log as the model server would, request by request: what the drift demo
and the tests use to fill a monitoring window with real log files."""

from __future__ import annotations

import math
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlops.core.contract import DataContract
from mlops.serving.predictlog import LogRecord, PredictionLogWriter, Redactor, hash_key_from_env, output_columns


def log_scored_frame(frame: pd.DataFrame, model: Any, model_name: str, version: str, contract: DataContract,
                     log_dir: Path, sensitive_columns: list[str] | None = None, sensitive_mode: str = "hash",
                     request_rows: int = 500, rows_per_file: int = 5_000,
                     logged_at: float | None = None) -> tuple[list[Path], pd.DataFrame]:
    """Score `frame` with `model` and write it to the prediction log as requests of `request_rows` rows.

    Returns the files written and each row's `request_id` / `request_row` (how labels join back).
    Sensitive columns are hashed with MLOPS_LOG_HASH_KEY, or dropped when no key is set.
    """
    key = hash_key_from_env()
    mode = sensitive_mode if key else "drop"
    writer = PredictionLogWriter(log_dir, Redactor(frozenset(sensitive_columns or []), mode, key))
    inputs = frame[[c for c in contract.input_columns if c in frame.columns]].reset_index(drop=True)
    task = contract.task
    files: list[Path] = []
    keys: list[pd.DataFrame] = []
    for file_start in range(0, len(inputs), rows_per_file):
        records = []
        for start in range(file_start, min(file_start + rows_per_file, len(inputs)), request_rows):
            part = inputs.iloc[start:min(start + request_rows, file_start + rows_per_file, len(inputs))]
            pred = np.asarray(model.predict(part))
            proba = np.asarray(model.predict_proba(part)) if task == "classification" and hasattr(
                model, "predict_proba") else None
            classes = list(model.classes_) if proba is not None else None
            rid = uuid.uuid4().hex
            cols = {c: [None if _missing(v) else v for v in part[c].tolist()] if part[c].dtype == object
                    else part[c].tolist() for c in part.columns}
            records.append(LogRecord(rid, logged_at if logged_at is not None else time.time(), model_name,
                                     str(version), cols, output_columns(pred, proba, classes), len(part), "batch"))
            keys.append(pd.DataFrame({"request_id": rid, "request_row": np.arange(len(part))}, index=part.index))
        files += writer.write(records)
    ids = pd.concat(keys) if keys else pd.DataFrame(columns=["request_id", "request_row"])
    return files, ids.sort_index()


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))
