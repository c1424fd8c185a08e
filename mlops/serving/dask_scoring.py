"""Batch scoring on a Dask cluster: the same run as local scoring (`mlops.serving.scoring.score_file`, given
these chunks by `score_with_champion` with `scoring.backend: dask`), its chunks scored on the workers.

The model and the data contract go to every worker once (`scatter(..., broadcast=True)`). The input is cut
into partitions the client describes but never reads: for Parquet, consecutive row groups of at most
`chunk_rows` rows (from the file's metadata; a larger row group alone); for CSV, byte ranges of about `chunk_rows` rows, cut at line
ends. Each worker reads its own partition from the file (so the input must be readable at the same path
on the workers: this machine, or a shared file system), checks and scores it with `score_chunk` in chunks
of at most `chunk_rows` rows, and sends back the predictions, the quarantined rows and null counts (and the
scored inputs only when the prediction log wants them). The client keeps a few partitions in flight per
worker thread and takes results in input order, so `score_file` writes exactly what local scoring writes:
same contract check, quarantine or flags, prediction columns, row numbers, order and run record.

Memory is bounded on both sides: a worker holds one partition (and its nanny restarts it past its memory
limit), the client at most the in-flight results. CSV partitions are cut at line ends as dask.dataframe's
`read_csv` does, so a quoted field that spans lines needs Parquet or the local backend.
"""

from __future__ import annotations

import contextlib
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlops.core.contract import DataContract
from mlops.core.dask import connect
from mlops.core.errors import DataError
from mlops.core.tabular import ReadOptions, normalise, read_csv_block
from mlops.serving.chunks import (
    ROW_COLUMN,
    ChunkResult,
    ScoredChunk,
    check_not_empty,
    input_files,
    is_parquet,
    null_counts,
    parquet_batches,
    parquet_file,
    release_memory,
    score_chunk,
    unparsable_csv,
)

IN_FLIGHT_PER_THREAD = 2  # partitions queued per worker thread: enough to keep it busy, few enough to bound memory
CSV_SAMPLE_BYTES = 1 << 20


@dataclass(frozen=True)
class Partition:
    """A piece of one input file a worker reads itself: Parquet row groups, or a CSV byte range."""

    path: str
    row_groups: tuple[int, ...] = ()
    start: int = 0
    end: int = 0
    read: ReadOptions = ReadOptions()  # how the worker reads it: as training reads the file (mlops.core.tabular)

    @property
    def parquet(self) -> bool:
        return is_parquet(self.path)

    def describe(self) -> str:
        where = f"row groups {self.row_groups[0]}-{self.row_groups[-1]}" if self.row_groups else \
            f"bytes {self.start}-{self.end}"
        return f"{self.path} ({where})"


def plan_partitions(input_path: str | Path, chunk_rows: int, read: ReadOptions | None = None) -> list[Partition]:
    """The partitions of a file or folder, in input order; read from metadata (Parquet) or a sample (CSV)."""
    parts: list[Partition] = []
    for f in input_files(input_path):
        if is_parquet(check_not_empty(f)):
            parts += _parquet_partitions(f, chunk_rows)
        else:
            parts += _csv_partitions(f, chunk_rows)
    return [replace(p, read=read) for p in parts] if read is not None else parts


def _parquet_partitions(f: Path, chunk_rows: int) -> list[Partition]:
    meta = parquet_file(f).metadata
    parts, group, rows = [], [], 0
    for i in range(meta.num_row_groups):  # consecutive groups up to chunk_rows rows (a larger group alone)
        n = meta.row_group(i).num_rows
        if group and rows + n > chunk_rows:
            parts.append(Partition(str(f), tuple(group)))
            group, rows = [], 0
        group.append(i)
        rows += n
    if group:
        parts.append(Partition(str(f), tuple(group)))
    return parts


