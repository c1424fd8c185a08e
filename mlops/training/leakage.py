"""The leakage check: signs that a feature is the target in disguise, or a row identifier.

Three signs, each naming the columns so the user knows where to look:
(a) a holdout score at or near perfect (roc_auc, accuracy, f1 or r2 >= leakage.near_perfect, on at
    least leakage.min_holdout_rows rows), with the columns the model leans on most (permutation drop);
(b) one column that alone predicts the target almost perfectly (>= leakage.single_feature, on the
    training rows and on the holdout alike): the roc_auc of its raw values or of a per-value target
    rate for classification, the r2 of a one-column fit or a per-value mean for regression;
(c) an identifier-like feature: unique per row, and in row order or consecutive integers.
Columns in gate.allow_leakage are accepted knowingly and the verdict says so. Cheap: a few vectorised
passes per column, and a permutation pass only when a score is already near perfect.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from mlops.core.config import PipelineConfig
from mlops.training.evaluation import _auc_binary, metric_value, predict
from mlops.training.gate import Check, fmt

NEAR_PERFECT_METRICS = ("roc_auc", "accuracy", "f1", "r2")
MAX_BINS = 50  # quantile bins for a numeric column's per-value target rate or mean
MIN_ROWS_PER_BIN = 20
MAX_ROWS = 50_000  # single-column scores on seeded samples of at most this many training and holdout rows
MIN_IDENTIFIER_ROWS = 50
SMOOTHING = 1.0  # rows' worth of the overall rate mixed into each per-value rate


@dataclass
class Finding:
    """One sign of leakage: what was seen, and the columns it points at."""

    kind: str
    columns: list[str]
    text: str


@dataclass
class ColumnScore:
    """How well one column alone predicts the target: on training rows (cross-fitted) and on the holdout."""

    column: str
    metric: str
    train: float
    holdout: float
    how: str

    @property
    def score(self) -> float:
        return min(self.train, self.holdout)


@dataclass
class LeakageReport:
    findings: list[Finding] = field(default_factory=list)
    scores: list[ColumnScore] = field(default_factory=list)
    best_metric: tuple[str, float] | None = None
    seconds: float = 0.0


# ---- which columns the model uses ------------------------------------------------------------------


def used_columns(model: Any, frame: pd.DataFrame, target: str, contract: Any = None) -> list[str]:
    """Input columns the fitted pipeline's feature step reads; else the contract's features; else all but the target."""
    steps = getattr(model, "named_steps", None) or {}
    ct = steps.get("features") if hasattr(steps, "get") else None
    fitted = getattr(ct, "transformers_", None)
    if fitted is not None:
        names = list(getattr(ct, "feature_names_in_", frame.columns))
        cols: list[str] = []
        for name, trans, sel in fitted:
            if name == "remainder" or (isinstance(trans, str) and trans == "drop"):
                continue
            for c in np.atleast_1d(sel).tolist():
                c = names[c] if isinstance(c, int) and not isinstance(c, bool) else c
                if c in frame.columns and c != target and c not in cols:
                    cols.append(str(c))
        return cols
    if contract is not None:
        return [c.name for c in contract.columns if c.role == "feature" and c.name in frame.columns]
    return [str(c) for c in frame.columns if c != target]


def _kind(s: pd.Series, declared: str | None) -> str:
    if declared == "datetime" or pd.api.types.is_datetime64_any_dtype(s):
        return "datetime"
    if pd.api.types.is_bool_dtype(s):
        return "categorical"
    if pd.api.types.is_numeric_dtype(s) or declared in {"numeric", "integer"}:
        return "numeric"
    return "categorical"


def _as_float(s: pd.Series) -> np.ndarray:
    if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
        return s.to_numpy(dtype=float, na_value=np.nan)
    return pd.to_numeric(s, errors="coerce").to_numpy(dtype=float, na_value=np.nan)


# ---- (c) identifier-like columns ------------------------------------------------------------------


def identifier_reason(train: pd.Series, test: pd.Series) -> str | None:
    """Why a numeric column looks like a row identifier (unique per row, and in row order or a run of
    consecutive integers), or None."""
    both = np.concatenate([_as_float(train), _as_float(test)])
    n = len(both)
    vals = both[np.isfinite(both)]
    if n < MIN_IDENTIFIER_ROWS or len(vals) < 0.99 * n or len(np.unique(vals)) != len(vals):
        return None
    tr = _as_float(train)
    tr = tr[np.isfinite(tr)]
    if len(tr) >= MIN_IDENTIFIER_ROWS:
        d = np.diff(tr)
        if np.all(d > 0) or np.all(d < 0):
            return "unique per row and in row order"
    if np.all(vals == np.floor(vals)) and vals.max() - vals.min() + 1 <= 1.5 * len(vals):
        return "unique per row, a run of consecutive integers (a row number)"
    return None


# ---- (b) single-column scores ---------------------------------------------------------------------


def _auc(y: np.ndarray, s: np.ndarray) -> float:
    return _auc_binary(y.astype(int), s)


def _score(task: str, Y: np.ndarray, pred: np.ndarray) -> float:
    """roc_auc (binary, or mean one-vs-rest over classes) for classification, r2 for regression."""
    if task == "regression":
        y, p = Y[:, 0], pred[:, 0]
        sst = float(np.sum((y - y.mean()) ** 2))
        return 1.0 - float(np.sum((y - p) ** 2)) / sst if sst > 0 else float("nan")
    aucs = [_auc(Y[:, k], pred[:, k]) for k in range(Y.shape[1])]
    aucs = [a for a in aucs if np.isfinite(a)]
    return float(np.mean(aucs)) if aucs else float("nan")


def _codes(train: pd.Series, test: pd.Series, kind: str) -> tuple[np.ndarray, np.ndarray, int]:
    """Group codes for a column: quantile bins (numeric) or values (categorical); missing is a group,
    a holdout value unseen in training gets the last code, which no training row has."""
    if kind == "numeric":
        xtr, xte = _as_float(train), _as_float(test)
        finite = xtr[np.isfinite(xtr)]
        bins = int(min(MAX_BINS, max(2, len(finite) // MIN_ROWS_PER_BIN)))
        edges = np.unique(np.quantile(finite, np.linspace(0, 1, bins + 1)[1:-1])) if len(finite) else np.array([])

        def code(x: np.ndarray) -> np.ndarray:
            c = np.searchsorted(edges, x, side="right")
            c[~np.isfinite(x)] = len(edges) + 1
            return c

        return code(xtr), code(xte), len(edges) + 3
    tr = train.astype(object).where(train.notna(), "<null>").astype(str)
    te = test.astype(object).where(test.notna(), "<null>").astype(str)
    cats = pd.Index(pd.unique(tr))
    ctr = cats.get_indexer(tr)
    cte = cats.get_indexer(te)
    cte[cte < 0] = len(cats)
    return ctr, cte, len(cats) + 1


def _group_means(codes: np.ndarray, Y: np.ndarray, n_groups: int, prior: np.ndarray) -> np.ndarray:
    counts = np.bincount(codes, minlength=n_groups).astype(float)
    sums = np.column_stack([np.bincount(codes, weights=Y[:, k], minlength=n_groups) for k in range(Y.shape[1])])
    return (sums + SMOOTHING * prior) / (counts + SMOOTHING)[:, None]


def _grouped_score(task: str, ctr: np.ndarray, cte: np.ndarray, n: int, Ytr: np.ndarray, Yte: np.ndarray,
                   rng: np.random.Generator) -> tuple[float, float]:
    """Per-group target rate (or mean): cross-fitted on two halves of the training rows, fitted on all of
    them for the holdout; in-sample rates would flatter a column with many rare values."""
    prior = Ytr.mean(axis=0)
    half = rng.permutation(len(ctr)) < len(ctr) // 2
    cross = np.empty_like(Ytr, dtype=float)
    for fit_rows in (half, ~half):
        cross[~fit_rows] = _group_means(ctr[fit_rows], Ytr[fit_rows], n, prior)[ctr[~fit_rows]]
    full = _group_means(ctr, Ytr, n, prior)
    return _score(task, Ytr, cross), _score(task, Yte, full[cte])


def _raw_score(task: str, train: pd.Series, test: pd.Series, Ytr: np.ndarray, Yte: np.ndarray) -> tuple[float, float]:
    """The raw values as a score (binary: roc_auc in the training rows' direction) or a one-column
    linear fit (regression: r2)."""
    xtr, xte = _as_float(train), _as_float(test)
    med = np.nanmedian(xtr) if np.isfinite(xtr).any() else 0.0
    xtr, xte = np.where(np.isfinite(xtr), xtr, med), np.where(np.isfinite(xte), xte, med)
    if task == "regression":
        y = Ytr[:, 0]
        var = float(np.var(xtr))
        slope = float(np.mean((xtr - xtr.mean()) * (y - y.mean())) / var) if var > 0 else 0.0
        icpt = float(y.mean() - slope * xtr.mean())
        return (_score(task, Ytr, (icpt + slope * xtr)[:, None]), _score(task, Yte, (icpt + slope * xte)[:, None]))
    a = _auc(Ytr[:, 0], xtr)
    sign = 1.0 if not np.isfinite(a) or a >= 0.5 else -1.0
    return max(a, 1 - a), _auc(Yte[:, 0], sign * xte)


def _targets(task: str, ytr: pd.Series, yte: pd.Series, positive: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Target matrices: the value (regression), a positive-class indicator (binary) or one-hot (multi-class);
    the third array keeps the holdout rows whose label was seen in training."""
    if task == "regression":
        a, b = _as_float(ytr), _as_float(yte)
        return a[:, None], b[:, None], np.isfinite(b)
    labels = pd.Index(pd.unique(ytr.dropna()))
    if len(labels) == 2:
        pos = positive if positive is not None and positive in set(labels) else sorted(labels)[-1]
        return ((ytr == pos).to_numpy(float)[:, None], (yte == pos).to_numpy(float)[:, None],
                yte.isin(labels).to_numpy())
    itr, ite = labels.get_indexer(ytr), labels.get_indexer(yte)
    eye = np.eye(len(labels))
    return eye[np.maximum(itr, 0)], eye[np.maximum(ite, 0)], ite >= 0


def single_column_scores(train: pd.DataFrame, test: pd.DataFrame, columns: list[str], target: str, task: str,
                         positive: Any = None, contract: Any = None, seed: int = 0) -> list[ColumnScore]:
    """How well each column alone predicts the target, best first (datetime columns are skipped)."""
    rng = np.random.default_rng(seed)
    train = train[train[target].notna()]
    if len(train) > MAX_ROWS:
        train = train.sample(MAX_ROWS, random_state=seed)
    if len(test) > MAX_ROWS:
        test = test.sample(MAX_ROWS, random_state=seed)
    Ytr, Yte, keep = _targets(task, train[target], test[target], positive)
    test, Yte = test[keep], Yte[keep]
    if len(train) < 10 or len(test) < 5:
        return []
    declared = {c.name: c.kind for c in contract.columns} if contract is not None else {}
    metric = "r2" if task == "regression" else "roc_auc"
    out: list[ColumnScore] = []
    for col in columns:
        kind = _kind(train[col], declared.get(col))
        if kind == "datetime":
            continue
        ctr, cte, n = _codes(train[col], test[col], kind)
        tries = []
        if kind == "numeric" and Ytr.shape[1] == 1:
            tries.append((*_raw_score(task, train[col], test[col], Ytr, Yte),
                          "one-column linear fit" if task == "regression" else "raw values"))
        tries.append((*_grouped_score(task, ctr, cte, n, Ytr, Yte, rng),
                      "per-value rate" if task != "regression" else "per-value mean"))
        tr, ho, how = max(tries, key=lambda t: min(t[0], t[1]) if np.isfinite(min(t[0], t[1])) else -np.inf)
        if np.isfinite(tr) and np.isfinite(ho):
            out.append(ColumnScore(col, metric, tr, ho, how))
    return sorted(out, key=lambda s: -s.score)


# ---- (a) near-perfect holdout scores --------------------------------------------------------------


def near_perfect_metrics(metrics: dict[str, float], y_test: np.ndarray, bound: float) -> list[tuple[str, float]]:
    """Holdout metrics at or above the bound; accuracy only when always guessing the majority class would not
    reach it too (imbalanced data makes a high accuracy cheap)."""
    out = []
    for m in NEAR_PERFECT_METRICS:
        v = metrics.get(m, float("nan"))
        if not np.isfinite(v) or v < bound:
            continue
        if m == "accuracy":
            _, counts = np.unique(np.asarray(y_test).astype(str), return_counts=True)
            if counts.max() / counts.sum() >= bound:
                continue
        out.append((m, float(v)))
    return out


def leaning_columns(model: Any, test: pd.DataFrame, columns: list[str], target: str, task: str, metric: str,
                    positive: Any = None, seed: int = 0, max_rows: int = 1000) -> list[tuple[str, float]]:
    """Permutation drop of the metric per column on up to max_rows holdout rows, largest first; one predict
    call on every permuted copy stacked, since a pipeline's per-call overhead dominates at this size."""
    rows = test if len(test) <= max_rows else test.sample(max_rows, random_state=seed)
    X, y = rows.drop(columns=[target]).reset_index(drop=True), rows[target].to_numpy()
    rng = np.random.default_rng(seed)
    copies = [X]
    for c in columns:
        Xp = X.copy()
        Xp[c] = rng.permutation(Xp[c].to_numpy())
        copies.append(Xp)
    p = predict(model, pd.concat(copies, ignore_index=True), task, positive)
    n = len(X)
    scores = [metric_value(metric, y, p.subset(np.arange(i * n, (i + 1) * n))) for i in range(len(copies))]
    return sorted(((c, scores[0] - scores[i + 1]) for i, c in enumerate(columns)), key=lambda d: -d[1])


# ---- the check --------------------------------------------------------------------------------------


def _names(cols: list[str]) -> str:
    return ", ".join(f"'{c}'" for c in cols)


def find_leaks(metrics: dict[str, float], model: Any, train: pd.DataFrame | None, test: pd.DataFrame,
               cfg: PipelineConfig, contract: Any = None, positive: Any = None) -> LeakageReport:
    """Look for the three signs of leakage; findings name the columns, none is judged here."""
    t0 = time.perf_counter()
    lk, target, seed = cfg.gate.leakage, cfg.target, cfg.search.seed
    train = train if train is not None else test
    cols = used_columns(model, test, target, contract)
    rep = LeakageReport()
    big_enough = len(test) >= lk.min_holdout_rows

    if lk.check_identifiers:
        declared = {c.name: c.kind for c in contract.columns} if contract is not None else {}
        for c in cols:
            if _kind(train[c], declared.get(c)) == "numeric":
                why = identifier_reason(train[c], test[c])
                if why:
                    rep.findings.append(Finding("identifier", [c], f"'{c}' looks like a row identifier ({why})"))

    rep.scores = single_column_scores(train, test, cols, target, cfg.task, positive, contract, seed)
    single_bound = lk.single_feature if big_enough else max(lk.single_feature, lk.near_perfect)
    for s in rep.scores:
        if s.score >= single_bound:
            rep.findings.append(Finding("single column", [s.column],
                                        f"'{s.column}' alone reaches {s.metric} {fmt(s.holdout)} on the holdout and "
                                        f"{fmt(s.train)} on training rows ({s.how}; >= {single_bound:g})"))

    flagged = near_perfect_metrics(metrics, test[target].to_numpy(), lk.near_perfect)
    if flagged:
        rep.best_metric = flagged[0]
    else:
        shown = [(m, metrics[m]) for m in NEAR_PERFECT_METRICS if np.isfinite(metrics.get(m, float("nan")))]
        rep.best_metric = max(shown, key=lambda mv: mv[1]) if shown else None
    if flagged and big_enough:
        metric, value = flagged[0]
        drops = None
        if model is not None and cols:
            try:
                drops = leaning_columns(model, test, cols, target, cfg.task, metric, positive, seed)
            except (ValueError, TypeError, KeyError):  # a model that cannot score shuffled rows: rank columns alone
                drops = None
        if drops:
            top = drops[0][1]
            lean = [(c, d) for c, d in drops[:3] if d > 0 and d >= 0.25 * top]
            how = "permutation drop"
        else:
            lean = [(s.column, s.score) for s in rep.scores[:3]]
            how = f"alone, {rep.scores[0].metric}" if rep.scores else ""
        named = [c for c, _ in lean]
        leaning = ", ".join(f"'{c}' ({how} {fmt(d)})" for c, d in lean) or "no single column"
        others = ", ".join(f"{m} {fmt(v)}" for m, v in flagged[1:])
        rep.findings.append(Finding(
            "near perfect", named,
            f"holdout {metric} {fmt(value)} is near perfect (>= {lk.near_perfect:g} on {len(test)} rows"
            f"{'; also ' + others if others else ''}); the model leans most on {leaning}"))
    rep.seconds = time.perf_counter() - t0
    return rep


def check_leakage(metrics: dict[str, float], model: Any, train: pd.DataFrame | None, test: pd.DataFrame,
                  cfg: PipelineConfig, contract: Any = None, positive: Any = None) -> Check:
    """The gate's `leakage` check: fails on any finding whose columns are not all in gate.allow_leakage."""
    rep = find_leaks(metrics, model, train, test, cfg, contract, positive)
    allowed = set(cfg.gate.allow_leakage)
    rejected = [f for f in rep.findings if not f.columns or not set(f.columns) <= allowed]
    accepted = [f for f in rep.findings if f.columns and set(f.columns) <= allowed]
    accepted_text = ("; accepted knowingly (gate.allow_leakage lists " + _names(sorted(
        {c for f in accepted for c in f.columns})) + "): " + "; ".join(f.text for f in accepted)) if accepted else ""
    if rejected:
        cols = sorted({c for f in rejected for c in f.columns} - allowed)
        what = f"check {_names(cols)}" if cols else "check the features"
        return Check("leakage", False,
                     "possible target leak: " + "; ".join(f.text for f in rejected)
                     + f". {what.capitalize()}: drop a column that is not known at prediction time, or list it "
                       "in gate.allow_leakage to accept it knowingly" + accepted_text)
    parts = []
    if rep.best_metric is not None:
        m, v = rep.best_metric
        lk = cfg.gate.leakage
        note = (f" < {lk.near_perfect:g}" if v < lk.near_perfect
                else f" on {len(test)} rows, fewer than {lk.min_holdout_rows} to call a leak"
                if len(test) < lk.min_holdout_rows else "")
        parts.append(f"best holdout score {m} {fmt(v)}{note}")
    if rep.scores:
        s = rep.scores[0]
        parts.append(f"strongest single column '{s.column}' {s.metric} {fmt(s.score)}")
    head = "no sign of a leak" if not accepted else "no unaccepted sign of a leak"
    return Check("leakage", True, f"{head}: " + ", ".join(parts) + accepted_text)
