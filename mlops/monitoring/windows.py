"""Monitoring, the pure part: which prediction-log rows form the next window, the data-quality check
before any drift verdict, and the state of each check. Live quality once labels arrive lives in
mlops.monitoring.live_quality, the MLflow record of a check in mlops.registry.monitoring, the file a retrain trains on in mlops.monitoring.retraining, rows seen in training in
mlops.core.rowkeys.

Windows: the prediction log is immutable Parquet files that appear atomically (mlops.serving.predictlog).
A window is every file this model's monitor has not checked yet. `WindowStore` (a JSON file under
an exclusive lock, `mlops.core.state.LockedJsonFile`) hands each file to exactly one run: a run *claims*
its files, and *commits* them when done, so two runs at once never check a row twice, and a run that
dies leaves its claim to expire (`claim_minutes`) so no row is skipped. A high-water mark on `logged_at` (the newest row
checked) bounds how far back the log is listed: a file may land up to `lookback_days` late.

Nothing here imports Prefect; the flow (flows/monitor.py) and its tasks (tasks/monitoring.py,
tasks/drift.py) are thin shells over these functions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from mlops.core.config import _deep_merge, load_config
from mlops.core.contract import DataContract
from mlops.core.data import read_table
from mlops.core.errors import DataError
from mlops.core.state import LockedJsonFile
from mlops.core.tabular import ReadOptions
from mlops.core.validation import validate_batch
from mlops.serving.predictlog import HASHED_META, list_log_files

LOG_SOURCE = "prediction_log"
_WINDOW_HISTORY = 50


def utc_now() -> datetime:
    return datetime.now(UTC)


# ---------------------------------------------------------------------------------------------
# window tracking


@dataclass
class Claim:
    """The log files one monitor run took, and the mark it started from."""

    run_id: str
    window_id: str
    files: list[str]
    high_water: str | None  # newest logged_at checked before this window (ISO, UTC)
    listed_since: str | None  # the log was listed from this day on


class WindowStore:
    """Per-model window state in one JSON file; every read-modify-write holds an exclusive lock.

    Layout: {"models": {name: {"checked": {file: iso}, "claims": {file: {"run", "expires"}},
    "high_water": iso, "corrupt": {file: iso}, "windows": [...]}}}; file paths are relative to the
    log folder.
    """

    def __init__(self, path: str | Path, timeout_seconds: float = 30.0) -> None:
        self.file: LockedJsonFile[dict[str, Any]] = LockedJsonFile(
            path, "monitor state", lambda: {"version": 1, "models": {}}, parse=_parse_state,
            fix="move it aside to check the whole prediction log again", holder="monitor run",
            timeout_seconds=timeout_seconds)
        self.path = self.file.path

    @staticmethod
    def _model(state: dict[str, Any], name: str) -> dict[str, Any]:
        m = state["models"].setdefault(name, {})
        for key, empty in (("checked", {}), ("claims", {}), ("corrupt", {}), ("windows", [])):
            m.setdefault(key, empty)
        m.setdefault("high_water", None)
        return m

    def model_state(self, name: str) -> dict[str, Any]:
        return self._model(self.file.read(), name)

    def claim(self, name: str, log_dir: Path, run_id: str, now: datetime, lookback_days: float,
              claim_minutes: float) -> Claim:
        """Take every log file this model has not checked and nobody else holds (expired claims are free)."""
        now = now.astimezone(UTC)
        with self.file.transaction() as tx:
            state = tx.data
            m = self._model(state, name)
            m["claims"] = {f: c for f, c in m["claims"].items() if datetime.fromisoformat(c["expires"]) > now}
            since = None
            if m["high_water"]:
                since = datetime.fromisoformat(m["high_water"]) - timedelta(days=lookback_days)
            files = [p.relative_to(log_dir).as_posix() for p in list_log_files(log_dir, since=since)]
            mine = [f for f in files if f not in m["checked"] and f not in m["claims"] and f not in m["corrupt"]]
            expires = (now + timedelta(minutes=claim_minutes)).isoformat()
            for f in mine:
                m["claims"][f] = {"run": run_id, "expires": expires}
            window_id = f"{now.strftime('%Y%m%dT%H%M%S')}-{run_id[:8]}"
            return Claim(run_id, window_id, mine, m["high_water"], None if since is None else since.isoformat())

    def commit(self, name: str, claim: Claim, now: datetime, *, rows: int, newest: datetime | None,
               corrupt: list[str], status: str, lookback_days: float) -> None:
        """Mark the claimed files checked (corrupt ones as corrupt), move the high-water mark, prune."""
        now = now.astimezone(UTC)
        with self.file.transaction() as tx:
            state = tx.data
            m = self._model(state, name)
            for f in claim.files:
                m["claims"].pop(f, None)
                if f in corrupt:
                    m["corrupt"][f] = now.isoformat()
                else:
                    m["checked"][f] = now.isoformat()
            if newest is not None:
                newest = newest.astimezone(UTC)
                if m["high_water"] is None or newest > datetime.fromisoformat(m["high_water"]):
                    m["high_water"] = newest.isoformat()
            if m["high_water"]:
                cutoff = (datetime.fromisoformat(m["high_water"]) - timedelta(days=lookback_days + 1)).date()
                for key in ("checked", "corrupt"):
                    m[key] = {f: at for f, at in m[key].items() if _partition_day(f) is None or _partition_day(f) >= cutoff}
            m["windows"].append({"window_id": claim.window_id, "run_id": claim.run_id, "at": now.isoformat(),
                                 "files": len(claim.files), "rows": rows, "corrupt_files": len(corrupt),
                                 "status": status})
            del m["windows"][:-_WINDOW_HISTORY]

    def release(self, name: str, claim: Claim) -> None:
        """Give the claimed files back (a run that failed); the next run checks them."""
        with self.file.transaction() as tx:
            state = tx.data
            m = self._model(state, name)
            for f in claim.files:
                if m["claims"].get(f, {}).get("run") == claim.run_id:
                    m["claims"].pop(f)

    def record(self, name: str, entry: dict[str, Any]) -> None:
        """Note a check that did not read the log (a file given by hand), for the window history."""
        with self.file.transaction() as tx:
            state = tx.data
            m = self._model(state, name)
            m["windows"].append(entry)
            del m["windows"][:-_WINDOW_HISTORY]


def _parse_state(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict) or not isinstance(raw.get("models"), dict):
        raise ValueError("no 'models' mapping")
    return raw


def _partition_day(rel: str) -> Any:
    part = rel.split("/", 1)[0]
    if not part.startswith("date="):
        return None
    try:
        return pd.Timestamp(part.removeprefix("date=")).date()
    except ValueError:
        return None


@dataclass
class Window:
    """The rows one monitor run checks, where they came from and what could not be read."""

    frame: pd.DataFrame
    source: str
    files: list[str] = field(default_factory=list)
    corrupt_files: list[str] = field(default_factory=list)
    other_model_rows: int = 0
    claim: Claim | None = None

    @property
    def rows(self) -> int:
        return len(self.frame)

    def span(self) -> tuple[str | None, str | None]:
        if "logged_at" not in self.frame.columns or not len(self.frame):
            return None, None
        ts = self.frame["logged_at"]
        return str(ts.min()), str(ts.max())

    def newest(self) -> datetime | None:
        if "logged_at" not in self.frame.columns or not len(self.frame):
            return None
        return pd.Timestamp(self.frame["logged_at"].max()).to_pydatetime()

    def describe(self) -> dict[str, Any]:
        first, last = self.span()
        return {"source": self.source, "rows": self.rows, "files": len(self.files),
                "corrupt_files": list(self.corrupt_files), "other_model_rows": self.other_model_rows,
                "first_logged_at": first, "last_logged_at": last,
                "window_id": self.claim.window_id if self.claim else None}


def restore_input_names(df: pd.DataFrame) -> pd.DataFrame:
    """Inputs the log stored as `input.<name>` (a clash with a log column) get their own name back."""
    renames = {c: c.removeprefix("input.") for c in df.columns
               if isinstance(c, str) and c.startswith("input.") and c.removeprefix("input.") not in df.columns}
    return df.rename(columns=renames) if renames else df


def read_log_files(log_dir: Path, files: list[str], model_name: str | None) -> tuple[pd.DataFrame, list[str], int]:
    """Rows of `model_name` (None: every model) from the given log files; an unreadable file is skipped and listed.

    Returns the rows (oldest first), the unreadable files and how many rows belonged to other models.
    """
    import pyarrow.parquet as pq

    frames, corrupt, hashed, others = [], [], set(), 0
    for rel in files:
        try:
            table = pq.read_table(log_dir / rel)
        except Exception:  # noqa: BLE001 - pyarrow raises many types for a truncated or foreign file
            corrupt.append(rel)
            continue
        meta = table.schema.metadata or {}
        if HASHED_META in meta:
            hashed.update(json.loads(meta[HASHED_META]))
        df = table.to_pandas()
        if model_name is not None and "model_name" in df.columns:
            keep = df["model_name"].astype(str) == model_name
            others += int((~keep).sum())
            df = df.loc[keep]
        if len(df):
            frames.append(df)
    if frames:
        out = pd.concat(frames, ignore_index=True, sort=False)
        order = [c for c in ("logged_at", "request_id", "request_row") if c in out.columns]
        out = out.sort_values(order, kind="stable").reset_index(drop=True) if order else out
    else:
        out = pd.DataFrame()
    out = restore_input_names(out)
    out.attrs["hashed_columns"] = sorted(hashed)
    out.attrs["corrupt_files"] = corrupt
    return out, corrupt, others


def read_current(path: str | Path, read: ReadOptions | None = None) -> Window:
    """A file or folder given by hand: a prediction-log folder (date=... partitions) or CSV/Parquet files,
    read as training reads them (`read`: the config's ReadOptions; default: the default config's).

    Unreadable Parquet files in a folder are skipped and listed, as in the log.
    """
    read = read or ReadOptions()

    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: current data not found (give a CSV/Parquet file or a folder of them)")
    if p.is_dir() and any(p.glob("date=*")):
        files = [f.relative_to(p).as_posix() for f in list_log_files(p)]
        frame, corrupt, _ = read_log_files(p, files, None)
        return Window(frame, str(p), files, corrupt)
    if p.is_dir():
        files = sorted([*p.glob("*.parquet"), *p.glob("*.csv")])
        if not files:
            raise DataError(f"{p}: folder holds no .csv or .parquet files")
        frames, corrupt = [], []
        for f in files:
            try:
                frames.append(read_table(f, "auto", read.delimiter, list(read.na_values)))
            except DataError:
                corrupt.append(f.name)
        frame = pd.concat(frames, ignore_index=True, sort=False) if frames else pd.DataFrame()
        return Window(frame, str(p), [f.name for f in files], corrupt)
    try:
        return Window(read_table(p, "auto", read.delimiter, list(read.na_values)), str(p), [p.name])
    except DataError:
        if p.suffix.lower() in {".parquet", ".pq"}:
            return Window(pd.DataFrame(), str(p), [p.name], [p.name])
        raise


# ---------------------------------------------------------------------------------------------
# columns


def drift_columns(contract: DataContract) -> tuple[list[str], list[str]]:
    """The contract's feature columns by how drift compares them; timestamps and free text are left out."""
    numeric = [c.name for c in contract.columns if c.role == "feature" and c.kind in {"numeric", "integer"}]
    categorical = [c.name for c in contract.columns if c.role == "feature" and c.kind in {"categorical", "boolean"}]
    return numeric, categorical


