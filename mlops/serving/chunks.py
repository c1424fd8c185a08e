"""One chunk of a batch, checked and scored: what local scoring (mlops.serving.scoring) and scoring on a Dask
cluster's workers (mlops.serving.dask_scoring) share, so both give the same rows the same outcome.

`score_chunk` validates a chunk against the version's data contract with the training flow's Great
Expectations suite and quarantines the rows that break it (or, `flag_violations`, scores every row and says
what each bad row broke); `release_memory` frees what a chunk left behind before the next. Reading Parquet
in batches and the one-sentence errors for an unreadable file are shared too.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from mlops.core.contract import DataContract, coerce_to_contract
from mlops.core.errors import DataError
from mlops.core.validation import QUARANTINE_REASON_COLUMN, validate_batch
from mlops.serving.batchcheck import Scorer, check_chunk, model_outputs, scorer_for

ROW_COLUMN = "row"
VIOLATION_COLUMN = "contract_violation"
PARQUET_SUFFIXES = {".parquet", ".pq"}
_GX_USED = False  # a Great Expectations validation ran since the last release_memory


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


def is_parquet(path: str | Path) -> bool:
    return Path(path).suffix.lower() in PARQUET_SUFFIXES


def check_not_empty(path: Path) -> Path:
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")
    return path


def parquet_file(path: str | Path) -> Any:
    """The file opened for streaming (no pre-buffering, which keeps every row group read so far)."""
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path, pre_buffer=False)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises many types for a broken file
        raise unreadable_parquet(path, exc) from None


def parquet_batches(path: str | Path, chunk_rows: int, row_groups: list[int] | None = None) -> Iterator[pd.DataFrame]:
    """The file's rows (or those of `row_groups`) in frames of at most `chunk_rows`; unreadable is one sentence."""
    pf = parquet_file(path)
    try:
        for batch in pf.iter_batches(batch_size=chunk_rows, row_groups=row_groups):
            yield batch.to_pandas()
    except Exception as exc:  # noqa: BLE001 - pyarrow raises many types for a broken file
        raise unreadable_parquet(path, exc) from None


def unreadable_parquet(path: str | Path, exc: BaseException) -> DataError:
    return DataError(f"{path}: not a readable Parquet file ({type(exc).__name__}: {str(exc)[:200]})")


def unparsable_csv(path: str | Path, exc: BaseException) -> DataError:
    return DataError(f"{path}: cannot parse CSV ({str(exc).splitlines()[0][:200]})")


def scoring_contract(contract: DataContract) -> DataContract:
    """The contract without its target, with null fractions left to the whole-input check."""
    base = contract.without_target()
    return replace(base, columns=[replace(c, max_null_fraction=1.0) for c in base.columns],
                   expectations=[e for e in base.expectations if e.get("type") != "unique"])


@dataclass
class ChunkResult:
    predictions: pd.DataFrame
    quarantined: pd.DataFrame
    good: pd.DataFrame  # the scored rows as the model saw them (coerced), for the prediction log
    good_rows: np.ndarray
    outputs: dict[str, Any]


def _model_columns(model: Any, contract: DataContract, frame: pd.DataFrame) -> list[str]:
    return list(getattr(model, "feature_names_in_", [c for c in contract.input_columns if c in frame.columns]))


def score_chunk(model: Any, contract: DataContract, chunk: pd.DataFrame, offset: int, version: str,
                flag_violations: bool = False) -> ChunkResult:
    """Validate one chunk; quarantine the bad rows and score the good ones, or (`flag_violations`) score
    every row and say in `contract_violation` what each bad row broke.

    The check is column by column (mlops.serving.batchcheck, the same rows and reasons as the Great
    Expectations suite, which still runs for rules only it can judge); the model is called once per chunk."""
    global _GX_USED
    chunk = chunk.reset_index(drop=True)
    checking = scoring_contract(contract)
    checked = check_chunk(chunk, checking)
    frame: pd.DataFrame | None
    if checked is None:
        _GX_USED = True
        outcome = validate_batch(chunk, checking, need_target=False)
        quarantined, good, frame = outcome.quarantined, outcome.good, None
    else:
        frame = checked.frame
        mask = np.zeros(len(frame), dtype=bool)
        mask[checked.bad] = True
        quarantined = chunk.loc[mask].copy()
        quarantined[QUARANTINE_REASON_COLUMN] = checked.reasons
        good = frame.loc[~mask].reset_index(drop=True) if len(checked.bad) else frame
    scorer = scorer_for(model, contract)
    if flag_violations:
        return _flag_chunk(scorer, contract, checking, chunk, quarantined, offset, version, frame)
    bad = quarantined.index.to_numpy()
    good_rows = np.setdiff1d(np.arange(len(chunk)), bad) + offset
    quarantined = quarantined.copy()
    quarantined.insert(0, ROW_COLUMN, bad + offset)
    preds: dict[str, Any] = {ROW_COLUMN: good_rows.astype(np.int64)}
    if contract.id_column and contract.id_column in good.columns:
        preds[contract.id_column] = good[contract.id_column].array
    outputs: dict[str, Any] = {}
    if len(good):
        outputs = scorer.outputs(good[_model_columns(model, contract, good)])
        preds.update(outputs)
    preds["model_version"] = version_column(version, len(good))
    return ChunkResult(pd.DataFrame(preds), quarantined, good, good_rows, outputs)


