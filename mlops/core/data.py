"""Loading, generating, fingerprinting and splitting tabular data. Pure functions, no Prefect."""

from __future__ import annotations

import csv
import hashlib
import io
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from mlops.core.config import (
    DEFAULT_MAX_DATA_BYTES,
    FileSource,
    GeneratedSource,
    PipelineConfig,
    SklearnSource,
    SplitConfig,
)
from mlops.core.data_roots import DataPathRefused, DataRoots, check_size, data_roots
from mlops.core.errors import DataError
from mlops.core.generate import demand_from_source
from mlops.core.profile import DataProfile, profile_batch
from mlops.core.settings import Settings
from mlops.core.tabular import ReadOptions, apply_na_values, check_width, parse_csv

CHURN_START = pd.Timestamp("2025-01-01")
# re-exported: the readers below enforce the roots; apply_na_values is the shared reader's (mlops.core.tabular)
__all__ = ["DataPathRefused", "DataRoots", "apply_na_values", "data_roots"]


def generate_churn(
    rows: int = 20_000, seed: int = 7, drift: float = 0.0, start: pd.Timestamp | None = None, corrupt: float = 0.0
) -> pd.DataFrame:
    """A deterministic customer-churn table: numeric and categorical columns, missing values, a timestamp.

    `corrupt` is the share of rows given impossible values (age 150, negative charges), as real exports
    have, so validation has something to quarantine. `drift` in [0, 1] shifts the inputs (prices up, usage down, more southern customers, more support
    calls) and changes the concept (support calls and price matter more), so a model trained on
    undrifted data loses quality on drifted data and a retrained one recovers it.
    """
    if rows < 1:
        raise ValueError("rows must be positive")
    rng = np.random.default_rng(seed)
    d = float(drift)
    t0 = start if start is not None else CHURN_START
    ts = t0 + pd.to_timedelta(np.sort(rng.uniform(0, 180 * 24 * 3600, rows)).astype("int64"), unit="s")
    region = rng.choice(["north", "south", "east", "west"], rows, p=_norm([0.3, 0.2 + 0.4 * d, 0.25, 0.25 - 0.15 * d]))
    plan = rng.choice(["basic", "standard", "premium"], rows, p=[0.5, 0.35, 0.15])
    contract = rng.choice(["monthly", "one_year", "two_year"], rows, p=[0.55, 0.25, 0.20])
    payment = rng.choice(["card", "bank_transfer", "e_check", "mailed_check"], rows, p=[0.35, 0.25, 0.3, 0.1])
    tenure = rng.integers(1, 73, rows)
    base_price = np.select([plan == "basic", plan == "standard"], [35.0, 65.0], 95.0)
    monthly = np.round(base_price + rng.normal(0, 8, rows) + 20.0 * d, 2)
    usage = np.round(rng.lognormal(mean=3.0 - 0.6 * d, sigma=0.5, size=rows), 2)
    calls = rng.poisson(1.2 + 1.5 * d, rows)
    age = rng.integers(18, 81, rows).astype(float)
    total = np.round(tenure * monthly * rng.normal(1.0, 0.03, rows), 2)

    logit = (
        -1.0
        + 1.1 * (contract == "monthly")
        - 0.9 * (contract == "two_year")
        - 0.035 * tenure
        + (0.025 + 0.03 * d) * (monthly - 60.0)
        + (0.35 + 0.5 * d) * calls
        - (0.015 - 0.03 * d) * (usage - 20.0)
        + 0.4 * (payment == "e_check")
        + 0.3 * (region == "south") * (1.0 + 2.0 * d)
        - 0.01 * (age - 45)
    )
    p = 1.0 / (1.0 + np.exp(-logit))
    churned = (rng.uniform(size=rows) < p).astype(int)

    df = pd.DataFrame(
        {
            "customer_id": [f"C{seed:03d}{i:08d}" for i in range(rows)],
            "event_time": ts,
            "tenure_months": tenure,
            "monthly_charges": monthly,
            "total_charges": total,
            "usage_gb": usage,
            "support_calls": calls,
            "age": age,
            "region": region,
            "plan": plan,
            "contract": contract,
            "payment_method": payment,
            "churned": churned,
        }
    )
    # realistic gaps: some ages and total charges are not known
    df.loc[rng.uniform(size=rows) < 0.04, "age"] = np.nan
    df.loc[rng.uniform(size=rows) < 0.01, "total_charges"] = np.nan
    df["payment_method"] = df["payment_method"].astype(object)
    df.loc[rng.uniform(size=rows) < 0.02, "payment_method"] = None
    if corrupt > 0:
        bad = np.flatnonzero(rng.uniform(size=rows) < corrupt)
        half = len(bad) // 2
        df.loc[bad[:half], "age"] = 150.0
        df.loc[bad[half:], "monthly_charges"] = -1.0
    return df


