"""Batch scoring: a CSV/Parquet file or folder, scored with the champion in bounded memory.

The input is read in chunks (pyarrow `iter_batches` for Parquet, pandas `chunksize` for CSV); each
chunk is checked against the version's data contract with the same Great Expectations suite the
training flow uses (mlops.core.validation), rows that break it are quarantined (with the expectations
they broke) and not scored, the rest are scored by the version's Pipeline. Predictions stream into
one Parquet file, the quarantine into one CSV, every scored row into the prediction log, and a run
record (JSON) is written next to them. The next chunk is read and the last one written while this one is
checked and scored (mlops.serving.overlap); memory is a few chunks at a time, whatever the input size. One
chunk's check and scoring is mlops.serving.chunks; with `scoring.backend: dask` the chunks are scored on a
Dask cluster's workers instead (mlops.serving.dask_scoring) and this module writes the same run from them.

With `flag_violations` (what `mlops score` does), no row is set aside: every row is scored, in input
order, and the rows that break the contract carry the expectations they broke in the
`contract_violation` column (empty for the others); the output is one CSV or Parquet file.

Null fractions are a property of the whole input, not of a chunk, so they are measured over the
whole input and reported in the run record (with a warning when above the contract's) rather than
judged chunk by chunk.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from mlops.core.config import PipelineConfig
from mlops.core.contract import DataContract
from mlops.core.dask import scheduler_address
from mlops.core.data_roots import data_roots
from mlops.core.errors import DataError, RegistryError
from mlops.core.settings import get_settings
from mlops.core.startup import available_cores
from mlops.core.tabular import ReadOptions, csv_chunks, normalise, read_options
from mlops.core.validation import QUARANTINE_REASON_COLUMN
from mlops.registry.versions import CHAMPION, ModelBundle

# one chunk's check and scoring lives in mlops.serving.chunks (shared with the Dask backend); re-exported here
from mlops.serving.chunks import ROW_COLUMN as ROW_COLUMN
from mlops.serving.chunks import VIOLATION_COLUMN as VIOLATION_COLUMN
from mlops.serving.chunks import ChunkResult as ChunkResult
from mlops.serving.chunks import ScoredChunk as ScoredChunk
from mlops.serving.chunks import (
    check_not_empty,
    is_parquet,
    null_counts,
    parquet_batches,
    release_memory,
    score_chunk,
    unparsable_csv,
)
from mlops.serving.chunks import input_files as input_files
from mlops.serving.chunks import scoring_contract as scoring_contract
from mlops.serving.dask_scoring import cluster_chunks
from mlops.serving.overlap import OrderedWriter, ordered_map, prefetch
from mlops.serving.predictlog import LogRecord, PredictionLogWriter, Redactor, hash_key_from_env

log = logging.getLogger("mlops.serving.scoring")

PREDICTIONS_FILE = "predictions.parquet"
QUARANTINE_FILE = "quarantined.csv"
RUN_RECORD_FILE = "run.json"
OUTPUT_FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


def output_format(path: str | Path) -> str:
    """`csv` or `parquet`, by the file's extension; anything else is one sentence."""
    fmt = OUTPUT_FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise DataError(f"{path}: the output must end in .csv or .parquet (the extension picks the format)")
    return fmt


def require_champion(bundle: ModelBundle | None, model_name: str) -> ModelBundle:
    """The champion scoring uses; no champion is one sentence."""
    if bundle is None:
        raise RegistryError(f"model '{model_name}' has no version with alias '{CHAMPION}' (train one first: "
                            "`mlops train --config <config>`)")
    return bundle


def iter_chunks(path: str | Path, chunk_rows: int, read: ReadOptions | None = None
                ) -> Iterator[tuple[Path, pd.DataFrame]]:
    """(file, chunk) pairs of at most `chunk_rows` rows, in file order, read as training reads them
    (mlops.core.tabular: the config's delimiter and na_values; default: the default config's)."""
    read = read or ReadOptions()
    for f in input_files(path):
        check_not_empty(f)
        if is_parquet(f):
            for frame in parquet_batches(f, chunk_rows):
                yield f, normalise(frame, read)
        else:
            try:
                for chunk in csv_chunks(f, read, chunk_rows):
                    yield f, chunk
            except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
                raise unparsable_csv(f, exc) from None