def prediction_column(reference: pd.DataFrame | None) -> str | None:
    """The output drift is measured on: the positive-class probability when there is one, else the prediction."""
    if reference is None:
        return None
    for name in ("prediction_proba", "prediction"):
        if name in reference.columns:
            return name
    return None


def add_predictions(frame: pd.DataFrame, model: Any, task: str, columns: list[str]) -> pd.DataFrame:
    """The frame with the model's `prediction` (and `prediction_proba` for a binary classifier), as the
    reference sample holds them."""
    out = frame.copy()
    X = out[[c for c in columns if c in out.columns]]
    out["prediction"] = np.asarray(model.predict(X))
    if task == "classification" and hasattr(model, "predict_proba"):
        proba = np.asarray(model.predict_proba(X))
        if proba.shape[1] == 2:
            out["prediction_proba"] = proba[:, 1]
    return out


@dataclass
class DriftInputs:
    """What drift compares: the champion's reference sample and the window (with the champion's own outputs),
    on the contract's columns the reference holds. No reference: no drift verdict."""

    current: pd.DataFrame
    reference: pd.DataFrame | None
    numeric: list[str] = field(default_factory=list)
    categorical: list[str] = field(default_factory=list)
    prediction_column: str | None = None
    rescored: bool = False


def drift_inputs(current: pd.DataFrame, reference: pd.DataFrame | None, contract: DataContract, model: Any,
                 version: str) -> DriftInputs:
    """The window rescored with the champion when its logged outputs are not the champion's own."""
    if reference is None:
        return DriftInputs(current, None)
    numeric, categorical = drift_columns(contract)
    pred_col = prediction_column(reference)
    rescore = needs_rescoring(current, version, pred_col)
    if rescore:
        current = add_predictions(current, model, contract.task, contract.input_columns)
    return DriftInputs(current, reference, [c for c in numeric if c in reference.columns],
                       [c for c in categorical if c in reference.columns], pred_col, rescore)