def _norm(p: list[float]) -> list[float]:
    s = sum(p)
    return [x / s for x in p]


def load_sklearn_dataset(name: str) -> tuple[pd.DataFrame, str]:
    """A dataset that ships inside scikit-learn, as a frame and its target column name."""
    from sklearn import datasets

    loader = {
        "breast_cancer": datasets.load_breast_cancer,
        "diabetes": datasets.load_diabetes,
        "wine": datasets.load_wine,
        "iris": datasets.load_iris,
    }[name]
    bunch = loader(as_frame=True)
    frame = bunch.frame.copy()
    frame.columns = [str(c).replace(" ", "_") for c in frame.columns]
    return frame, "target"


@dataclass
class MalformedRow:
    """A CSV record whose field count differs from the header's; it goes to quarantine, not into the frame."""

    source: str
    line: int
    fields: list[str]
    header: list[str]
    last: bool = False

    @property
    def where(self) -> str:
        return f"the last row (line {self.line})" if self.last else f"line {self.line}"

    @property
    def detail(self) -> str:
        return f"{Path(self.source).name} {self.where} has {len(self.fields)} fields, the header has {len(self.header)}"

    @property
    def reason(self) -> str:
        """The quarantine reason."""
        return f"malformed: {self.detail}"

    def record(self) -> dict[str, str | None]:
        """The fields it has, under the header's names (missing ones empty; extra ones left out)."""
        return {c: (self.fields[i] if i < len(self.fields) else None) for i, c in enumerate(self.header)}


@dataclass
class Table:
    """A read table: the well-formed rows, the malformed ones set aside, and the markers read as missing."""

    frame: pd.DataFrame
    malformed: list[MalformedRow] = field(default_factory=list)
    markers: dict[str, dict[str, int]] = field(default_factory=dict)


def malformed_error(rows: list[MalformedRow], detail: str = "") -> DataError:
    """One sentence for malformed rows: the first one, the header's width and how many there are."""
    first = rows[0]
    return DataError(
        f"{first.source}: {'the last row' if first.last else f'line {first.line}'} has {len(first.fields)} fields, "
        f"the header has {len(first.header)} (truncated or malformed file; {len(rows)} bad row(s){detail})"
    )


def read_table(path: str | Path, fmt: str = "auto", delimiter: str = ",",
               na_values: list[str] | None = None, *, roots: DataRoots | None = None,
               max_bytes: int | None = None, max_columns: int | None = None) -> pd.DataFrame:
    """Read a CSV or Parquet file, turning every way it can be broken into one clear DataError.

    Strict: a row with the wrong number of fields is an error (read_table_collecting sets such rows
    aside instead). The `na_values` spellings (default: the config's default ones) and whitespace-only
    strings become missing, as every reader reads them (mlops.core.tabular).
    With `roots`, a path outside them is refused before it is opened; with `max_bytes`, a larger file
    (or folder) is refused before it is read; with `max_columns`, a wider file is refused from its header.
    Messages never quote the data.
    """
    table = read_table_collecting(path, fmt, delimiter, na_values, roots=roots, max_bytes=max_bytes,
                                  max_columns=max_columns)
    if table.malformed:
        raise malformed_error(table.malformed)
    return table.frame


def read_table_collecting(path: str | Path, fmt: str = "auto", delimiter: str = ",",
                          na_values: list[str] | None = None, *, roots: DataRoots | None = None,
                          max_bytes: int | None = None, max_columns: int | None = None) -> Table:
    """Read like read_table, but set malformed CSV rows aside (with line numbers) instead of failing."""
    options = ReadOptions(delimiter) if na_values is None else ReadOptions(delimiter, tuple(na_values))
    table = _read_any(Path(path), fmt, options, roots, max_bytes, max_columns)
    table.frame, table.markers = apply_na_values(table.frame, options.na_values)
    return table