def version_column(version: str, n: int) -> pd.api.extensions.ExtensionArray:
    """The model version on each of `n` rows, built in Arrow (the column an object array of the same string
    would be inferred to, without a Python string per row)."""
    return pd.array(pa.repeat(pa.scalar(version, pa.string()), n), dtype="str")


def _flag_chunk(scorer: Scorer, contract: DataContract, checking: DataContract, chunk: pd.DataFrame,
                quarantined: pd.DataFrame, offset: int, version: str, frame: pd.DataFrame | None) -> ChunkResult:
    """Every row of the chunk scored in order; the rows that broke the contract flagged with why.

    A bad row is scored as the model would see it (a value that cannot be read is missing, an unknown
    category is ignored by the encoder); a row the model still cannot score keeps an empty prediction,
    and its flag says so."""
    model = scorer.model
    if frame is None:
        frame = coerce_to_contract(chunk, checking, need_target=False).frame
    X = frame[_model_columns(model, contract, frame)]
    reasons = np.full(len(frame), None, dtype=object)
    reasons[quarantined.index.to_numpy()] = quarantined[QUARANTINE_REASON_COLUMN].astype(str).to_numpy(dtype=object)
    scored = np.ones(len(frame), dtype=bool)
    try:
        outputs = scorer.outputs(X)
    except (ValueError, TypeError):  # a flagged row the model refuses: score row by row, keep the rest
        parts: list[dict[str, Any] | None] = []
        for i in range(len(X)):
            try:
                parts.append(model_outputs(model, X.iloc[[i]], contract.task))
            except (ValueError, TypeError) as exc:
                parts.append(None)
                scored[i] = False
                why = f"not scored ({type(exc).__name__}: {str(exc).splitlines()[0][:150]})"
                reasons[i] = why if reasons[i] is None else f"{reasons[i]}; {why}"
        outputs = _stack_outputs(parts)
    preds: dict[str, Any] = {ROW_COLUMN: np.arange(len(frame), dtype=np.int64) + offset}
    for key in (contract.id_column, contract.timestamp_column):
        if key and key in frame.columns and key not in preds:
            preds[key] = frame[key].array
    preds.update(outputs)
    preds["model_version"] = version_column(version, len(frame))
    preds[VIOLATION_COLUMN] = reasons
    if scored.all():
        return ChunkResult(pd.DataFrame(preds), quarantined, frame, np.arange(len(frame)) + offset, outputs)
    rows = np.flatnonzero(scored)
    logged = {k: np.asarray(v)[rows] for k, v in outputs.items()}
    return ChunkResult(pd.DataFrame(preds), quarantined, frame.iloc[rows].reset_index(drop=True), rows + offset,
                       logged)


@dataclass
class ScoredChunk:
    """One scored piece of the input, in input order: its row count, its null counts per input column, what
    `score_chunk` made of it (rows numbered from the start of the input), and the Dask worker that scored it."""

    rows: int
    nulls: dict[str, int]
    result: ChunkResult
    worker: str | None = None


def null_counts(chunk: pd.DataFrame, contract: DataContract) -> dict[str, int]:
    """Missing values per input column of a chunk, as read (before coercion)."""
    return {c: int(chunk[c].isna().sum()) for c in contract.input_columns if c in chunk.columns}


def _stack_outputs(parts: list[dict[str, Any] | None]) -> dict[str, Any]:
    """Row-by-row outputs joined into columns; a row without outputs gets NaN."""
    names = next((list(p) for p in parts if p is not None), ["prediction"])
    return {name: pd.Series([p[name][0] if p is not None else None for p in parts], dtype=object).infer_objects()
            .to_numpy() for name in names}


def release_memory() -> None:
    """Free what a chunk left behind before the next one.

    Each Great Expectations validation leaves cyclic garbage (its ephemeral context) that only a full
    collection frees, and glibc keeps freed pages; without this the process grows ~13 MB per
    100,000-row chunk. With it, memory stays flat however many chunks there are.
    """
    import gc

    global _GX_USED
    if _GX_USED:  # only Great Expectations leaves cycles behind; a full collection costs tens of ms
        gc.collect()
        _GX_USED = False
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the collection alone still bounds it
        pass