def needs_rescoring(frame: pd.DataFrame, version: str, pred_col: str | None) -> bool:
    """True unless every row carries the champion's own logged output."""
    if pred_col is None:
        return False
    if pred_col not in frame.columns or frame[pred_col].isna().any():
        return True
    if "model_version" not in frame.columns:
        return True
    return bool((frame["model_version"].astype(str) != str(version)).any())


# ---------------------------------------------------------------------------------------------
# data quality


@dataclass
class QualityReport:
    """The data-quality verdict on a window: structural failures and user-rule violations stop any drift
    verdict; values outside the champion's observed range or categories are counted (`outside_observed`,
    rows per column), kept for drift, and never fail the window."""

    passed: bool
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    rows_checked: int = 0
    rows_quarantined: int = 0
    good: pd.DataFrame | None = None
    outside_observed: dict[str, int] = field(default_factory=dict)
    rows_outside_observed: int = 0

    @property
    def quarantine_fraction(self) -> float:
        return self.rows_quarantined / self.rows_checked if self.rows_checked else 0.0

    @property
    def outside_observed_fraction(self) -> float:
        return self.rows_outside_observed / self.rows_checked if self.rows_checked else 0.0

    @property
    def reason(self) -> str:
        return "; ".join(self.failures)

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "failures": self.failures, "notes": self.notes,
                "rows_checked": self.rows_checked, "rows_quarantined": self.rows_quarantined,
                "quarantine_fraction": round(self.quarantine_fraction, 6),
                "rows_outside_observed": self.rows_outside_observed,
                "outside_observed_fraction": round(self.outside_observed_fraction, 6),
                "outside_observed": dict(self.outside_observed)}

    def to_markdown(self) -> str:
        head = "Data quality: **passed**" if self.passed else "Data quality: **FAILED** (no drift verdict, no retrain)"
        lines = [head, "",
                 f"{self.rows_checked:,} rows checked, {self.rows_quarantined:,} break a row-level rule "
                 f"({self.quarantine_fraction:.1%}), {self.rows_outside_observed:,} hold values outside the "
                 f"training range ({self.outside_observed_fraction:.1%}; drift, not a failure)."]
        if self.failures:
            lines += ["", *(f"- {f}" for f in self.failures)]
        if self.notes:
            lines += ["", *(f"- note: {n}" for n in self.notes)]
        return "\n".join(lines) + "\n"