def existing_path(p: Path, roots: DataRoots | None = None) -> Path:
    """`p` inside the data roots (when given; checked before anything is opened), and present."""
    if roots is not None:
        p = roots.confine_file(p)
    if not p.exists():
        raise DataError(f"{p}: data file not found")
    return p


def check_given_path(cfg: PipelineConfig, source_path: object, settings: Settings) -> Path:
    """A file or folder named at run time, checked as loading it checks it first (not empty, inside the data
    roots, present): the CLI says so before it starts a run."""
    roots = data_roots(cfg, settings)
    return existing_path(Path(with_source_path(cfg, source_path).source.path), roots)


def _read_any(p: Path, fmt: str, options: ReadOptions, roots: DataRoots | None = None,
              max_bytes: int | None = None, max_columns: int | None = None) -> Table:
    p = existing_path(p, roots)
    if p.is_dir():
        files = sorted([*p.glob("*.parquet"), *p.glob("*.csv")])
        if not files:
            raise DataError(f"{p}: folder holds no .csv or .parquet files")
        if roots is not None:
            files = [roots.confine_file(f) for f in files]  # a link inside the folder may point out of it
        check_size(p, files, max_bytes)
        parts = [_read_any(f, "auto", options, max_columns=max_columns) for f in files]
        frame = pd.concat([t.frame for t in parts], ignore_index=True)
        table = Table(frame, [m for t in parts for m in t.malformed])
    else:
        if p.stat().st_size == 0:
            raise DataError(f"{p}: data file is empty")
        check_size(p, [p], max_bytes)
        check_width(p, options, max_columns)
        kind = fmt if fmt != "auto" else ("parquet" if p.suffix.lower() in {".parquet", ".pq"} else "csv")
        if kind == "parquet":
            try:
                table = Table(pd.read_parquet(p))
            except Exception as exc:  # pyarrow raises many types for corrupt files
                raise DataError(f"{p}: not a readable Parquet file ({type(exc).__name__})") from None
        else:
            table = _read_csv(p, options)
    return table


def _read_csv(p: Path, options: ReadOptions) -> Table:
    """Parse a CSV file; records with the wrong field count are set aside with their line numbers.

    Only empty fields are missing when parsing (the shared options: pandas' own NA spellings stay text),
    so apply_na_values can count the markers it reads as missing.
    """
    delimiter = options.delimiter
    raw = p.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(f"{p}: line {line} is not UTF-8 text; re-save the file as UTF-8") from None
    lines = list(io.StringIO(text, newline=""))
    if not lines or not lines[0].strip():
        raise DataError(f"{p}: data file has no header row")
    skip: set[int] = set()
    malformed: list[MalformedRow] = []
    rows = 0
    last_start = -1
    try:
        reader = csv.reader(lines, delimiter=delimiter)
        header = next(reader)
        if len(header) == 1:
            for other in [";", "\t", "|", ","]:
                if other != delimiter and len(lines[0].split(other)) > 1:
                    raise DataError(
                        f"{p}: only one column found with delimiter {delimiter!r}; the file looks "
                        f"{other!r}-delimited (set source.delimiter)"
                    )
        prev = reader.line_num
        for rec in reader:
            start, end = prev, reader.line_num
            prev = end
            if not rec or (len(rec) == 1 and not rec[0].strip() and len(header) > 1):
                skip.update(range(start, end))  # a blank line
                continue
            last_start = start
            if len(rec) != len(header):
                malformed.append(MalformedRow(str(p), start + 1, rec, header))
                skip.update(range(start, end))
            else:
                rows += 1
    except csv.Error as exc:
        raise DataError(f"{p}: cannot parse CSV ({_unquoted(str(exc))})") from None
    if malformed and malformed[-1].line == last_start + 1:
        malformed[-1].last = True
    if not rows:
        if malformed:
            raise malformed_error(malformed, ", and no well-formed rows")
        raise DataError(f"{p}: data file has a header but no rows")
    body = "".join(ln for i, ln in enumerate(lines) if i not in skip) if skip else text
    try:
        frame = parse_csv(body, options)
    except (pd.errors.ParserError, ValueError) as exc:
        raise DataError(f"{p}: cannot parse CSV ({_unquoted(str(exc).splitlines()[0])})") from None
    return Table(frame, malformed)


