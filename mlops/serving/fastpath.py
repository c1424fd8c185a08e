"""A fast path for small requests: the fitted Pipeline compiled into numpy arrays.

`Pipeline.predict` on a one-row DataFrame spends milliseconds in pandas and input checks. Here the
fitted ColumnTransformer becomes precomputed arrays (imputer statistics, scaler mean/scale, per-column
category lookups, date parts), and HistGradientBoosting's trees become flat node arrays walked for all
trees at once. The arithmetic is the same IEEE operations in the same order as scikit-learn's, so the
results are bit-identical; `compile_fast_path` proves it on probes and the server checks it again on
the version's reference sample before use. Anything not recognised returns None and the server uses
the full Pipeline instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import repeat
from typing import Any

import numpy as np
import pandas as pd

from mlops.core.periods import TIME_AXES, date_part
from mlops.serving.records import CATEGORY, DATETIME, NUMERIC, Batch

UNKNOWN = "\x00unseen-category\x00"
HGB_MAX_ROWS = 64  # above this, scikit-learn's own (OpenMP) tree walk on binned inputs is faster


class Unsupported(Exception):
    """The pipeline has a shape the fast path does not compile; the full Pipeline is used."""


def frame_from_batch(batch: Batch, kinds: dict[str, int]) -> pd.DataFrame:
    """The DataFrame the full Pipeline gets: the dtypes training used (float64, str, datetime64[ns])."""
    data: dict[str, Any] = {}
    for name, values in batch.columns.items():
        kind = kinds[name]
        if kind == NUMERIC:
            data[name] = pd.Series(np.asarray(values, dtype=np.float64))
        elif kind == DATETIME:
            data[name] = pd.Series(values, dtype="datetime64[ns]")
        elif kind == CATEGORY:
            data[name] = pd.Series(values, dtype="str")
        else:
            data[name] = pd.Series(values, dtype=object if any(type(v) is int for v in values) else "str")
    return pd.DataFrame(data)


# ---------------------------------------------------------------------------------------------
# feature blocks


def is_arrow(values: Any) -> bool:
    """A column handed over as Arrow strings (mlops.serving.batchcheck's batches), not a list of values."""
    return type(values).__module__.startswith("pyarrow")


@dataclass
class NumericBlock:
    columns: list[str]
    out: slice
    ops: list[tuple[str, np.ndarray | None, np.ndarray | None]]

    def apply(self, cols: dict[str, list[Any]], n: int, Xt: np.ndarray) -> None:
        if n == 1:
            x = np.array([[cols[c][0] for c in self.columns]], dtype=np.float64)
        else:  # column by column into one contiguous array per column, each step in place
            x = np.empty((len(self.columns), n), dtype=np.float64)
            for k, c in enumerate(self.columns):
                x[k] = cols[c]
            x = x.T
        for op, a, b in self.ops:
            if op == "impute":
                np.copyto(x, a, where=np.isnan(x))
            else:  # scale: X -= mean_; X /= scale_ (StandardScaler.transform)
                if a is not None:
                    x -= a
                if b is not None:
                    x /= b
        Xt[:, self.out] = x


@dataclass
class CategoryBlock:
    """Per-column lookups: output = base + sum of each column's delta (each column owns its outputs)."""

    columns: list[str]
    out: slice
    base: np.ndarray
    lookups: list[dict[str, int]]
    null_codes: list[int]
    unknown_codes: list[int]
    deltas: list[np.ndarray]

    def __post_init__(self) -> None:
        self._with_null: list[dict[Any, int]] = [{**lk, None: nc} for lk, nc in zip(self.lookups, self.null_codes,
                                                                                    strict=True)]
        # for Arrow string columns: the known categories, and the code of each position (the unknown code last)
        self._known = [list(lk) for lk in self.lookups]
        self._code_at = [np.array([*lk.values(), uc], dtype=np.intp) for lk, uc in zip(self.lookups, self.unknown_codes,
                                                                                       strict=True)]
        # for many rows: each column writes only the outputs it owns (base + its delta there, per code), so a
        # row costs one lookup per column instead of a whole-width sum per column
        self._own = [np.flatnonzero(np.any(d != 0, axis=0)) for d in self.deltas]
        self._tables = [self.base[own] + d[:, own] for own, d in zip(self._own, self.deltas, strict=True)]
        self._where = [_as_slice(own) for own in self._own]  # a one-hot column's outputs are side by side
        owned = np.concatenate([np.empty(0, dtype=np.intp), *self._own])
        if len(np.unique(owned)) != len(owned):
            raise Unsupported("categorical outputs shared by two columns")
        self._unowned = np.setdiff1d(np.arange(len(self.base)), owned)  # outputs no value moves: the base

    def _arrow_codes(self, j: int, values: Any) -> np.ndarray:
        """The codes of an Arrow string column in Arrow's own code (no Python string per row): a known category
        its code, an unknown one the unknown code, a null the null code, as the lookup gives them."""
        import pyarrow as pa
        import pyarrow.compute as pc

        where = pc.fill_null(pc.index_in(values, value_set=pa.array(self._known[j], type=pa.string())), -1)
        codes = self._code_at[j][np.asarray(where.to_numpy(zero_copy_only=False), dtype=np.intp)]
        codes[np.asarray(values.is_null().to_numpy(zero_copy_only=False), dtype=bool)] = self.null_codes[j]
        return codes

    def codes(self, j: int, values: Any, n: int) -> np.ndarray:
        """The code of each of `n` values of column `j` (a list of strings and None, or Arrow strings)."""
        if is_arrow(values):
            return self._arrow_codes(j, values)
        # null is a key of the lookup too (categories are strings), so one C-level map
        return np.fromiter(map(self._with_null[j].get, values, repeat(self.unknown_codes[j], n)), dtype=np.intp,
                           count=n)

    def apply(self, cols: dict[str, list[Any]], n: int, Xt: np.ndarray) -> None:
        if n == 1:
            acc = self.base.copy()
            for j, c in enumerate(self.columns):
                v = cols[c][0]
                acc += self.deltas[j][self.null_codes[j] if v is None else self.lookups[j].get(v,
                                                                                               self.unknown_codes[j])]
            Xt[0, self.out] = acc
            return
        block = Xt[:, self.out]
        if len(self._unowned):
            block[:, self._unowned] = self.base[self._unowned]
        for j, c in enumerate(self.columns):
            if len(self._own[j]):
                block[:, self._where[j]] = self._tables[j][self.codes(j, cols[c], n)]


def _as_slice(positions: np.ndarray) -> slice | np.ndarray:
    """Consecutive positions as a slice (a plain strided copy), others as they are."""
    if len(positions) and np.array_equal(positions, np.arange(positions[0], positions[0] + len(positions))):
        return slice(int(positions[0]), int(positions[0]) + len(positions))
    return positions


@dataclass
class DateBlock:
    columns: list[str]
    out: slice
    parts: tuple[tuple[str, ...], ...]  # the fitted parts of each column, in column order
    fill: np.ndarray | None

    def apply(self, cols: dict[str, list[Any]], n: int, Xt: np.ndarray) -> None:
        if n > 1:
            self._apply_columns(cols, n, Xt)
            return
        rows = []
        for i in range(n):
            row: list[float] = []
            for c, parts in zip(self.columns, self.parts, strict=True):
                ts = cols[c][i]
                for p in parts:
                    row.append(math.nan if ts is None else float(_date_part(ts, p)))
            rows.append(row)
        x = np.array(rows, dtype=np.float64).reshape(n, sum(len(p) for p in self.parts))
        if self.fill is not None:
            x = np.where(np.isnan(x), self.fill, x)
        Xt[:, self.out] = x

    def _apply_columns(self, cols: dict[str, list[Any]], n: int, Xt: np.ndarray) -> None:
        """The same parts for many rows at once (pandas' date fields; a null is NaN, as above)."""
        x = np.empty((n, sum(len(p) for p in self.parts)), dtype=np.float64)
        k = 0
        for c, parts in zip(self.columns, self.parts, strict=True):
            times = pd.Series(cols[c], dtype="datetime64[ns]")
            for p in parts:
                x[:, k] = np.asarray(date_part(times, p), dtype=np.float64)
                k += 1
        if self.fill is not None:
            x = np.where(np.isnan(x), self.fill, x)
        Xt[:, self.out] = x


def _date_part(ts: Any, part: str) -> float:
    if part == "dayofweek":
        return int(ts.weekday())
    if part in TIME_AXES:
        return TIME_AXES[part][1](ts)
    if part in {"year", "month", "day", "hour", "minute", "second"}:
        return int(getattr(ts, part))
    raise Unsupported(f"date part {part!r}")


# ---------------------------------------------------------------------------------------------
# estimators


class HGBTrees:
    """All trees of a HistGradientBoosting model as flat node arrays, walked level by level."""

    def __init__(self, est: Any) -> None:
        if getattr(est, "_preprocessor", None) is not None or getattr(est, "is_categorical_", None) is not None:
            raise Unsupported("HistGradientBoosting with native categorical features")
        self.est = est
        self.K = int(est.n_trees_per_iteration_)
        self.baseline = np.asarray(est._baseline_prediction, dtype=np.float64).reshape(-1)
        feats, thrs, mleft, lefts, rights, values, roots = [], [], [], [], [], [], []
        offset = 0
        depth = 0
        for iteration in est._predictors:
            for k in range(self.K):
                nodes = iteration[k].nodes
                if np.any(nodes["is_categorical"]):
                    raise Unsupported("categorical split in a tree")
                n = len(nodes)
                leaf = nodes["is_leaf"].astype(bool)
                own = np.arange(offset, offset + n, dtype=np.intp)
                feats.append(np.where(leaf, 0, nodes["feature_idx"]).astype(np.intp))
                thrs.append(np.where(leaf, np.inf, nodes["num_threshold"]).astype(np.float64))
                mleft.append(np.where(leaf, True, nodes["missing_go_to_left"].astype(bool)))
                lefts.append(np.where(leaf, own, nodes["left"].astype(np.intp) + offset))
                rights.append(np.where(leaf, own, nodes["right"].astype(np.intp) + offset))
                values.append(nodes["value"].astype(np.float64))
                roots.append(offset)
                depth = max(depth, int(nodes["depth"].max()))
                offset += n
        self.feat = np.concatenate(feats)
        self.thr = np.concatenate(thrs)
        self.mleft = np.concatenate(mleft)
        self.left = np.concatenate(lefts)
        self.right = np.concatenate(rights)
        self.value = np.concatenate(values)
        self.roots = np.asarray(roots, dtype=np.intp)
        self.depth = depth

    def raw(self, X: np.ndarray) -> np.ndarray:
        """The raw predictions (n, K): baseline plus every tree's leaf value, summed in tree order.

        Every split of every tree is decided at once (as the Cython walk decides it: NaN follows
        `missing_go_to_left`, else `x <= threshold` goes left), giving each node its next node;
        then all trees step together, `depth` times (leaves point at themselves).
        """
        n = X.shape[0]
        xv = X[:, self.feat]
        with np.errstate(invalid="ignore"):
            go_left = xv <= self.thr
        missing = np.isnan(xv)
        if missing.any():
            go_left = np.where(missing, self.mleft, go_left)
        nxt = np.where(go_left, self.left, self.right)
        if n == 1:
            step = nxt[0]
            idx = self.roots
            for _ in range(self.depth):
                idx = step[idx]
            leaves = self.value[idx][None, :]
        else:
            idx = np.broadcast_to(self.roots, (n, self.roots.shape[0]))
            for _ in range(self.depth):
                idx = np.take_along_axis(nxt, idx, axis=1)
            leaves = self.value[idx]
        out = np.empty((n, self.K), dtype=np.float64)
        for k in range(self.K):
            seq = np.empty((n, leaves.shape[1] // self.K + 1), dtype=np.float64)
            seq[:, 0] = self.baseline[k]
            seq[:, 1:] = leaves[:, k::self.K]
            out[:, k] = np.cumsum(seq, axis=1)[:, -1]  # sequential, as sklearn adds tree after tree
        return out

    def binned_raw(self, X: np.ndarray) -> np.ndarray:
        """The raw predictions (n, K) from scikit-learn's own walk over the inputs' bins.

        `_raw_predict` walks float64 rows; the same trees walked over the model's own uint8 bins
        (`_predict_binned`, the walk fitting uses) read an eighth of the memory, and binning plus that
        walk costs about 20% less CPU than the float walk. It decides every split the same way: a
        value's bin is the number of the feature's bin thresholds below it, so `bin <= bin_threshold`
        exactly when `x <= num_threshold` (which is that bin's threshold), and NaN has the missing bin,
        which follows `missing_go_to_left` in both walks. Leaves are summed from the baseline in tree
        order, as `_raw_predict` sums them, so the outputs are the same bits. Thread counts are the
        current OpenMP limit (the model's binner would use the count it was fitted with).
        """
        from sklearn.ensemble._hist_gradient_boosting._binning import _map_to_bins
        from sklearn.utils._openmp_helpers import _openmp_effective_n_threads

        est = self.est
        mapper = est._bin_mapper
        n_threads = _openmp_effective_n_threads()
        binned = np.empty(X.shape, dtype=np.uint8, order="F")
        _map_to_bins(X, mapper.bin_thresholds_, mapper.is_categorical_, mapper.missing_values_bin_idx_,
                     n_threads, binned)
        raw = np.zeros((X.shape[0], self.K), dtype=np.float64, order="F")
        raw += est._baseline_prediction
        est._predict_iterations(binned, est._predictors, raw, True, n_threads)
        return raw

    def predict(self, X: np.ndarray, classifier: bool) -> tuple[np.ndarray, np.ndarray | None]:
        est = self.est
        # larger batches: scikit-learn's own walk over the bins, once, for both labels and probabilities
        raw = self.binned_raw(X) if X.shape[0] > HGB_MAX_ROWS else self.raw(X)
        if not classifier:
            return est._loss.link.inverse(raw.ravel()), None
        proba = est._loss.predict_proba(raw)
        encoded = (raw.ravel() > 0).astype(int) if raw.shape[1] == 1 else np.argmax(raw, axis=1)
        return est.classes_[encoded], proba


# ---------------------------------------------------------------------------------------------
# the compiled pipeline


class FastPath:
    def __init__(self, blocks: list[Any], width: int, estimator: Any, trees: HGBTrees | None, classifier: bool,
                 order: str = "C") -> None:
        self.blocks = blocks
        self.width = width
        self.estimator = estimator
        self.trees = trees
        self.classifier = classifier
        # the memory layout the ColumnTransformer returns: BLAS-based estimators (linear models) sum in
        # a different order for C and Fortran arrays, so the same layout is needed for the same bits
        self.order = order
        self.argmax_labels = (classifier and type(estimator).__name__ in {"RandomForestClassifier",
                                                                          "ExtraTreesClassifier"}
                              and getattr(estimator, "n_outputs_", 1) == 1)

    @property
    def describe(self) -> str:
        kinds = ", ".join(type(b).__name__.removesuffix("Block").lower() for b in self.blocks)
        est = "tree arrays" if self.trees is not None else type(self.estimator).__name__
        return f"numpy features ({kinds}) -> {est}"

    def features(self, batch: Batch) -> np.ndarray:
        Xt = np.empty((batch.n, self.width), dtype=np.float64, order=self.order)  # type: ignore[call-overload]
        for b in self.blocks:
            b.apply(batch.columns, batch.n, Xt)
        return Xt

    def predict(self, batch: Batch) -> tuple[np.ndarray, np.ndarray | None]:
        Xt = self.features(batch)
        if self.trees is not None:
            return self.trees.predict(Xt, self.classifier)
        est = self.estimator
        if self.argmax_labels:  # a forest's predict is exactly classes_[argmax(predict_proba)]
            proba = est.predict_proba(Xt)
            return est.classes_.take(np.argmax(proba, axis=1), axis=0), proba
        pred = est.predict(Xt)
        proba = est.predict_proba(Xt) if self.classifier and hasattr(est, "predict_proba") else None
        return pred, proba


def _steps(trans: Any) -> list[Any]:
    from sklearn.pipeline import Pipeline

    if isinstance(trans, Pipeline):
        return [s for _, s in trans.steps if s is not None and s != "passthrough"]
    return [trans]


def _numeric_block(trans: Any, columns: list[str], out: slice) -> NumericBlock:
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import StandardScaler

    ops: list[tuple[str, np.ndarray | None, np.ndarray | None]] = []
    if trans == "passthrough":
        return NumericBlock(columns, out, ops)
    for step in _steps(trans):
        if type(step) is SimpleImputer:
            stats = np.asarray(step.statistics_, dtype=np.float64)
            if step.add_indicator or not (isinstance(step.missing_values, float) and math.isnan(step.missing_values)):
                raise Unsupported("imputer with indicator or a missing marker other than NaN")
            if not np.all(np.isfinite(stats)):
                raise Unsupported("imputer that drops an all-missing column")
            ops.append(("impute", stats, None))
        elif type(step) is StandardScaler:
            mean = None if step.mean_ is None or not step.with_mean else np.asarray(step.mean_, dtype=np.float64)
            scale = None if step.scale_ is None or not step.with_std else np.asarray(step.scale_, dtype=np.float64)
            ops.append(("scale", mean, scale))
        else:
            raise Unsupported(f"numeric step {type(step).__name__}")
    return NumericBlock(columns, out, ops)


def _date_block(trans: Any, columns: list[str], out: slice) -> DateBlock:
    # here, not at the top: the model server's app imports this module, and scikit-learn (which
    # mlops.core.features loads) comes with the model it loads, not before it listens
    from sklearn.impute import SimpleImputer

    from mlops.core.features import DateParts

    steps = _steps(trans)
    if not steps or type(steps[0]) is not DateParts:
        raise Unsupported("datetime columns without DateParts")
    parts = tuple(tuple(steps[0].parts_for(c)) for c in columns)
    for p in {q for col in parts for q in col}:
        _date_part(pd.Timestamp("2020-01-01").to_pydatetime(), p)
    fill = None
    for step in steps[1:]:
        if type(step) is not SimpleImputer or step.add_indicator:
            raise Unsupported(f"date step {type(step).__name__}")
        stats = np.asarray(step.statistics_, dtype=np.float64)
        if not np.all(np.isfinite(stats)) or fill is not None:
            raise Unsupported("date imputer shape")
        fill = stats
    return DateBlock(columns, out, parts, fill)


def _category_block(trans: Any, columns: list[str], out: slice, kinds: dict[str, int],
                    allowed: dict[str, list[str]]) -> CategoryBlock:
    """Probe the fitted block with each known value (and null, and an unseen value) per column."""
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder

    steps = _steps(trans)
    encoders = [s for s in steps if type(s) in (OneHotEncoder, OrdinalEncoder)]
    if len(encoders) != 1 or any(type(s) not in (SimpleImputer, OneHotEncoder, OrdinalEncoder) for s in steps):
        raise Unsupported("categorical block other than imputer + one-hot/ordinal encoder")
    enc = encoders[0]
    if getattr(enc, "handle_unknown", "error") == "error":
        raise Unsupported("encoder that raises on unknown categories")
    universes: list[list[str]] = []
    for j, c in enumerate(columns):
        vals = {str(v) for v in enc.categories_[j] if isinstance(v, str)}
        for s in steps:
            if type(s) is SimpleImputer and isinstance(s.statistics_[j], str):
                vals.add(s.statistics_[j])
        vals.update(allowed.get(c) or [])
        vals.discard(UNKNOWN)
        universes.append(sorted(vals))
    base_vals = [u[0] if u else None for u in universes]
    probe_rows: list[list[Any]] = [list(base_vals)]
    for j, u in enumerate(universes):
        for v in [*u, None, UNKNOWN]:
            row = list(base_vals)
            row[j] = v
            probe_rows.append(row)

    def run(rows: list[list[Any]]) -> np.ndarray:
        frame = pd.DataFrame({c: pd.Series([r[j] for r in rows], dtype="str") for j, c in enumerate(columns)})
        res = trans.transform(frame)
        if hasattr(res, "toarray"):
            res = res.toarray()
        return np.asarray(res, dtype=np.float64)

    probed = run(probe_rows)
    if probed.shape[1] != out.stop - out.start:
        raise Unsupported("categorical block width")
    base = probed[0].copy()
    lookups, null_codes, unknown_codes, deltas = [], [], [], []
    r = 1
    for u in universes:
        k = len(u) + 2
        d = probed[r:r + k] - base
        r += k
        lookups.append({v: i for i, v in enumerate(u)})
        null_codes.append(len(u))
        unknown_codes.append(len(u) + 1)
        deltas.append(d)
    block = CategoryBlock(columns, out, base, lookups, null_codes, unknown_codes, deltas)
    # each column must own its outputs: random combinations must add up exactly
    rng = np.random.default_rng(0)
    combos = [[(u + [None, UNKNOWN])[rng.integers(len(u) + 2)] for u in universes] for _ in range(64)]
    expected = run(combos)
    got = np.empty((len(combos), out.stop - out.start))
    full = np.empty((len(combos), out.stop))
    block.apply({c: [row[j] for row in combos] for j, c in enumerate(columns)}, len(combos), full)
    got[:] = full[:, out]
    if not np.array_equal(got, expected):
        raise Unsupported("categorical outputs are not per-column")
    return block


def compile_fast_path(pipeline: Any, kinds: dict[str, int], allowed: dict[str, list[str]],
                      classifier: bool) -> FastPath:
    """Compile a fitted Pipeline(ColumnTransformer 'features', estimator); raise Unsupported otherwise."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

    if not isinstance(pipeline, Pipeline) or len(pipeline.steps) != 2:
        raise Unsupported("not a two-step Pipeline")
    ct, est = pipeline.steps[0][1], pipeline.steps[1][1]
    if not isinstance(ct, ColumnTransformer) or getattr(ct, "sparse_output_", False):
        raise Unsupported("first step is not a dense ColumnTransformer")
    blocks: list[Any] = []
    width = 0
    for name, trans, cols in ct.transformers_:
        if trans == "drop" or cols is None or len(cols) == 0:
            continue
        if not all(isinstance(c, str) for c in cols) or any(c not in kinds for c in cols):
            raise Unsupported(f"transformer '{name}' selects columns by position or outside the contract")
        out = ct.output_indices_[name]
        if out.stop == out.start:
            continue
        width = max(width, out.stop)
        col_kinds = {kinds[c] for c in cols}
        if col_kinds == {NUMERIC}:
            blocks.append(_numeric_block(trans, list(cols), out))
        elif col_kinds == {DATETIME}:
            blocks.append(_date_block(trans, list(cols), out))
        elif col_kinds == {CATEGORY}:
            blocks.append(_category_block(trans, list(cols), out, kinds, allowed))
        else:
            raise Unsupported(f"transformer '{name}' mixes column kinds")
    if not blocks:
        raise Unsupported("no feature blocks")
    trees = None
    if type(est).__name__ in {"HistGradientBoostingClassifier", "HistGradientBoostingRegressor"}:
        trees = HGBTrees(est)
    return FastPath(blocks, width, est, trees, classifier, _layout(ct, kinds))


def _layout(ct: Any, kinds: dict[str, int]) -> str:
    """'F' when the fitted ColumnTransformer hands the estimator Fortran-ordered arrays, else 'C'."""
    probe = {}
    for name, kind in kinds.items():
        probe[name] = [0.0, 1.0, math.nan] if kind == NUMERIC else [None, None, None]
    out = ct.transform(frame_from_batch(Batch(probe, 3), kinds))
    flags = getattr(out, "flags", None)
    return "F" if flags is not None and flags.f_contiguous and not flags.c_contiguous else "C"
