"""The one way a tabular data file is read: training, scoring (local and Dask), monitoring and backtests.

Every reader parses CSV with the same options (the config's delimiter; only empty fields are missing when
parsing, so pandas' own NA spellings stay text) and then normalises each frame (or chunk) the same way:
the config's `na_values` and whitespace-only strings in text columns become missing, and a text column
that is all numbers once they are gone becomes numeric. Parquet frames get the same normalisation. So
scoring the file a model trained on reads every value as training read it.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pandas as pd

from mlops.core.config import DEFAULT_NA_VALUES, FileSource, PipelineConfig
from mlops.core.errors import DataError
from mlops.core.profile import is_text_like

CSV_ENCODING = "utf-8-sig"


@dataclass(frozen=True)
class ReadOptions:
    """How a data file is read: its delimiter and the spellings read as missing (whitespace-only always is)."""

    delimiter: str = ","
    na_values: tuple[str, ...] = tuple(DEFAULT_NA_VALUES)

    def csv_kwargs(self) -> dict[str, Any]:
        """pandas.read_csv options: only empty fields are missing while parsing; the markers come after."""
        return {"sep": self.delimiter, "keep_default_na": False, "na_values": [""]}


def read_options(cfg: PipelineConfig) -> ReadOptions:
    """The config's way of reading its data: `na_values` and, for a file source, its delimiter."""
    delimiter = cfg.source.delimiter if isinstance(cfg.source, FileSource) else ","
    return ReadOptions(delimiter, tuple(cfg.na_values))


def apply_na_values(df: pd.DataFrame, na_values: list[str] | tuple[str, ...]
                    ) -> tuple[pd.DataFrame, dict[str, dict[str, int]]]:
    """Turn missing-value markers (and whitespace-only strings) in text columns into missing values.

    Returns the frame and, per column, each spelling read as missing with its count. A text column
    that is all numbers once its markers are gone becomes numeric, as if the markers had been blanks.
    """
    markers = {str(v).strip() for v in na_values}
    out = df
    found: dict[str, dict[str, int]] = {}
    for name in df.columns:
        s = df[name]
        if not is_text_like(s):
            continue
        present = s.dropna()
        if present.empty:
            continue
        text = present.astype(str)
        stripped = text.str.strip()
        hit = (stripped == "") | stripped.isin(markers)
        if not hit.any():
            continue
        if out is df:
            out = df.copy()
        found[str(name)] = {str(k): int(n) for k, n in text[hit].value_counts().items()}
        cleaned = s.mask(s.index.isin(present.index[hit.to_numpy()]))
        numbers = pd.to_numeric(cleaned.astype(object), errors="coerce")
        if cleaned.notna().any() and (numbers.notna() == cleaned.notna()).all():
            cleaned = numbers
        out[name] = cleaned
    return out, found


def normalise(frame: pd.DataFrame, options: ReadOptions) -> pd.DataFrame:
    """A frame (or chunk) as every reader hands it on: markers and blanks missing, numbers numeric."""
    return apply_na_values(frame, options.na_values)[0]


def parse_csv(source: str | bytes | IO[str] | IO[bytes], options: ReadOptions) -> pd.DataFrame:
    """CSV text (or bytes, or a buffer) parsed with the shared options, before normalisation."""
    if isinstance(source, bytes):
        source = io.BytesIO(source)
    elif isinstance(source, str):
        source = io.StringIO(source)
    return pd.read_csv(source, encoding=CSV_ENCODING, **options.csv_kwargs())


def read_csv_block(block: bytes, options: ReadOptions) -> pd.DataFrame:
    """A header plus whole lines (a Dask partition of a CSV file), parsed and normalised."""
    return normalise(parse_csv(block, options), options)


def csv_chunks(path: str | Path, options: ReadOptions, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """A CSV file's rows in normalised chunks of at most `chunk_rows` (bounded memory)."""
    with pd.read_csv(path, chunksize=chunk_rows, encoding=CSV_ENCODING, **options.csv_kwargs()) as reader:
        for chunk in reader:
            yield normalise(chunk, options)


def read_header(path: str | Path, options: ReadOptions) -> list[str]:
    """The column names of a CSV or Parquet file, read without reading its rows."""
    p = Path(path)
    if p.suffix.lower() in {".parquet", ".pq"}:
        import pyarrow.parquet as pq

        return [n for n in pq.read_schema(p).names if not n.startswith("__index_level_")]
    return [str(c) for c in pd.read_csv(p, nrows=0, encoding=CSV_ENCODING, **options.csv_kwargs()).columns]


def check_width(path: str | Path, options: ReadOptions, max_columns: int | None) -> None:
    """Refuse a file with more than `max_columns` columns from its header, before any row is read."""
    if max_columns is None:
        return
    try:
        width = len(read_header(path, options))
    except Exception:  # noqa: BLE001 - an unreadable header: the reader says what is wrong with the file
        return
    if width > max_columns:
        raise DataError(f"{path}: {width:,} columns, above validation.max_columns ({max_columns:,}); refused from its "
                        "header before any row was read: drop unused columns at the source, or raise "
                        "validation.max_columns (validation and training time grow with the columns)")
