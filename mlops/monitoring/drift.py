"""Data and prediction drift: a fast sampled engine (the Evidently report on the same sample is in
mlops.monitoring.report).

`compute_drift` samples each side to `MonitoringConfig.sample_size` rows (seeded, recorded) and
scores every column with numpy. Its methods and default thresholds are Evidently's own, so its
verdicts agree with Evidently's `DataDriftPreset` at large sample sizes (reference > 1000 rows):

| column | method | score | drift when | default threshold |
| --- | --- | --- | --- | --- |
| numeric | `wasserstein` | Wasserstein-1 distance / reference std (std floored at 0.001) | score >= t | 0.1 |
| numeric | `psi` | population stability index | score >= t | 0.1 |
| numeric | `jensenshannon` | Jensen-Shannon distance (natural log) | score >= t | 0.1 |
| numeric | `ks` | two-sample Kolmogorov-Smirnov p-value | p <= t | 0.05 |
| categorical | `jensenshannon` | Jensen-Shannon distance over category shares | score >= t | 0.1 |
| categorical | `psi` | PSI over category shares (empty cells floored as Evidently does) | score >= t | 0.1 |
| categorical | `chisquare` | chi-square goodness-of-fit p-value | p < t | 0.05 |

Numeric PSI/JS bin with Sturges edges over both sides when the reference has more than 20 distinct
values, else per value. A numeric column with at most `discrete_max_unique` (5) distinct values
is compared as a category, as Evidently's automatic choice does.

Sampling error (measured by bench/bench_drift.py on 1M-row frames, 20 seeds, see
docs/benchmarks.md): at the default 20,000 rows per side the normed Wasserstein score varies
between samples with a standard deviation of at most 0.011; an unshifted column scores 0.010-0.015
on samples (the noise floor of two finite samples) against 0.001-0.003 on the full data, and no
single sample was more than 0.033 from the full-data score. With the threshold at 0.1, only a
column scoring within ~0.03 of it can change verdict because of sampling.

Nulls and +-inf are dropped before the test (their share is reported per column, measured on the
full frames). A column empty on either side gets no verdict and is left out of the drift share.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from mlops.core.config import MonitoringConfig
from mlops.core.errors import DataError

Kind = Literal["numeric", "categorical"]
Status = Literal["ok", "empty_reference", "empty_current"]

DEFAULT_THRESHOLDS: dict[str, float] = {
    "wasserstein": 0.1,
    "psi": 0.1,
    "jensenshannon": 0.1,
    "ks": 0.05,
    "chisquare": 0.05,
}
P_VALUE_METHODS = frozenset({"ks", "chisquare"})
_STURGES_MIN_UNIQUE = 20  # above this many reference values, numeric PSI/JS bin by Sturges edges
_MAX_UNSEEN_LISTED = 10


@dataclass
class ColumnDrift:
    """One column's drift verdict."""

    column: str
    kind: Kind
    method: str
    threshold: float
    score: float | None
    drifted: bool
    status: Status = "ok"
    reference_null_share: float = 0.0
    current_null_share: float = 0.0
    reference_values: int = 0
    current_values: int = 0
    unseen_categories: list[str] = field(default_factory=list)
    unseen_count: int = 0
    discrete: bool = False  # a numeric column with few values, compared as a category
    note: str = ""

    @property
    def evaluated(self) -> bool:
        return self.status == "ok"


