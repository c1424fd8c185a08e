"""Batch scoring: a CSV/Parquet file or folder, scored with the champion in bounded memory.

The input is read in chunks (pyarrow `iter_batches` for Parquet, pandas `chunksize` for CSV); each
chunk is checked against the version's data contract with the same Great Expectations suite the
training flow uses (mlops.core.validation), rows that break it are quarantined (with the expectations
they broke) and not scored, the rest are scored by the version's Pipeline. Predictions stream into
one Parquet file, the quarantine into one CSV, every scored row into the prediction log, and a run
record (JSON) is written next to them. Memory is one chunk at a time, whatever the input size.

Null fractions are a property of the whole input, not of a chunk, so they are measured over the
whole input and reported in the run record (with a warning when above the contract's) rather than
judged chunk by chunk.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlops.core.contract import DataContract
from mlops.core.errors import DataError
from mlops.core.validation import QUARANTINE_REASON_COLUMN, validate_batch

log = logging.getLogger("mlops.serving.scoring")

ROW_COLUMN = "row"
PREDICTIONS_FILE = "predictions.parquet"
QUARANTINE_FILE = "quarantined.csv"
RUN_RECORD_FILE = "run.json"


def input_files(path: str | Path) -> list[Path]:
    """The files to score: the file itself, or every .parquet/.csv in the folder (sorted)."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: input not found")
    if p.is_dir():
        files = sorted(f for f in [*p.glob("*.parquet"), *p.glob("*.pq"), *p.glob("*.csv")] if not f.name.startswith("."))
        if not files:
            raise DataError(f"{p}: folder holds no .csv or .parquet files")
        return files
    return [p]


def iter_chunks(path: str | Path, chunk_rows: int) -> Iterator[tuple[Path, pd.DataFrame]]:
    """(file, chunk) pairs of at most `chunk_rows` rows, in file order."""
    for f in input_files(path):
        if f.stat().st_size == 0:
            raise DataError(f"{f}: file is empty")
        if f.suffix.lower() in {".parquet", ".pq"}:
            import pyarrow.parquet as pq

            try:
                pf = pq.ParquetFile(f, pre_buffer=False)  # pre-buffering keeps every row group read so far
                for batch in pf.iter_batches(batch_size=chunk_rows):
                    yield f, batch.to_pandas()
            except DataError:
                raise
            except Exception as exc:  # noqa: BLE001 - pyarrow raises many types for a broken file
                raise DataError(f"{f}: not a readable Parquet file ({type(exc).__name__}: {str(exc)[:200]})") from None
        else:
            try:
                for chunk in pd.read_csv(f, chunksize=chunk_rows, encoding="utf-8-sig"):
                    yield f, chunk
            except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
                raise DataError(f"{f}: cannot parse CSV ({str(exc).splitlines()[0][:200]})") from None


def scoring_contract(contract: DataContract) -> DataContract:
    """The contract without its target, with null fractions left to the whole-input check."""
    base = contract.without_target()
    return replace(base, columns=[replace(c, max_null_fraction=1.0) for c in base.columns],
                   expectations=[e for e in base.expectations if e.get("type") != "unique"])


@dataclass
class ChunkResult:
    predictions: pd.DataFrame
    quarantined: pd.DataFrame
    good: pd.DataFrame
    good_rows: np.ndarray
    outputs: dict[str, Any]


def score_chunk(model: Any, contract: DataContract, chunk: pd.DataFrame, offset: int, version: str) -> ChunkResult:
    """Validate one chunk, quarantine the bad rows, score the good ones."""
    from mlops.serving.predictlog import output_columns

    chunk = chunk.reset_index(drop=True)
    outcome = validate_batch(chunk, scoring_contract(contract), need_target=False)
    bad = outcome.quarantined.index.to_numpy()
    good_rows = np.setdiff1d(np.arange(len(chunk)), bad) + offset
    quarantined = outcome.quarantined.copy()
    quarantined.insert(0, ROW_COLUMN, bad + offset)
    good = outcome.good
    columns = list(getattr(model, "feature_names_in_", [c for c in contract.input_columns if c in good.columns]))
    preds: dict[str, Any] = {ROW_COLUMN: good_rows.astype(np.int64)}
    if contract.id_column and contract.id_column in good.columns:
        preds[contract.id_column] = good[contract.id_column].to_numpy()
    outputs: dict[str, Any] = {}
    if len(good):
        X = good[columns]
        pred = np.asarray(model.predict(X))
        proba = None
        classes = None
        if contract.task == "classification" and hasattr(model, "predict_proba"):
            proba = np.asarray(model.predict_proba(X))
            classes = list(getattr(model, "classes_", range(proba.shape[1])))
        outputs = output_columns(pred, proba, classes)
        preds.update(outputs)
    preds["model_version"] = np.full(len(good), version, dtype=object)
    return ChunkResult(pd.DataFrame(preds), quarantined, good, good_rows, outputs)