def _unquoted(message: str) -> str:
    """A parser's message without the quoted text it may carry from the file (errors never quote data)."""
    return re.sub(r"'[^']*'|\"[^\"]*\"", "'...'", message)[:200]


def with_source_path(cfg: PipelineConfig, source_path: object) -> PipelineConfig:
    """`cfg` reading the file or folder named at run time (an event, a deployment parameter, `--data`).

    An empty or non-text path is refused: it would otherwise mean "train on the config's own data". The
    file keeps the config's size cap when the config's source is a file (else the default cap).
    """
    if not isinstance(source_path, str) or not source_path.strip():
        got = "an empty string" if isinstance(source_path, str) else f"a {type(source_path).__name__}"
        raise DataPathRefused(
            f"refused: source_path must name a CSV/Parquet file or folder inside a data root, got {got} (an event "
            "whose path is empty, null, missing or not text arrives so); nothing was trained. Leave source_path "
            "out to train on the config's own source")
    cap = cfg.source.max_bytes if isinstance(cfg.source, FileSource) else DEFAULT_MAX_DATA_BYTES
    return cfg.model_copy(update={"source": FileSource(path=source_path, max_bytes=cap)})


def read_source(cfg: PipelineConfig, collect_malformed: bool = False, roots: DataRoots | None = None) -> Table:
    """The configured source as a Table, with the config's na_values applied to its text columns.

    A file source is read within its size cap and, with `roots`, only from inside them."""
    src = cfg.source
    if isinstance(src, FileSource):
        reader = read_table_collecting if collect_malformed else read_table
        got = reader(src.path, src.format, src.delimiter, cfg.na_values, roots=roots, max_bytes=src.max_bytes,
                     max_columns=cfg.validation.max_columns)
        return got if isinstance(got, Table) else Table(got)
    if isinstance(src, GeneratedSource):
        df = (demand_from_source(src) if src.dataset == "demand"
              else generate_churn(src.rows, src.seed, src.drift, corrupt=src.corrupt))
    elif isinstance(src, SklearnSource):
        df, _ = load_sklearn_dataset(src.name)
    else:  # pragma: no cover - the config schema rules this out
        raise DataError(f"unknown source kind {src!r}")
    if len(df.columns) > cfg.validation.max_columns:
        raise DataError(f"the data has {len(df.columns):,} columns, above validation.max_columns "
                        f"({cfg.validation.max_columns:,}); raise it or use fewer columns")
    frame, markers = apply_na_values(df, cfg.na_values)
    return Table(frame, [], markers)


def load_source(cfg: PipelineConfig) -> pd.DataFrame:
    """Load the configured data source and check the basics every later step relies on (strict on malformed rows)."""
    return check_frame(read_source(cfg).frame, cfg)


@dataclass
class LoadedData:
    """Training data as loaded: the frame, its fingerprint, the malformed rows set aside, and the profile."""

    frame: pd.DataFrame
    fingerprint: str
    profile: DataProfile
    malformed: list[MalformedRow] = field(default_factory=list)


def load_training_data(cfg: PipelineConfig, roots: DataRoots | None = None) -> LoadedData:
    """Load the source for training: malformed rows set aside (within max_quarantine_fraction), then profiled.

    More malformed rows than validation.max_quarantine_fraction allows stop the run with one sentence.
    With `roots`, a file source outside them is refused before it is opened.
    """
    table = read_source(cfg, collect_malformed=True, roots=roots)
    bad = table.malformed
    limit = cfg.validation.max_quarantine_fraction
    total = len(table.frame) + len(bad)
    if bad and len(bad) > limit * total:
        raise malformed_error(bad, f", {len(bad) / total:.1%} of the rows, above validation.max_quarantine_fraction "
                                   f"{limit:.1%}")
    df = check_frame(table.frame, cfg)
    removed = {c: "listed in drop_columns" for c in cfg.drop_columns if c in table.frame.columns}
    removed |= {c: "declared drop in columns" for c, t in cfg.columns.items() if t == "drop" and c in table.frame.columns}
    profile = profile_batch(df, cfg, table.markers, removed, [m.detail for m in bad])
    return LoadedData(df, fingerprint(df), profile, bad)