def local_chunks(model: Any, contract: DataContract, input_path: str | Path, chunk_rows: int, version: str,
                 flag_violations: bool = False, read: ReadOptions | None = None,
                 threads: int | None = None) -> Iterator[ScoredChunk]:
    """The input scored in this process, in input order (the local backend of `score_file`): the next chunk is
    read meanwhile, and after the first chunk (scored alone: the compiled model is checked against the Pipeline
    there, once) `threads` chunks are checked and scored at once, one per core by default."""

    def score(numbered: tuple[int, pd.DataFrame]) -> ScoredChunk:
        offset, chunk = numbered
        return ScoredChunk(len(chunk), null_counts(chunk, contract),
                           score_chunk(model, contract, chunk, offset, version, flag_violations))

    def numbered() -> Iterator[tuple[int, pd.DataFrame]]:
        offset = 0
        for _, chunk in prefetch(iter_chunks(input_path, chunk_rows, read)):
            yield offset, chunk
            offset += len(chunk)

    chunks = numbered()
    first = next(chunks, None)
    if first is None:
        return
    yield score(first)
    for scored in ordered_map(score, chunks, available_cores() if threads is None else threads):
        yield scored
        del scored
        release_memory()


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
    rows_flagged: int = 0
    bad_rows: str = "quarantined"  # or "flagged": scored, with column contract_violation
    quarantine_reasons: dict[str, int] = field(default_factory=dict)
    null_fractions: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    predictions_path: str | None = None
    quarantine_path: str | None = None
    prediction_log_files: int = 0
    started_at: str = ""
    finished_at: str = ""
    seconds: float = 0.0
    backend: str = "local"  # or "dask": chunks scored on a Dask cluster's workers (mlops.serving.dask_scoring)
    chunks_by_worker: dict[str, int] = field(default_factory=dict)  # dask: chunks each worker scored

    def as_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["rows_per_second"] = round(self.rows_read / self.seconds, 1) if self.seconds else None
        return out