def monitoring_contract(contract: DataContract, columns: list[str]) -> tuple[DataContract, list[str]]:
    """The champion's contract as a window is checked against it: no target; no id column when the
    log does not hold it (it is dropped when logged as a sensitive column)."""
    c = contract.without_target()
    notes = []
    if c.id_column and c.id_column not in columns:
        notes.append(f"id column '{c.id_column}' is not in the window (dropped as sensitive when logged?); not checked")
        c = replace(c, columns=[s for s in c.columns if s.name != c.id_column],
                    expectations=[e for e in c.expectations if e.get("column") != c.id_column])
    return c, notes


def structural_problems(frame: pd.DataFrame, contract: DataContract) -> list[str]:
    """Every structural problem at once: missing columns, type changes, null bursts."""
    problems: list[str] = []
    missing = [s.name for s in contract.columns if s.name not in frame.columns]
    if missing:
        problems.append(f"missing column(s) {missing}")
    for spec in contract.columns:
        if spec.name not in frame.columns:
            continue
        s = frame[spec.name]
        present = int(s.notna().sum())
        if spec.kind in {"numeric", "integer"} and present and not (
            pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s)
        ):
            bad = pd.to_numeric(s, errors="coerce").isna() & s.notna()
            if bad.sum() > 0.5 * present:
                example = str(s[bad].iloc[0])[:30]
                problems.append(f"type change: column '{spec.name}' should be numeric but holds {s.dtype} values "
                                f"(e.g. {example!r})")
        elif spec.kind == "datetime" and present and not pd.api.types.is_datetime64_any_dtype(s):
            parsed = pd.to_datetime(s, errors="coerce", format="mixed")
            if (parsed.isna() & s.notna()).sum() > 0.5 * present:
                problems.append(f"type change: column '{spec.name}' should hold timestamps but holds {s.dtype} values")
        elif spec.kind == "categorical" and spec.allowed and present and pd.api.types.is_numeric_dtype(s):
            numeric_categories = all(_is_number(v) for v in spec.allowed)
            if not numeric_categories:
                problems.append(f"type change: column '{spec.name}' should hold categories "
                                f"({', '.join(spec.allowed[:4])}, ...) but holds {s.dtype} numbers")
        null_share = float(s.isna().mean()) if len(s) else 0.0
        if spec.max_null_fraction < 1.0 and null_share > spec.max_null_fraction:
            problems.append(f"null burst: column '{spec.name}' is {null_share:.1%} empty, the contract allows "
                            f"{spec.max_null_fraction:.1%}")
    return problems