def check_frame(df: pd.DataFrame, cfg: PipelineConfig, need_target: bool = True) -> pd.DataFrame:
    """Basic shape checks: rows present, target present and usable, configured and declared columns present."""
    if len(df) == 0:
        raise DataError("the data has no rows")
    needed = [c for c in [cfg.id_column, cfg.timestamp_column] if c]
    if need_target:
        needed.insert(0, cfg.target)
    missing = [c for c in needed if c not in df.columns]
    if missing:
        role = "target" if cfg.target in missing and need_target else "configured"
        # the data's own header is not quoted: for a file that is not a table, it is its first line
        raise DataError(f"{role} column(s) {missing} not in the data ({len(df.columns)} column(s) read; check "
                        "the file's header and source.delimiter)")
    undeclared = [c for c in cfg.columns if c not in df.columns and c not in cfg.drop_columns]
    if undeclared:
        raise DataError(f"columns declares a type for '{undeclared[0]}', but the data has no such column "
                        f"({len(df.columns)} column(s) read)")
    special = {cfg.target, cfg.id_column, cfg.timestamp_column}
    declared_drop = [c for c, t in cfg.columns.items() if t == "drop" and c not in special]
    df = df.drop(columns=[c for c in [*cfg.drop_columns, *declared_drop] if c in df.columns])
    if need_target:
        blank = unlabelled_rows(df[cfg.target], cfg.na_values)
        if blank.all():
            raise no_labels_error(cfg.target, len(df))
        y = df[cfg.target].loc[~blank]  # rows without a label are left out by training, not judged here
        if cfg.task == "classification" and y.nunique() < 2:
            raise DataError(
                f"target column '{cfg.target}' has a single class; classification needs at least two"
            )
        if cfg.task == "regression" and not pd.api.types.is_numeric_dtype(y):
            coerced = pd.to_numeric(y, errors="coerce")
            if coerced.notna().sum() < 0.95 * len(y):
                raise DataError(f"target column '{cfg.target}' is not numeric; a regression target must be")
    return df


def unlabelled_rows(y: pd.Series, na_values: Iterable[str] = ()) -> np.ndarray:
    """Which rows of a target column have no label: a missing value, an empty or whitespace-only string, or
    one of the missing-value markers `na_values` (the config's, e.g. "?").

    A value that is present but wrong (text in a numeric target, a value a rule forbids) is a label, and
    validation judges it; only a blank is "no label".
    """
    blank = y.isna().to_numpy(dtype=bool, copy=True)
    if pd.api.types.is_object_dtype(y) or pd.api.types.is_string_dtype(y) or isinstance(y.dtype, pd.CategoricalDtype):
        text = y.astype(object).where(y.notna(), "").map(str).str.strip()
        markers = {str(v).strip() for v in na_values}
        blank |= ((text == "") | text.isin(markers)).to_numpy(dtype=bool)
    return blank


def no_labels_error(target: str, rows: int) -> DataError:
    """The one sentence for data where no row has a label."""
    return DataError(f"no row has a label: target column '{target}' is blank (empty or a missing-value marker) in "
                     f"all {rows:,} rows, so there is nothing to train on; add the labels, or set `target` to the "
                     "column that holds them")


def drop_unlabelled(df: pd.DataFrame, cfg: PipelineConfig) -> tuple[pd.DataFrame, int]:
    """The rows that have a label (index reset) and how many had none; no row with a label is a DataError.

    Training leaves unlabelled rows out before validation: they are not broken data, so they are neither
    quarantined nor counted against validation.max_quarantine_fraction. A text target that is all numbers
    once its blanks are gone becomes numeric, as apply_na_values makes it when it reads the markers.
    """
    blank = unlabelled_rows(df[cfg.target], cfg.na_values)
    if blank.all():
        raise no_labels_error(cfg.target, len(df))
    if not blank.any():
        return df, 0
    kept = df.loc[~blank].reset_index(drop=True)
    y = kept[cfg.target]
    if pd.api.types.is_object_dtype(y) or pd.api.types.is_string_dtype(y):
        numbers = pd.to_numeric(y.astype(object), errors="coerce")
        if numbers.notna().all():
            kept[cfg.target] = numbers
    return kept, int(blank.sum())