class PredictionSink:
    """Predictions appended chunk by chunk to one CSV or Parquet file, written under a temporary name and
    moved into place when complete (a failed run leaves no half-written file behind)."""

    def __init__(self, path: Path) -> None:
        self.path, self.fmt = path, output_format(path)
        self.partial = path.with_name(f".{path.name}.partial")
        self.partial.unlink(missing_ok=True)
        self._writer: Any = None
        self._schema: Any = None
        self.rows = 0

    def write(self, frame: pd.DataFrame) -> None:
        if self.fmt == "csv":
            frame.to_csv(self.partial, mode="a", index=False, header=self.rows == 0)
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.Table.from_pandas(frame, preserve_index=False)
            if self._writer is None:
                fields = [f.with_type(pa.string() if f.name == VIOLATION_COLUMN else pa.float64())
                          if pa.types.is_null(f.type) else f for f in table.schema]
                self._schema = pa.schema(fields)
                self._writer = pq.ParquetWriter(self.partial, self._schema)
            self._writer.write_table(table.cast(self._schema))
        self.rows += len(frame)

    def close(self, empty: pd.DataFrame) -> None:
        """Finish the file (`empty` when nothing was written) and move it into place."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self.rows == 0:
            self.partial.unlink(missing_ok=True)
            if self.fmt == "csv":
                empty.to_csv(self.partial, index=False)
            else:
                empty.to_parquet(self.partial, index=False)
        self.partial.replace(self.path)

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self.partial.unlink(missing_ok=True)


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
    predictions_path: str | Path | None = None,
    flag_violations: bool = False,
    chunks: Iterable[ScoredChunk] | None = None,
    backend: str = "local",
    read: ReadOptions | None = None,
) -> ScoringRun:
    """Score a file or folder chunk by chunk; write predictions, quarantine and the run record to `output_dir`.

    `predictions_path` (.csv or .parquet) puts the predictions elsewhere; `flag_violations` scores every row
    and flags the bad ones instead of quarantining them (see the module docstring). `chunks` are the scored
    chunks in input order when something else scores them (`backend`: a Dask cluster); default: this process,
    reading the input with `read` (the config's ReadOptions; default: the default config's)."""
    out = Path(output_dir)
    pred_path = Path(predictions_path) if predictions_path is not None else out / PREDICTIONS_FILE
    output_format(pred_path)
    files = [str(f) for f in input_files(input_path)]
    out.mkdir(parents=True, exist_ok=True)
    pred_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.time()
    run = ScoringRun(run_id, model_name, str(model_version), model_run_id, str(input_path), str(out),
                     files=files, chunk_rows=chunk_rows, bad_rows="flagged" if flag_violations else "quarantined",
                     started_at=pd.Timestamp(started, unit="s", tz="UTC").isoformat(), backend=backend)
    quarantine_path = out / QUARANTINE_FILE
    for stale in (pred_path, quarantine_path):
        stale.unlink(missing_ok=True)
    sink = PredictionSink(pred_path)
    nulls: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    by_worker: Counter[str] = Counter()
    if chunks is None:
        chunks = local_chunks(model, contract, input_path, chunk_rows, str(model_version), flag_violations, read)
    writer = OrderedWriter()  # each chunk's files are written while the next one is scored

    def write(res: ChunkResult) -> None:
        if len(res.quarantined) and not flag_violations:
            res.quarantined.to_csv(quarantine_path, mode="a", index=False, header=not quarantine_path.exists())
        if len(res.predictions):
            sink.write(res.predictions)
        if log_writer is not None and len(res.good_rows):
            inputs = {c: res.good[c] for c in contract.input_columns if c in res.good.columns}
            record = LogRecord(run_id, time.time(), model_name, str(model_version), inputs, res.outputs,
                               len(res.good), source="batch", rows=res.good_rows)
            run.prediction_log_files += len(log_writer.write([record]))

    try:
        for scored in chunks:
            nulls.update(scored.nulls)
            res = scored.result
            if scored.worker is not None:
                by_worker[scored.worker] += 1
            run.chunks += 1
            run.rows_read += scored.rows
            run.rows_scored += len(res.good_rows)
            for text in res.quarantined[QUARANTINE_REASON_COLUMN] if len(res.quarantined) else []:
                for reason in str(text).split("; "):
                    reasons[reason] += 1
            if flag_violations:
                run.rows_flagged += len(res.quarantined)
            else:
                run.rows_quarantined += len(res.quarantined)
            writer.submit(write, res)
            log.info("chunk %d: %d rows, %d scored, %d %s", run.chunks, scored.rows, len(res.good_rows),
                     len(res.quarantined), run.bad_rows)
            del res, scored
        writer.wait()
    except BaseException:
        writer.discard()
        sink.abort()
        if hasattr(chunks, "close"):  # the reader thread stops now, not when the generator is collected
            chunks.close()
        raise
    if run.rows_read == 0:
        sink.abort()
        raise DataError(f"{input_path}: no rows to score")
    # everything quarantined: still leave an (empty) predictions file
    sink.close(pd.DataFrame({ROW_COLUMN: pd.Series(dtype="int64"), "prediction": pd.Series(dtype="float64")}))
    run.predictions_path = str(pred_path)
    run.quarantine_path = str(quarantine_path) if quarantine_path.exists() else None
    run.quarantine_reasons = dict(reasons.most_common(50))
    run.chunks_by_worker = dict(sorted(by_worker.items()))
    specs = contract.by_name
    for c, k in sorted(nulls.items()):
        frac = k / run.rows_read
        run.null_fractions[c] = round(frac, 6)
        limit = specs[c].max_null_fraction if c in specs else 1.0
        if frac > limit:
            run.warnings.append(f"column '{c}' is {frac:.1%} null, above the contract's {limit:.1%}")
    bad = run.rows_flagged if flag_violations else run.rows_quarantined
    if max_quarantine_fraction is not None and bad > max_quarantine_fraction * run.rows_read:
        where = (f"; flagged in column '{VIOLATION_COLUMN}' of {run.predictions_path}" if flag_violations
                 else f"; see {run.quarantine_path}" if run.quarantine_path else "")
        run.warnings.append(f"{bad} of {run.rows_read} rows broke the data contract, above the "
                            f"allowed {max_quarantine_fraction:.1%}{where}")
    finished = time.time()
    run.finished_at = pd.Timestamp(finished, unit="s", tz="UTC").isoformat()
    run.seconds = round(finished - started, 3)
    (out / RUN_RECORD_FILE).write_text(json.dumps(run.as_dict(), indent=2, default=str))
    for w in run.warnings:
        log.warning("%s", w)
    return run


def score_with_champion(bundle: ModelBundle, cfg: PipelineConfig, input_path: str | Path, output_dir: str | Path,
                        run_id: str, log_dir: Path | None = None, predictions_path: str | Path | None = None,
                        flag_violations: bool = False) -> ScoringRun:
    """`score_file` with the config's chunk size, quarantine limit and prediction-log settings: what the
    `score` flow and `mlops score` both run, here or (`scoring.backend: dask`) on a Dask cluster. The input
    must lie inside the data roots (mlops.core.data_roots), checked before anything is opened."""
    roots = data_roots(cfg, get_settings())
    input_path = roots.confine_file(Path(input_path))
    for f in input_files(input_path):
        roots.confine_file(f)  # a link inside a folder may point out of it
    writer = None
    if log_dir is not None and cfg.serving.log_predictions:
        redactor = Redactor(frozenset(cfg.serving.sensitive_columns), cfg.serving.sensitive_mode, hash_key_from_env())
        writer = PredictionLogWriter(log_dir, redactor)
    args = (bundle.model, bundle.contract, bundle.name, bundle.version, bundle.run_id, input_path, output_dir, run_id,
            cfg.serving.batch_chunk_rows, writer, cfg.validation.max_quarantine_fraction, predictions_path,
            flag_violations)
    if cfg.scoring.backend == "dask":  # the same run, its chunks scored on a Dask cluster's workers
        address = scheduler_address(cfg.scoring.dask_address, get_settings(), "scoring")
        with cluster_chunks(address, bundle.model, bundle.contract, input_path, cfg.serving.batch_chunk_rows,
                            str(bundle.version), flag_violations, keep_inputs=writer is not None,
                            read=read_options(cfg)) as chunks:
            return score_file(*args, chunks=chunks, backend="dask")
    return score_file(*args, read=read_options(cfg))