@dataclass
class DriftResult:
    """Per-column drift plus the dataset verdict, with the sample that produced it."""

    columns: list[ColumnDrift]
    prediction: ColumnDrift | None
    drift_share: float
    drift_share_threshold: float
    dataset_drift: bool
    seed: int
    sample_size: int
    reference_rows: int
    current_rows: int
    reference_sampled_rows: int
    current_sampled_rows: int
    elapsed_seconds: float

    @property
    def drifted_columns(self) -> list[str]:
        return [c.column for c in self.columns if c.drifted]

    @property
    def evaluated_columns(self) -> int:
        return sum(c.evaluated for c in self.columns)

    @property
    def skipped_columns(self) -> list[str]:
        return [c.column for c in self.columns if not c.evaluated]

    def column(self, name: str) -> ColumnDrift:
        for c in self.columns:
            if c.column == name:
                return c
        if self.prediction is not None and self.prediction.column == name:
            return self.prediction
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (non-finite scores become None)."""
        out = asdict(self)
        for entry in [*out["columns"], out["prediction"]]:
            if entry is not None and entry["score"] is not None and not math.isfinite(entry["score"]):
                entry["score"] = None
        out["drifted_columns"] = self.drifted_columns
        out["evaluated_columns"] = self.evaluated_columns
        out["skipped_columns"] = self.skipped_columns
        return out

    def to_markdown(self, policy_threshold: float | None = None) -> str:
        """A summary and a table of drifted columns, for a Prefect markdown artifact. With the retrain policy's
        `policy_threshold` (drift_share_threshold) it says which threshold decides: the policy's, not Evidently's."""
        lines = [f"{len(self.drifted_columns)} of {self.evaluated_columns} columns drifted: drift share "
                 f"**{self.drift_share:.2f}**", ""]
        if policy_threshold is not None:
            side = "at or above" if self.drift_share >= policy_threshold else "below"
            lines += [f"**Decides the retrain**: the retrain policy's `drift_share_threshold` {policy_threshold:g} "
                      f"(this share is {side} it; when labels judged the champion, live quality decides and drift "
                      "is a note: see the decision)", ""]
        verdict = "dataset drift" if self.dataset_drift else "no dataset drift"
        lines += [f"Informational: Evidently's dataset-drift verdict at `monitoring.drift_share` "
                  f"{self.drift_share_threshold:g} says {verdict}; it does not start a retrain."]
        lines += [
            "",
            f"Sample: {self.reference_sampled_rows:,} of {self.reference_rows:,} reference rows, "
            f"{self.current_sampled_rows:,} of {self.current_rows:,} current rows (seed {self.seed}).",
            "",
        ]
        shown = [c for c in self.columns if c.drifted]
        if self.prediction is not None:
            p = self.prediction
            state = "drifted" if p.drifted else "stable" if p.evaluated else p.status.replace("_", " ")
            lines += [f"Prediction `{p.column}`: {state} ({p.method} {_fmt(p.score)}, threshold {p.threshold:g}).", ""]
        if shown:
            lines += [
                "| column | kind | method | score | threshold | null share (ref / cur) | note |",
                "| --- | --- | --- | --- | --- | --- | --- |",
            ]
            for c in sorted(shown, key=_severity, reverse=True):
                lines.append(
                    f"| `{c.column}` | {c.kind} | {c.method} | {_fmt(c.score)} | {c.threshold:g} | "
                    f"{c.reference_null_share:.3f} / {c.current_null_share:.3f} | {c.note} |"
                )
        else:
            lines.append("No column drifted.")
        if self.skipped_columns:
            lines += ["", f"No verdict (empty on one side): {', '.join(f'`{c}`' for c in self.skipped_columns)}."]
        return "\n".join(lines) + "\n"


def _fmt(score: float | None) -> str:
    if score is None:
        return "n/a"
    if not math.isfinite(score):
        return "inf"
    return f"{score:.4g}"


def _severity(c: ColumnDrift) -> float:
    """How far past its threshold a column is, comparable across methods."""
    if c.score is None:
        return 0.0
    if c.method in P_VALUE_METHODS:
        return -math.log10(max(c.score, 1e-300))
    return c.score / c.threshold if c.threshold > 0 else c.score


# ---------------------------------------------------------------------------------------------
# sampling


def _sample_positions(n: int, size: int, rng: np.random.Generator) -> np.ndarray | None:
    if n <= size:
        return None
    idx = rng.choice(n, size=size, replace=False)
    idx.sort()
    return idx


def sample_frames(
    reference: pd.DataFrame, current: pd.DataFrame, columns: list[str], cfg: MonitoringConfig
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Sample each side to cfg.sample_size rows with cfg.seed, keeping `columns`.

    Deterministic: the same frames, columns and config give the same sample, so the Evidently
    report and the fast engine look at identical rows. Each side has its own random stream, so
    the reference sample does not depend on the size of the current frame.
    """
    ref_rng, cur_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(cfg.seed).spawn(2))
    out = []
    for frame, rng in ((reference, ref_rng), (current, cur_rng)):
        idx = _sample_positions(len(frame), cfg.sample_size, rng)
        part = frame if idx is None else frame.take(idx)
        out.append(part[columns].reset_index(drop=True))
    return out[0], out[1]