def fingerprint(df: pd.DataFrame) -> str:
    """A content hash of a frame (values, columns and dtypes), recorded as lineage."""
    h = hashlib.sha256()
    h.update(",".join(f"{c}:{t}" for c, t in df.dtypes.astype(str).items()).encode())
    h.update(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes())
    return h.hexdigest()[:16]


@dataclass
class Split:
    train: pd.DataFrame
    test: pd.DataFrame
    holdout: str = ""  # how the holdout was chosen, one sentence for the summary and lineage


def split_frame(df: pd.DataFrame, target: str, task: str, cfg: SplitConfig, timestamp_column: str | None,
                new_rows: np.ndarray | None = None) -> Split:
    """Reproducible split: time-ordered (last rows held out) with a timestamp, else seeded random.

    `new_rows` (a retrain on the champion's data plus new rows) flags the rows the champion never
    trained on; only they are held out, so the champion is not judged on its own training rows: the
    newest `test_size` of them with a timestamp, else a seeded sample of that size (at least 10, and
    `test_size` of all rows at most). The older new rows train, so a challenger learns a new regime the
    holdout then judges it on.
    """
    from sklearn.model_selection import train_test_split

    if len(df) < 10:
        raise DataError(f"only {len(df)} usable rows; at least 10 are needed to train and hold out")
    n_test = max(1, int(round(len(df) * cfg.test_size)))
    can_stratify = task == "classification" and cfg.stratify
    if new_rows is not None and not np.all(new_rows):
        new_idx = np.flatnonzero(np.asarray(new_rows, dtype=bool))
        n_hold = min(n_test, len(new_idx), max(10, int(math.ceil(len(new_idx) * cfg.test_size))))
        if n_hold < 10:
            raise DataError(f"only {len(new_idx)} of the {len(df):,} rows are new (never seen by the champion) and "
                            "at least 10 are needed for a fair holdout; retrain once more labelled rows have arrived")
        if timestamp_column:
            order = df[timestamp_column].iloc[new_idx].reset_index(drop=True)
            order = order.sort_values(kind="stable", na_position="first").index.to_numpy()
            test_idx = new_idx[order[-n_hold:]]
            how = f"the newest {n_hold:,} of {len(new_idx):,} new rows (by {timestamp_column})"
        else:
            test_idx = new_idx
            if n_hold < len(new_idx):
                y_new = df[target].iloc[new_idx]
                strat = y_new if can_stratify and y_new.value_counts().min() >= 2 else None
                _, test_idx = train_test_split(new_idx, test_size=n_hold, random_state=cfg.seed, stratify=strat)
            how = f"a seeded sample (seed {cfg.seed}) of {n_hold:,} of the {len(new_idx):,} new rows"
        held = np.zeros(len(df), dtype=bool)
        held[test_idx] = True
        if task == "classification" and df[target].iloc[np.flatnonzero(held)].nunique() < 2:
            raise DataError(f"the {n_hold} new rows held out hold a single class of '{target}', so the retrain cannot "
                            "be compared fairly; retrain once more labelled rows have arrived")
        train, test = df.iloc[np.flatnonzero(~held)], df.iloc[np.flatnonzero(held)]
        if timestamp_column:
            train = train.sort_values(timestamp_column, kind="stable")
            test = test.sort_values(timestamp_column, kind="stable")
        return Split(train.reset_index(drop=True), test.reset_index(drop=True),
                     f"holdout: {how}, rows the champion never trained on; the other {len(train):,} rows train"
                     + ("" if n_hold == n_test else f" (test_size {cfg.test_size:g} of the new rows)"))
    if timestamp_column:
        ordered = df.sort_values(timestamp_column, kind="stable")
        return Split(ordered.iloc[:-n_test].reset_index(drop=True), ordered.iloc[-n_test:].reset_index(drop=True),
                     f"holdout: the newest {n_test:,} rows (test_size {cfg.test_size:g}, by {timestamp_column})")
    stratify = None
    if can_stratify and df[target].value_counts().min() >= 2:
        stratify = df[target]
    tr, te = train_test_split(df, test_size=cfg.test_size, random_state=cfg.seed, stratify=stratify)
    return Split(tr.reset_index(drop=True), te.reset_index(drop=True),
                 f"holdout: a seeded random {len(te):,} rows (test_size {cfg.test_size:g}, seed {cfg.seed}"
                 + (f", stratified by {target})" if stratify is not None else ")"))