def release_memory() -> None:
    """Free what a chunk left behind before the next one.

    Each Great Expectations validation leaves cyclic garbage (its ephemeral context) that only a full
    collection frees, and glibc keeps freed pages; without this the process grows ~13 MB per
    100,000-row chunk. With it, memory stays flat however many chunks there are.
    """
    import gc

    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the collection alone still bounds it
        pass


@dataclass
class ScoringRun:
    """What a scoring run did; written as the run record."""

    run_id: str
    model_name: str
    model_version: str
    model_run_id: str
    input_path: str
    output_dir: str
    files: list[str] = field(default_factory=list)
    chunk_rows: int = 0
    chunks: int = 0
    rows_read: int = 0
    rows_scored: int = 0
    rows_quarantined: int = 0
    quarantine_reasons: dict[str, int] = field(default_factory=dict)
    null_fractions: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    predictions_path: str | None = None
    quarantine_path: str | None = None
    prediction_log_files: int = 0
    started_at: str = ""
    finished_at: str = ""
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["rows_per_second"] = round(self.rows_read / self.seconds, 1) if self.seconds else None
        return out


def score_file(
    model: Any,
    contract: DataContract,
    model_name: str,
    model_version: str,
    model_run_id: str,
    input_path: str | Path,
    output_dir: str | Path,
    run_id: str,
    chunk_rows: int = 100_000,
    log_writer: Any = None,
    max_quarantine_fraction: float | None = None,
) -> ScoringRun:
    """Score a file or folder chunk by chunk; write predictions, quarantine and the run record."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mlops.serving.predictlog import LogRecord

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    run = ScoringRun(run_id, model_name, str(model_version), model_run_id, str(input_path), str(out),
                     files=[str(f) for f in input_files(input_path)], chunk_rows=chunk_rows,
                     started_at=pd.Timestamp(started, unit="s", tz="UTC").isoformat())
    pred_path = out / PREDICTIONS_FILE
    quarantine_path = out / QUARANTINE_FILE
    for stale in (pred_path, quarantine_path):
        stale.unlink(missing_ok=True)
    writer: Any = None
    schema: Any = None
    nulls: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    offset = 0
    try:
        for _, chunk in iter_chunks(input_path, chunk_rows):
            for c in contract.input_columns:
                if c in chunk.columns:
                    nulls[c] += int(chunk[c].isna().sum())
            res = score_chunk(model, contract, chunk, offset, str(model_version))
            run.chunks += 1
            run.rows_read += len(chunk)
            run.rows_scored += len(res.predictions)
            run.rows_quarantined += len(res.quarantined)
            if len(res.quarantined):
                for text in res.quarantined[QUARANTINE_REASON_COLUMN]:
                    for reason in str(text).split("; "):
                        reasons[reason] += 1
                res.quarantined.to_csv(quarantine_path, mode="a", index=False, header=not quarantine_path.exists())
            if len(res.predictions):
                table = pa.Table.from_pandas(res.predictions, preserve_index=False)
                if writer is None:
                    schema = table.schema
                    writer = pq.ParquetWriter(pred_path, schema)
                writer.write_table(table.cast(schema))
                if log_writer is not None:
                    inputs = {c: res.good[c] for c in contract.input_columns if c in res.good.columns}
                    record = LogRecord(run_id, time.time(), model_name, str(model_version), inputs, res.outputs,
                                       len(res.good), source="batch", rows=res.good_rows)
                    run.prediction_log_files += len(log_writer.write([record]))
            offset += len(chunk)
            log.info("chunk %d: %d rows, %d scored, %d quarantined", run.chunks, len(chunk), len(res.predictions),
                     len(res.quarantined))
            del res, chunk
            release_memory()
    finally:
        if writer is not None:
            writer.close()
    if run.rows_read == 0:
        raise DataError(f"{input_path}: no rows to score")
    if writer is None:  # everything quarantined: still leave a (empty) predictions file
        pd.DataFrame({ROW_COLUMN: pd.Series(dtype="int64"), "prediction": pd.Series(dtype="float64")}).to_parquet(
            pred_path, index=False)
    run.predictions_path = str(pred_path)
    run.quarantine_path = str(quarantine_path) if quarantine_path.exists() else None
    run.quarantine_reasons = dict(reasons.most_common(50))
    specs = contract.by_name
    for c, k in sorted(nulls.items()):
        frac = k / run.rows_read
        run.null_fractions[c] = round(frac, 6)
        limit = specs[c].max_null_fraction if c in specs else 1.0
        if frac > limit:
            run.warnings.append(f"column '{c}' is {frac:.1%} null, above the contract's {limit:.1%}")
    if max_quarantine_fraction is not None and run.rows_quarantined > max_quarantine_fraction * run.rows_read:
        run.warnings.append(f"{run.rows_quarantined} of {run.rows_read} rows broke the data contract, above the "
                            f"allowed {max_quarantine_fraction:.1%}; see {run.quarantine_path}")
    finished = time.time()
    run.finished_at = pd.Timestamp(finished, unit="s", tz="UTC").isoformat()
    run.seconds = round(finished - started, 3)
    (out / RUN_RECORD_FILE).write_text(json.dumps(run.as_dict(), indent=2, default=str))
    for w in run.warnings:
        log.warning("%s", w)
    return run