def _is_number(v: Any) -> bool:
    try:
        float(v)
        return True
    except (TypeError, ValueError):
        return False


def check_quality(frame: pd.DataFrame, contract: DataContract, max_quarantine_fraction: float) -> QualityReport:
    """Structural check first (all problems listed), then the Great Expectations contract check.

    A structural problem, a DataError from the contract check, or more rows breaking the user's rules
    (or holding unparseable values) than training would accept all fail the window; the good rows are
    kept for drift, including those outside the champion's observed ranges (counted, a drift signal).
    """
    if not len(frame):
        return QualityReport(False, ["the window has no rows"])
    checked, notes = monitoring_contract(contract, list(frame.columns))
    problems = structural_problems(frame, checked)
    if problems:
        return QualityReport(False, problems, notes, rows_checked=len(frame))
    try:
        outcome = validate_batch(frame, checked, need_target=False, outside_observed="keep")
    except DataError as exc:
        return QualityReport(False, [str(exc)], notes, rows_checked=len(frame))
    report = QualityReport(True, [], notes, outcome.checked, len(outcome.quarantined), outcome.good,
                           outcome.outside_observed, outcome.rows_outside_observed)
    if report.rows_outside_observed:
        report.notes.append(f"{report.rows_outside_observed} row(s) hold values outside the champion's training "
                            f"range ({', '.join(f'{c} {n}' for c, n in report.outside_observed.items())}): "
                            "a drift signal, kept for drift")
    if report.quarantine_fraction > max_quarantine_fraction:
        report.passed = False
        reasons = outcome.quarantined["_quarantine_reasons"].str.split("; ").explode().value_counts()
        top = ", ".join(f"{r} ({n})" for r, n in reasons.head(3).items())
        report.failures.append(f"{report.rows_quarantined} of {report.rows_checked} rows "
                               f"({report.quarantine_fraction:.1%}) break the contract, above the "
                               f"{max_quarantine_fraction:.1%} training accepts: {top}")
    elif report.rows_quarantined:
        report.notes.append(f"{report.rows_quarantined} row(s) break a row-level rule and are left out of drift")
    if report.good is not None:
        report.good.attrs = dict(frame.attrs)
    return report


# ---------------------------------------------------------------------------------------------
# the record


def write_derived_config(config_path: str | Path, overrides: dict[str, Any], out: Path) -> Path:
    """A copy of a config with overrides applied (validated), for runs that change a few settings."""
    load_config(config_path, overrides=overrides)  # fails here, naming the field, if an override is wrong
    src = Path(config_path)
    raw = yaml.safe_load(src.read_text(encoding="utf-8"))
    raw = _deep_merge(raw, overrides)
    s = raw.get("source")
    if isinstance(s, dict) and s.get("kind") == "file" and "path" in s:
        p = Path(str(s["path"]))
        if not p.is_absolute():
            s["path"] = str((src.parent / p) if (src.parent / p).exists() else p.resolve())
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return out
