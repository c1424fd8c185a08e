"""Loading, generating, fingerprinting and splitting tabular data. Pure functions, no Prefect."""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mlops.config import FileSource, GeneratedSource, PipelineConfig, SklearnSource, SplitConfig
from mlops.errors import DataError

CHURN_START = pd.Timestamp("2025-01-01")


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


def read_table(path: str | Path, fmt: str = "auto", delimiter: str = ",") -> pd.DataFrame:
    """Read a CSV or Parquet file, turning every way it can be broken into one clear DataError."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: data file not found")
    if p.is_dir():
        files = sorted([*p.glob("*.parquet"), *p.glob("*.csv")])
        if not files:
            raise DataError(f"{p}: folder holds no .csv or .parquet files")
        return pd.concat([read_table(f, "auto", delimiter) for f in files], ignore_index=True)
    if p.stat().st_size == 0:
        raise DataError(f"{p}: data file is empty")
    kind = fmt if fmt != "auto" else ("parquet" if p.suffix.lower() in {".parquet", ".pq"} else "csv")
    if kind == "parquet":
        try:
            return pd.read_parquet(p)
        except Exception as exc:  # pyarrow raises many types for corrupt files
            raise DataError(f"{p}: not a readable Parquet file ({type(exc).__name__})") from None
    return _read_csv(p, delimiter)


def _read_csv(p: Path, delimiter: str) -> pd.DataFrame:
    raw = p.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(f"{p}: line {line} is not UTF-8 text; re-save the file as UTF-8") from None
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise DataError(f"{p}: data file has no header row")
    header = next(csv.reader([lines[0]], delimiter=delimiter))
    if len(header) == 1:
        for other in [";", "\t", "|", ","]:
            if other != delimiter and len(lines[0].split(other)) > 1:
                raise DataError(
                    f"{p}: only one column found with delimiter {delimiter!r}; the file looks "
                    f"{other!r}-delimited (set source.delimiter)"
                )
    data_lines = [ln for ln in lines[1:] if ln.strip()]
    if not data_lines:
        raise DataError(f"{p}: data file has a header but no rows")
    width = len(header)
    widths = [len(r) for r in csv.reader(data_lines, delimiter=delimiter)]
    bad = [i for i, w in enumerate(widths) if w != width]
    if bad:
        first = bad[0] + 2
        where = "the last row" if bad == [len(widths) - 1] else f"line {first}"
        raise DataError(
            f"{p}: {where} has {widths[bad[0]]} fields, the header has {width} "
            f"(truncated or malformed file; {len(bad)} bad row(s))"
        )
    try:
        return pd.read_csv(p, sep=delimiter, encoding="utf-8-sig")
    except (pd.errors.ParserError, ValueError) as exc:
        raise DataError(f"{p}: cannot parse CSV ({str(exc).splitlines()[0]})") from None


def load_source(cfg: PipelineConfig) -> pd.DataFrame:
    """Load the configured data source and check the basics every later step relies on."""
    src = cfg.source
    if isinstance(src, GeneratedSource):
        df = generate_churn(src.rows, src.seed, src.drift, corrupt=src.corrupt)
    elif isinstance(src, SklearnSource):
        df, _ = load_sklearn_dataset(src.name)
    elif isinstance(src, FileSource):
        df = read_table(src.path, src.format, src.delimiter)
    else:  # pragma: no cover - the config schema rules this out
        raise DataError(f"unknown source kind {src!r}")
    return check_frame(df, cfg)


def check_frame(df: pd.DataFrame, cfg: PipelineConfig, need_target: bool = True) -> pd.DataFrame:
    """Basic shape checks: rows present, target present and usable, configured columns present."""
    if len(df) == 0:
        raise DataError("the data has no rows")
    needed = [c for c in [cfg.id_column, cfg.timestamp_column] if c]
    if need_target:
        needed.insert(0, cfg.target)
    missing = [c for c in needed if c not in df.columns]
    if missing:
        role = "target" if cfg.target in missing and need_target else "configured"
        raise DataError(f"{role} column(s) {missing} not in the data (columns: {list(df.columns)[:20]})")
    df = df.drop(columns=[c for c in cfg.drop_columns if c in df.columns])
    if need_target:
        y = df[cfg.target]
        if y.isna().all():
            raise DataError(f"target column '{cfg.target}' is entirely empty")
        if cfg.task == "classification" and y.dropna().nunique() < 2:
            raise DataError(
                f"target column '{cfg.target}' has a single class ({y.dropna().iloc[0]!r}); "
                "classification needs at least two"
            )
        if cfg.task == "regression" and not pd.api.types.is_numeric_dtype(y):
            coerced = pd.to_numeric(y, errors="coerce")
            if coerced.notna().sum() < 0.95 * y.notna().sum():
                raise DataError(f"target column '{cfg.target}' is not numeric; a regression target must be")
    return df


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
    newest of them with a timestamp, else a seeded sample, `test_size` of all rows at most.
    """
    from sklearn.model_selection import train_test_split

    if len(df) < 10:
        raise DataError(f"only {len(df)} usable rows; at least 10 are needed to train and hold out")
    n_test = max(1, int(round(len(df) * cfg.test_size)))
    can_stratify = task == "classification" and cfg.stratify
    if new_rows is not None and not np.all(new_rows):
        new_idx = np.flatnonzero(np.asarray(new_rows, dtype=bool))
        n_hold = min(n_test, len(new_idx))
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
                     + ("" if n_hold == n_test else f" (fewer than test_size {cfg.test_size:g} of all rows: "
                                                     "only so many rows are new)"))
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