def _csv_partitions(f: Path, chunk_rows: int) -> list[Partition]:
    size = f.stat().st_size
    with open(f, "rb") as fh:
        sample = fh.read(CSV_SAMPLE_BYTES)
    lines = max(1, sample.count(b"\n"))
    block = max(CSV_SAMPLE_BYTES // 16, int(len(sample) / lines * chunk_rows))
    return [Partition(str(f), start=start, end=min(start + block, size)) for start in range(0, size, block)]


def _csv_block(part: Partition) -> bytes:
    """The header and the lines that start within [start, end) of the file (the last one read to its end)."""
    with open(part.path, "rb") as fh:
        header = fh.readline()
        if part.start <= len(header):
            begin = len(header)
        else:
            fh.seek(part.start - 1)
            fh.readline()  # the line holding byte start-1 belongs to the partition before
            begin = fh.tell()
        if begin >= part.end:
            return header
        fh.seek(begin)
        data = fh.read(part.end - begin)
        if data and not data.endswith(b"\n"):
            data += fh.readline()
    return header + data


def read_partition(part: Partition, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """The partition's rows in chunks of at most `chunk_rows` (what a worker reads); unreadable is one sentence."""
    if part.parquet:
        for frame in parquet_batches(part.path, chunk_rows, list(part.row_groups)):
            yield normalise(frame, part.read)
        return
    try:
        block = _csv_block(part)
    except OSError as exc:
        raise DataError(f"{part.path}: a Dask worker cannot read it ({exc.strerror}); the workers must see the "
                        "input at the same path (this machine or a shared file system)") from None
    try:
        frame = read_csv_block(block, part.read)
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise unparsable_csv(part.path, exc) from None
    for start in range(0, len(frame), chunk_rows):
        yield frame.iloc[start:start + chunk_rows]


def score_partition(model: Any, contract: DataContract, part: Partition, chunk_rows: int, version: str,
                    flag_violations: bool, keep_inputs: bool) -> ScoredChunk:
    """Read and score one partition on a worker; rows are numbered from the partition's start (the client
    shifts them). Runs as a Dask task."""
    from distributed import get_worker

    results: list[ChunkResult] = []
    nulls: dict[str, int] = {}
    rows = 0
    for chunk in read_partition(part, chunk_rows):
        for c, n in null_counts(chunk, contract).items():
            nulls[c] = nulls.get(c, 0) + n
        res = score_chunk(model, contract, chunk, rows, version, flag_violations)
        if not keep_inputs:  # the prediction log is off: the scored inputs need not travel back
            res.good, res.outputs = res.good.iloc[:0], {}
        results.append(res)
        rows += len(chunk)
        del chunk, res
        release_memory()
    return ScoredChunk(rows, nulls, _joined(results), str(get_worker().name))


def _joined(results: list[ChunkResult]) -> ChunkResult:
    """One ChunkResult from the chunks of a partition, in order."""
    if len(results) == 1:
        return results[0]
    if not results:
        return ChunkResult(pd.DataFrame({ROW_COLUMN: pd.Series(dtype="int64")}), pd.DataFrame(), pd.DataFrame(),
                           np.empty(0, dtype=np.int64), {})
    keys = [k for k in results[0].outputs]
    return ChunkResult(
        pd.concat([r.predictions for r in results], ignore_index=True),
        pd.concat([r.quarantined for r in results], ignore_index=True),
        pd.concat([r.good for r in results], ignore_index=True),
        np.concatenate([r.good_rows for r in results]),
        {k: np.concatenate([np.asarray(r.outputs[k]) for r in results if k in r.outputs]) for k in keys},
    )


def _shifted(scored: ScoredChunk, offset: int) -> ScoredChunk:
    """Row numbers of a partition's result moved from the partition's start to the input's."""
    res = scored.result
    if offset:
        res.predictions[ROW_COLUMN] = res.predictions[ROW_COLUMN].to_numpy() + offset
        if ROW_COLUMN in res.quarantined.columns:  # flagged runs keep no row numbers with their bad rows
            res.quarantined[ROW_COLUMN] = res.quarantined[ROW_COLUMN].to_numpy() + offset
        res.good_rows = res.good_rows + offset
    return scored


def dask_chunks(client: Any, model: Any, contract: DataContract, parts: list[Partition], chunk_rows: int,
                version: str, flag_violations: bool = False, keep_inputs: bool = True) -> Iterator[ScoredChunk]:
    """Each partition scored on the cluster, yielded in input order with rows numbered from the input's start;
    a bounded number of partitions is in flight at a time."""
    from distributed import KilledWorker
    from distributed.client import FutureCancelledError

    try:
        model_f, contract_f = client.scatter([model, contract], broadcast=True, hash=False)
        window = max(2, IN_FLIGHT_PER_THREAD * sum(client.nthreads().values()))
    except (OSError, TimeoutError) as exc:
        raise _lost(client, exc) from None
    tag = uuid.uuid4().hex[:8]
    queued: deque[tuple[Partition, Any]] = deque()
    todo = iter(enumerate(parts))

    def submit() -> None:
        for i, part in todo:
            queued.append((part, client.submit(score_partition, model_f, contract_f, part, chunk_rows, version,
                                               flag_violations, keep_inputs, key=f"score-partition-{tag}-{i}",
                                               pure=False)))
            if len(queued) >= window:
                return

    offset = 0
    try:
        submit()
        while queued:
            part, future = queued.popleft()
            try:
                scored = future.result()
            except KilledWorker:
                raise DataError(f"the Dask workers died scoring {part.describe()}, most likely past their memory "
                                "limit; lower serving.batch_chunk_rows or give the workers more memory "
                                "(--memory-limit, MLOPS_DASK_MEMORY_LIMIT)") from None
            except (OSError, TimeoutError, FutureCancelledError) as exc:
                raise _lost(client, exc) from None
            future.release()
            submit()
            if scored.rows:
                yield _shifted(scored, offset)
                offset += scored.rows
    finally:
        for _, future in queued:
            future.cancel()
        for f in (model_f, contract_f):
            f.release()


def _lost(client: Any, exc: BaseException) -> DataError:
    text = str(exc).splitlines()[0][:160] if str(exc) else ""
    return DataError(f"lost the Dask scheduler at {client.scheduler.address} while scoring ({type(exc).__name__}: "
                     f"{text}); check the cluster and run again")


@contextlib.contextmanager
def cluster_chunks(address: str, model: Any, contract: DataContract, input_path: str | Path, chunk_rows: int,
                   version: str, flag_violations: bool = False, keep_inputs: bool = True,
                   read: ReadOptions | None = None) -> Iterator[Iterator[ScoredChunk]]:
    """The input's scored chunks from the Dask cluster at `address`, for `score_file(..., chunks=...)`, while
    connected; an unreachable scheduler is one sentence."""
    parts = plan_partitions(input_path, chunk_rows, read)
    client = connect(address, "scoring")
    with client:
        yield dask_chunks(client, model, contract, parts, chunk_rows, version, flag_violations, keep_inputs)