# ---------------------------------------------------------------------------------------------
# scores


def _js_distance(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon distance (natural log) between two count or share vectors."""
    p = p / p.sum()
    q = q / q.sum()
    m = (p + q) / 2.0
    with np.errstate(divide="ignore", invalid="ignore"):
        left = np.where(p > 0, p * np.log(p / m), 0.0).sum()
        right = np.where(q > 0, q * np.log(q / m), 0.0).sum()
    return float(np.sqrt(max((left + right) / 2.0, 0.0)))


def _fill_empty(shares: np.ndarray) -> np.ndarray:
    """Replace empty cells as Evidently's PSI does: min non-zero share / 1e6, or 1e-4."""
    zero = shares == 0
    if not zero.any():
        return shares
    low = shares[~zero].min()
    return np.where(zero, low / 1e6 if low <= 1e-4 else 1e-4, shares)


def _psi(ref_counts: np.ndarray, cur_counts: np.ndarray) -> float:
    r = _fill_empty(ref_counts / ref_counts.sum())
    c = _fill_empty(cur_counts / cur_counts.sum())
    return float(np.sum((r - c) * np.log(r / c)))


def _chisquare_p(ref_counts: np.ndarray, cur_counts: np.ndarray) -> float:
    """p-value of current counts against reference shares scaled to the current size."""
    from scipy.stats import chi2

    if len(ref_counts) <= 1:
        return 1.0
    expected = ref_counts * (cur_counts.sum() / ref_counts.sum())
    if np.any((expected == 0) & (cur_counts > 0)):
        return 0.0  # a category the reference never saw: infinitely unlikely under it
    keep = expected > 0
    stat = float(np.sum((cur_counts[keep] - expected[keep]) ** 2 / expected[keep]))
    return float(chi2.sf(stat, len(ref_counts) - 1))


def _wasserstein_normed(xs: np.ndarray, ys: np.ndarray, merged: np.ndarray) -> float:
    """W1 between two sorted samples (area between the empirical CDFs) over the reference std."""
    steps = np.diff(merged)
    at = merged[:-1]
    fx = np.searchsorted(xs, at, side="right") / len(xs)
    fy = np.searchsorted(ys, at, side="right") / len(ys)
    w1 = float(np.sum(np.abs(fx - fy) * steps))
    return w1 / max(float(np.std(xs)), 0.001)


def _value_counts(xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    values, inverse = np.unique(np.concatenate([xs, ys]), return_inverse=True)
    k = len(values)
    return np.bincount(inverse[: len(xs)], minlength=k), np.bincount(inverse[len(xs) :], minlength=k)


def _numeric_bins(xs: np.ndarray, ys: np.ndarray, merged: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Counts per bin as Evidently bins numeric PSI/JS: Sturges edges over both sides, or per value."""
    if 1 + np.count_nonzero(np.diff(xs)) > _STURGES_MIN_UNIQUE:
        edges = np.histogram_bin_edges(merged, bins="sturges")
        return np.histogram(xs, edges)[0], np.histogram(ys, edges)[0]
    return _value_counts(xs, ys)


def _score_counts(method: str, ref_counts: np.ndarray, cur_counts: np.ndarray) -> float:
    if method == "jensenshannon":
        return _js_distance(ref_counts.astype(float), cur_counts.astype(float))
    if method == "psi":
        return _psi(ref_counts.astype(float), cur_counts.astype(float))
    if method == "chisquare":
        return _chisquare_p(ref_counts.astype(float), cur_counts.astype(float))
    raise ValueError(f"method '{method}' does not compare category counts")


def _is_drift(method: str, score: float, threshold: float) -> bool:
    if method == "ks":
        return score <= threshold
    if method == "chisquare":
        return score < threshold
    return score >= threshold


def _threshold(method: str, configured: float | None) -> float:
    return DEFAULT_THRESHOLDS[method] if configured is None else float(configured)


# ---------------------------------------------------------------------------------------------
# values


def _numeric_array(s: pd.Series, column: str, side: str) -> np.ndarray:
    """All values as float64 with nulls as NaN; a text column listed as numeric is a data error."""
    if pd.api.types.is_bool_dtype(s) or pd.api.types.is_numeric_dtype(s):
        return s.to_numpy(dtype=float, na_value=np.nan)
    if s.isna().all():
        return np.full(len(s), np.nan)
    raise DataError(
        f"column '{column}' is listed as numeric but the {side} data holds {s.dtype} values; "
        "fix the column type or list it as categorical"
    )


def _is_numeric_series(s: pd.Series) -> bool:
    return not pd.api.types.is_bool_dtype(s) and pd.api.types.is_numeric_dtype(s)


def _null_share(s: pd.Series, numeric: bool, column: str, side: str) -> float:
    if len(s) == 0:
        return 0.0
    if numeric:
        return float(1.0 - np.isfinite(_numeric_array(s, column, side)).mean())
    return float(s.isna().mean())


def _check_columns(frame: pd.DataFrame, columns: list[str], side: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"column(s) {missing} are missing from the {side} data; drift cannot be computed")


# ---------------------------------------------------------------------------------------------
# the engine


def _numeric_drift(
    column: str, ref: pd.Series, cur: pd.Series, cfg: MonitoringConfig
) -> ColumnDrift:
    xs = _numeric_array(ref, column, "reference")
    ys = _numeric_array(cur, column, "current")
    xs = np.sort(xs[np.isfinite(xs)])
    ys = np.sort(ys[np.isfinite(ys)])
    method = cfg.numeric_method
    threshold = _threshold(method, cfg.numeric_threshold)
    out = ColumnDrift(column, "numeric", method, threshold, None, False,
                      reference_values=len(xs), current_values=len(ys))
    if not len(xs) or not len(ys):
        out.status = "empty_reference" if not len(xs) else "empty_current"
        return out
    merged = np.sort(np.concatenate([xs, ys]))
    distinct = 1 + int(np.count_nonzero(np.diff(merged)))
    if distinct <= cfg.discrete_max_unique:
        out.discrete = True
        out.method = cfg.categorical_method
        out.threshold = _threshold(out.method, cfg.categorical_threshold)
        out.note = f"{distinct} distinct values, compared as categories"
        rc, cc = _value_counts(xs, ys)
        out.score = _score_counts(out.method, rc, cc)
    elif method == "wasserstein":
        out.score = _wasserstein_normed(xs, ys, merged)
        if xs[0] == xs[-1]:
            out.note = "constant in reference"
    elif method == "ks":
        from scipy.stats import ks_2samp

        out.score = float(ks_2samp(xs, ys).pvalue)
    else:
        rc, cc = _numeric_bins(xs, ys, merged)
        out.score = _score_counts(method, rc, cc)
    out.drifted = _is_drift(out.method, out.score, out.threshold)
    return out


def _categorical_drift(column: str, ref: pd.Series, cur: pd.Series, cfg: MonitoringConfig) -> ColumnDrift:
    method = cfg.categorical_method
    threshold = _threshold(method, cfg.categorical_threshold)
    both = pd.concat([ref.astype(object), cur.astype(object)], ignore_index=True)
    codes, uniques = pd.factorize(both, use_na_sentinel=True)
    k = len(uniques)
    rcodes, ccodes = codes[: len(ref)], codes[len(ref) :]
    rc = np.bincount(rcodes[rcodes >= 0], minlength=k)
    cc = np.bincount(ccodes[ccodes >= 0], minlength=k)
    out = ColumnDrift(column, "categorical", method, threshold, None, False,
                      reference_values=int(rc.sum()), current_values=int(cc.sum()))
    if not out.reference_values or not out.current_values:
        out.status = "empty_reference" if not out.reference_values else "empty_current"
        return out
    unseen = np.flatnonzero((rc == 0) & (cc > 0))
    if len(unseen):
        order = unseen[np.argsort(-cc[unseen], kind="stable")]
        out.unseen_count = len(unseen)
        out.unseen_categories = [str(uniques[i]) for i in order[:_MAX_UNSEEN_LISTED]]
        out.note = f"{len(unseen)} unseen categor{'y' if len(unseen) == 1 else 'ies'}"
    out.score = _score_counts(method, rc, cc)
    out.drifted = _is_drift(method, out.score, threshold)
    return out


def _column_drift(
    column: str, kind: Kind, ref: pd.Series, cur: pd.Series, cfg: MonitoringConfig
) -> ColumnDrift:
    if kind == "numeric":
        return _numeric_drift(column, ref, cur, cfg)
    return _categorical_drift(column, ref, cur, cfg)


def _prediction_kind(reference: pd.DataFrame, column: str) -> Kind:
    return "numeric" if _is_numeric_series(reference[column]) else "categorical"


def compute_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    numeric: list[str],
    categorical: list[str],
    cfg: MonitoringConfig,
    prediction_column: str | None = None,
) -> DriftResult:
    """Per-column drift of `current` against `reference` on seeded samples, and the dataset verdict.

    The prediction column, when given, gets its own entry and does not count towards the share.
    Raises DataError when a listed column is missing or a numeric column holds text.
    """
    started = time.perf_counter()
    overlap = set(numeric) & set(categorical)
    if overlap:
        raise DataError(f"column(s) {sorted(overlap)} are listed as both numeric and categorical")
    features = [*numeric, *categorical]
    wanted = features + ([prediction_column] if prediction_column else [])
    _check_columns(reference, wanted, "reference")
    _check_columns(current, wanted, "current")
    ref_s, cur_s = sample_frames(reference, current, wanted, cfg)

    kinds: dict[str, Kind] = {c: "numeric" for c in numeric} | {c: "categorical" for c in categorical}
    columns: list[ColumnDrift] = []
    for name in features:
        col = _column_drift(name, kinds[name], ref_s[name], cur_s[name], cfg)
        col.reference_null_share = _null_share(reference[name], kinds[name] == "numeric", name, "reference")
        col.current_null_share = _null_share(current[name], kinds[name] == "numeric", name, "current")
        columns.append(col)

    prediction = None
    if prediction_column:
        kind = _prediction_kind(reference, prediction_column)
        prediction = _column_drift(prediction_column, kind, ref_s[prediction_column], cur_s[prediction_column], cfg)
        prediction.reference_null_share = _null_share(reference[prediction_column], kind == "numeric",
                                                      prediction_column, "reference")
        prediction.current_null_share = _null_share(current[prediction_column], kind == "numeric",
                                                    prediction_column, "current")

    evaluated = [c for c in columns if c.evaluated]
    share = sum(c.drifted for c in evaluated) / len(evaluated) if evaluated else 0.0
    return DriftResult(
        columns=columns,
        prediction=prediction,
        drift_share=share,
        drift_share_threshold=cfg.drift_share,
        dataset_drift=bool(evaluated) and share >= cfg.drift_share,
        seed=cfg.seed,
        sample_size=cfg.sample_size,
        reference_rows=len(reference),
        current_rows=len(current),
        reference_sampled_rows=len(ref_s),
        current_sampled_rows=len(cur_s),
        elapsed_seconds=time.perf_counter() - started,
    )
