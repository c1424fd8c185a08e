"""Backtest: replay a labelled history window by window, in data time, through the production loop.

The first champion trains on the initial period. Then, for each window: the champion scores every
row (predictions kept), the labels are known, the monitor decides with the production code (data
quality, `drift.compute_drift`, live quality, `MonitorResult.window_summary`, `policy.decide` with
the window's end as the clock, `start_training`/`finish_training` for dedupe and the training slot),
a retrain follows `policy.train_on` (`retraining.build_training_frame`) and the gate (`assessment.judge`)
decides promotion. Baselines in the same run: never retrain, and retrain every window (on all history,
and on the policy's `train_on`) promoting every retrain.

Fast by design: in process, no Prefect task or MLflow run per window, no HTML report, no infra
validation, no registry. Training reuses the pure functions the training flow's tasks wrap (profile,
contract, validation, split, features, tuning, evaluation, gate). Reporting is in backtest_report.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlops.core.config import METRIC_DIRECTION, FileSource, PipelineConfig
from mlops.core.contract import DataContract
from mlops.core.data import check_frame, read_table_collecting, split_frame
from mlops.core.errors import ConfigError, DataError
from mlops.core.features import build_preprocessor
from mlops.core.rowkeys import NEW_ROW_COLUMN, new_row_mask, pop_new_rows
from mlops.core.validation import validate_training_batch
from mlops.monitoring.drift import compute_drift
from mlops.monitoring.live_quality import holdout_slice_metrics, labelled_rows, live_quality
from mlops.monitoring.policy import (
    PolicyState,
    decide,
    finish_training,
    live_baseline,
    start_training,
    with_live_metric,
)
from mlops.monitoring.result import DriftSummary, MonitorResult, WindowInfo
from mlops.monitoring.retraining import build_training_frame, training_rows
from mlops.monitoring.windows import check_quality, drift_inputs
from mlops.training.assessment import evaluate, judge, reference_sample
from mlops.training.evaluation import Predictions, metric_value, predict
from mlops.training.tuning import pick_best, refit_on_all, scorer_for, tune_family

Log = Callable[[str], None]
PERIOD = re.compile(r"^\s*(\d+)\s*(min|[hHdDwWmMyY])\s*$")
UNITS = {"min": "minutes", "h": "hours", "d": "days", "w": "weeks", "m": "months", "y": "years"}
MIN_INITIAL_ROWS = 50  # labelled rows the first champion needs: a holdout, and CV folds with some rows each
ARMS = ("policy", "never", "every_window", "every_window_train_on")


def parse_period(text: str, what: str) -> pd.DateOffset:
    """`3M`, `1M`, `2W`, `14D`, `12H`, `30min`, `1Y` as a calendar offset; anything else is one sentence."""
    m = PERIOD.match(str(text))
    if not m or int(m.group(1)) < 1:
        raise ConfigError(f"{what} '{text}' is not a period; write a positive number and a unit, e.g. 3M (months), "
                          "2W, 14D, 12H or 30min")
    n, unit = int(m.group(1)), m.group(2)
    return pd.DateOffset(**{UNITS[unit if unit == "min" else unit.lower()]: n})


# ---------------------------------------------------------------------------------------------
# the plan: the history ordered by time, the initial period and the windows


@dataclass
class WindowSlice:
    """One replay window: [start, end) in data time and its rows."""

    index: int
    start: pd.Timestamp
    end: pd.Timestamp
    frame: pd.DataFrame

    @property
    def label(self) -> str:
        return f"{self.start:%Y-%m-%d %H:%M} to {self.end:%Y-%m-%d %H:%M}"


@dataclass
class BacktestPlan:
    """The history cut into the initial period and the windows, checked before any training."""

    initial: pd.DataFrame
    windows: list[WindowSlice]
    timestamp_column: str
    initial_period: str
    every: str
    rows: int
    notes: list[str] = field(default_factory=list)


def read_history(path: str | Path, cfg: PipelineConfig) -> tuple[pd.DataFrame, list[str]]:
    """The history file with the config's missing-value markers; malformed CSV rows are left out (noted)."""
    delimiter = cfg.source.delimiter if isinstance(cfg.source, FileSource) else ","
    table = read_table_collecting(path, "auto", delimiter, cfg.na_values)
    notes = [f"{len(table.malformed)} malformed row(s) left out ({table.malformed[0].detail})"] if table.malformed else []
    return table.frame, notes


def plan_backtest(cfg: PipelineConfig, history: pd.DataFrame, initial: str = "3M", every: str = "1M",
                  notes: list[str] | None = None) -> BacktestPlan:
    """Order the history by the config's timestamp column and cut it; every bad input is one DataError sentence."""
    ts = cfg.timestamp_column
    if not ts:
        raise ConfigError("the config has no timestamp_column; a backtest orders the history by it, so name the "
                          "column that holds each row's time")
    if ts not in history.columns:
        raise DataError(f"the history has no timestamp column '{ts}' (the config's timestamp_column), so it cannot "
                        f"be replayed in time order (columns: {[str(c) for c in history.columns][:12]})")
    first, step = parse_period(initial, "--initial"), parse_period(every, "--every")
    notes = list(notes or [])
    times = _as_times(history[ts])
    bad = int(times.isna().sum())
    if bad > 0.05 * len(history):
        raise DataError(f"{bad} of {len(history)} values of timestamp column '{ts}' are not times; fix the column "
                        "or name another timestamp_column")
    if bad:
        notes.append(f"{bad} row(s) without a readable '{ts}' left out")
    frame = history.assign(**{ts: times}).loc[times.notna()].sort_values(ts, kind="stable").reset_index(drop=True)
    frame = check_frame(frame, cfg)
    t0, last = frame[ts].iloc[0], frame[ts].iloc[-1]
    cut = t0.normalize() + first  # windows start at midnight: 3M from 2023-01-01 05:00 ends on 2023-04-01
    initial_rows = frame.loc[frame[ts] < cut]
    labelled = int(initial_rows[cfg.target].notna().sum())
    if labelled < MIN_INITIAL_ROWS:
        raise DataError(f"the initial period ({initial} from {t0:%Y-%m-%d}) holds {labelled} labelled row(s), too few "
                        f"to train the first champion (at least {MIN_INITIAL_ROWS}); give a longer --initial")
    if cut > last:
        raise DataError(f"the history ends ({last:%Y-%m-%d %H:%M}) within the initial period ({initial} from "
                        f"{t0:%Y-%m-%d}), so no window is left to replay; give a shorter --initial or more history")
    windows: list[WindowSlice] = []
    start = cut
    while start <= last:
        end = start + step
        part = frame.loc[(frame[ts] >= start) & (frame[ts] < end)].reset_index(drop=True)
        w = WindowSlice(len(windows) + 1, start, end, part)
        if not len(part):
            raise DataError(f"window {w.index} ({w.label}) has no rows; the history has a gap there, so use a "
                            "longer --every or fill the gap")
        if part[cfg.target].notna().sum() == 0:
            raise DataError(f"window {w.index} ({w.label}) has no labels (target '{cfg.target}' is empty in all "
                            f"{len(part)} rows); a backtest needs each window's labels, so add them or end the "
                            "history before it")
        windows.append(w)
        start = end
    return BacktestPlan(initial_rows.reset_index(drop=True), windows, ts, initial, every, len(frame), notes)


def _as_times(s: pd.Series) -> pd.Series:
    """One datetime dtype whatever the source format (text from CSV, datetimes from Parquet)."""
    if pd.api.types.is_datetime64_any_dtype(s):
        return s
    return pd.to_datetime(s, errors="coerce", format="mixed")


# ---------------------------------------------------------------------------------------------
# training: the flow's stages as pure calls


@dataclass
class Champion:
    """A model in the replay: what the registry would hold for a version."""

    version: int
    model: Any
    family: str
    contract: DataContract
    reference: pd.DataFrame
    metrics: dict[str, float]
    slices: dict[str, Any]
    trained_on: pd.DataFrame  # the frame it was trained from (the `original` of original_plus_new)
    trained_at: pd.Timestamp

    @property
    def tags(self) -> dict[str, str]:
        """The version tags live quality reads (`metric.<name>`), formatted as registration writes them."""
        return {f"metric.{k}": f"{v:.6g}" for k, v in self.metrics.items() if math.isfinite(v)}


@dataclass
class Candidate:
    """A trained challenger and the gate's verdict on it."""

    champion: Champion
    passed: bool
    reasons: list[str]
    seconds: float


def train_candidate(frame: pd.DataFrame, cfg: PipelineConfig, champion: Champion | None, version: int,
                    at: pd.Timestamp, gate: bool = True) -> Candidate:
    """Validate, split, tune, evaluate and (with `gate`) judge, as the training flow does, in process.

    `frame` may carry the new-row marker of a retraining file. The rows are checked for structure and the
    user's rules, and the contract evolves from the kept rows (from the champion's, when there is one).
    """
    started = time.perf_counter()
    df, new_rows = pop_new_rows(frame)
    df = check_frame(df, cfg)
    batch = validate_training_batch(df, champion.contract if champion else None, cfg)
    outcome, contract = batch.outcome, batch.contract
    good = outcome.good
    mask = None if new_rows is None else new_row_mask(good, new_rows, cfg.id_column)
    split = split_frame(good, cfg.target, cfg.task, cfg.split, cfg.timestamp_column, mask)
    X, y = split.train.drop(columns=[cfg.target]), split.train[cfg.target]
    binary = cfg.task == "classification" and y.nunique() == 2
    scoring = scorer_for(cfg.task, cfg.primary_metric, binary, cfg.search.scoring, labels=y,
                         positive_class=cfg.positive_class)
    preprocessor = build_preprocessor(contract, cfg.features)
    best = pick_best([tune_family(spec, preprocessor, X, y, cfg.task, scoring, cfg.search) for spec in cfg.models])
    model = best.best_estimator
    evaluation = evaluate(model, split.test, cfg, None)
    passed, reasons = True, ["promoted without a gate (baseline)"]
    if gate:
        verdict = judge(evaluation, champion.model if champion else None, str(champion.version) if champion else None,
                        split.test, cfg, model=model, train=split.train, contract=contract)
        passed, reasons = verdict.passed, verdict.reasons
    served, trained_on = model, split.train
    if cfg.refit:  # as the training flow registers it: the gated configuration refitted on train + holdout
        served = refit_on_all(model, split.train, split.test, cfg.target)
        trained_on = pd.concat([split.train, split.test], ignore_index=True)
    made = Champion(version, served, best.family, contract, reference_sample(trained_on, served, cfg),
                    evaluation.metrics, holdout_slice_metrics(split.test, evaluation.predictions, cfg), df, at)
    return Candidate(made, passed, reasons, time.perf_counter() - started)


# ---------------------------------------------------------------------------------------------
# scoring and monitoring one window


def score_window(champion: Champion, frame: pd.DataFrame, cfg: PipelineConfig) -> tuple[np.ndarray, float]:
    """The champion's prediction for every row, and its primary metric on the labelled ones."""
    p = predict(champion.model, frame.drop(columns=[cfg.target]), cfg.task, cfg.positive_class)
    known = frame[cfg.target].notna().to_numpy()
    sub = Predictions(p.y_pred[known], None if p.proba is None else p.proba[known], p.classes, p.positive)
    y = frame[cfg.target].to_numpy()[known]
    try:
        value = metric_value(cfg.primary_metric, y, sub)
    except ValueError:
        value = float("nan")
    return p.y_pred, value


@dataclass
class Monitored:
    """What the monitor made of one window: the policy's input and the labelled rows it keeps."""

    result: MonitorResult
    labelled: pd.DataFrame


def monitor_window(champion: Champion, window: WindowSlice, cfg: PipelineConfig,
                   baseline: tuple[float, int] | None = None) -> Monitored:
    """Quality, drift (fast engine, no HTML) and live quality on a window, as the monitor flow computes them."""
    inputs_only = window.frame.drop(columns=[cfg.target])
    first, last = window.frame[cfg.timestamp_column].iloc[[0, -1]]
    info = WindowInfo("backtest", len(window.frame), 0, [], 0, str(first), str(last), f"window-{window.index}")
    result = MonitorResult("checked", cfg.registry.model_name, str(champion.version), window=info)
    quality = check_quality(inputs_only, champion.contract, cfg.validation.max_quarantine_fraction)
    result.add_quality(quality)
    if result.status != "checked":
        return Monitored(result, window.frame.iloc[0:0])
    current = quality.good if quality.good is not None else inputs_only
    inputs = drift_inputs(current, champion.reference, champion.contract, champion.model, str(champion.version))
    if inputs.reference is not None:
        drift = compute_drift(inputs.reference, inputs.current, inputs.numeric, inputs.categorical, cfg.monitoring,
                              inputs.prediction_column)
        result.drift = DriftSummary.of(drift, {})
    labelled, by = labelled_rows(window.frame, None, cfg.target, champion.contract.id_column)
    live = live_quality(labelled, by, champion.model, cfg, champion.tags, champion.contract.input_columns,
                        champion.slices, baseline)
    result.add_live_quality(live)
    kept = training_rows(live.labelled, champion.contract) if live.labelled is not None else labelled.iloc[0:0]
    return Monitored(result, kept)


# ---------------------------------------------------------------------------------------------
# the replay


@dataclass
class WindowRecord:
    """One row of the per-window table (the policy's view, with each baseline's metric beside it)."""

    window: int
    start: str
    end: str
    rows: int
    labelled_rows: int
    champion_version: int
    metric: float | None
    drift_share: float | None
    decision: str
    reasons: list[str]
    retrained: bool
    promoted: bool
    seconds: float
    retrain_detail: str = ""
    baselines: dict[str, float | None] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ArmSummary:
    """One way of running the loop over the windows: its metric per window, mean, retrains and promotions."""

    name: str
    metrics: list[float | None] = field(default_factory=list)
    retrains: int = 0
    promotions: int = 0
    failures: int = 0
    seconds: float = 0.0
    same_as: str | None = None

    @property
    def mean_metric(self) -> float | None:
        values = [v for v in self.metrics if v is not None and math.isfinite(v)]
        return float(np.mean(values)) if values else None

    def to_dict(self) -> dict[str, Any]:
        out = {"mean_metric": self.mean_metric, "retrains": self.retrains, "promotions": self.promotions,
               "failures": self.failures, "seconds": round(self.seconds, 3), "metrics": self.metrics}
        if self.same_as:
            out["same_as"] = self.same_as
        return out


@dataclass
class BacktestResult:
    """The per-window table, one summary per arm, the kept predictions and the plan it replayed."""

    metric: str
    windows: list[WindowRecord]
    arms: dict[str, ArmSummary]
    predictions: pd.DataFrame
    train_on: str
    initial: str
    every: str
    initial_rows: int
    first_champion_seconds: float
    seconds: float
    notes: list[str] = field(default_factory=list)

    @property
    def higher_is_better(self) -> bool:
        return METRIC_DIRECTION[self.metric]

    @property
    def recovered_share(self) -> float | None:
        return recovered_share(self.arms["policy"].mean_metric, self.arms["never"].mean_metric,
                               self.arms["every_window"].mean_metric, self.higher_is_better)

    def summary(self) -> dict[str, Any]:
        policy = self.arms["policy"]
        train_on = self.arms["every_window_train_on"]
        return {
            "metric": self.metric, "higher_is_better": self.higher_is_better, "windows": len(self.windows),
            "mean_metric": policy.mean_metric, "retrains": policy.retrains, "promotions": policy.promotions,
            "recovered_share": self.recovered_share,
            "recovered_share_vs_train_on": recovered_share(policy.mean_metric, self.arms["never"].mean_metric,
                                                           train_on.mean_metric, self.higher_is_better),
            "baselines": {name: self.arms[name].to_dict() for name in ARMS[1:]},
            "policy": policy.to_dict(), "train_on": self.train_on, "initial": self.initial, "every": self.every,
            "initial_rows": self.initial_rows, "first_champion_seconds": round(self.first_champion_seconds, 3),
            "seconds": round(self.seconds, 3), "notes": self.notes,
        }

    def to_dict(self) -> dict[str, Any]:
        return {"windows": [w.to_dict() for w in self.windows], "summary": self.summary()}


def recovered_share(policy: float | None, never: float | None, every: float | None,
                    higher_is_better: bool) -> float | None:
    """The share of every-window retraining's gain over never retraining that the policy gets (None: no gain)."""
    if policy is None or never is None or every is None:
        return None
    sign = 1.0 if higher_is_better else -1.0
    gain = sign * (every - never)
    if gain <= 0:
        return None
    return float(sign * (policy - never) / gain)


@dataclass
class _Arm:
    """One arm's moving parts while replaying."""

    summary: ArmSummary
    champion: Champion
    pending: list[pd.DataFrame] = field(default_factory=list)  # labelled rows since its last promotion
    next_version: int = 2


def _finite(v: float) -> float | None:
    return float(v) if v is not None and math.isfinite(v) else None


def run_backtest(cfg: PipelineConfig, plan: BacktestPlan, log: Log | None = None,
                 baselines: bool = True) -> BacktestResult:
    """Replay the plan: the policy arm and (with `baselines`) never / every-window retraining side by side.

    OpenMP and BLAS are held to one thread in this process: the search's trials run in parallel worker processes,
    and the refit's OpenMP threads spin against them (and any other busy process) for nothing; measured
    on 2 busy cores, one HistGradientBoosting retrain took 95 s with two threads and 3 s with one.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        return _replay(cfg, plan, log or (lambda _m: None), baselines)


def _replay(cfg: PipelineConfig, plan: BacktestPlan, say: Log, baselines: bool) -> BacktestResult:
    t_start = time.perf_counter()
    policy_cfg = cfg.monitoring.policy
    ts = plan.timestamp_column
    try:
        first = train_candidate(plan.initial, cfg, None, 1, plan.windows[0].start)
    except DataError as exc:
        raise DataError(f"the first champion could not be trained on the initial period ({plan.initial_period}, "
                        f"{len(plan.initial)} rows): {exc}") from None
    if not first.passed:
        say(f"the first champion misses the gate ({'; '.join(r for r in first.reasons if r.startswith('FAIL'))[:300]})"
            "; it is replayed as champion anyway, as a backtest needs one")
    say(f"first champion v1 ({first.champion.family}) on {len(plan.initial):,} rows in {first.seconds:.1f} s: "
        f"holdout {cfg.primary_metric} {first.champion.metrics.get(cfg.primary_metric, float('nan')):.4f}")
    same = policy_cfg.train_on == "original_plus_new"
    arms = {name: _Arm(ArmSummary(name), first.champion) for name in ARMS}
    if same:
        arms["every_window_train_on"].summary.same_as = "every_window"
    active = ["policy", "never", "every_window"] + ([] if same else ["every_window_train_on"]) if baselines else ["policy"]
    history = [plan.initial]
    state = PolicyState()
    records: list[WindowRecord] = []
    kept: list[pd.DataFrame] = []
    for w in plan.windows:
        now = w.end.to_pydatetime()
        last_window = w.index == len(plan.windows)
        preds = pd.DataFrame({ts: w.frame[ts], "window": w.index, cfg.target: w.frame[cfg.target]})
        metrics: dict[str, float | None] = {}
        for name in active:
            arm = arms[name]
            t0 = time.perf_counter()
            y_pred, value = score_window(arm.champion, w.frame, cfg)
            preds[f"prediction_{name}"] = y_pred
            preds[f"version_{name}"] = arm.champion.version
            metrics[name] = _finite(value)
            arm.summary.metrics.append(metrics[name])
            arm.summary.seconds += time.perf_counter() - t0
        history.append(w.frame)
        # the policy arm: monitor, decide on the data clock, retrain as train_on says, gate
        t0 = time.perf_counter()
        arm = arms["policy"]
        champion = arm.champion
        seen = monitor_window(champion, w, cfg, live_baseline(state, str(champion.version),
                                                               policy_cfg.live_baseline_windows))
        arm.pending.append(seen.labelled)
        summary = with_live_metric(seen.result.window_summary(), str(champion.version), seen.result.live_quality)
        decision, state = decide(state, summary, policy_cfg, now)
        retrained = promoted = False
        detail = ""
        if decision.retrain and last_window:
            detail = "the last window: nothing left to score a retrain on, so none is trained"
        elif decision.retrain:
            ok, state = start_training(state, now, timedelta(seconds=policy_cfg.dedupe_seconds),
                                       policy_cfg.training_lock_minutes, f"backtest-window-{w.index}")
            if not ok:
                detail = f"training not started: another started less than {policy_cfg.dedupe_seconds:g} s before"
            else:
                new = _concat(arm.pending)
                frame, what = build_training_frame(policy_cfg.train_on, champion.trained_on, new, seen.labelled,
                                                   champion.contract, policy_cfg.max_training_rows,
                                                   policy_cfg.recent_rows, policy_cfg.recent_days)
                cand, detail = _retrain(frame, what, cfg, champion, arm, w, gate=True)
                retrained = cand is not None
                state = finish_training(state, now, succeeded=retrained, trained=bool(len(frame)))
                if cand is not None and cand.passed:
                    promoted = True
                    arm.champion, arm.pending = cand.champion, []
                    arm.summary.promotions += 1
        arm.summary.seconds += time.perf_counter() - t0
        seconds = time.perf_counter() - t0
        drift = seen.result.drift
        records.append(WindowRecord(
            w.index, f"{w.start:%Y-%m-%d %H:%M}", f"{w.end:%Y-%m-%d %H:%M}", len(w.frame),
            int(w.frame[cfg.target].notna().sum()), champion.version, metrics["policy"],
            None if drift is None else round(drift.drift_share, 4), decision.verdict, decision.reasons, retrained,
            promoted, round(seconds, 3), detail, {k: v for k, v in metrics.items() if k != "policy"}))
        say(f"window {w.index}/{len(plan.windows)} {w.label}: {len(w.frame)} rows, v{champion.version} "
            f"{cfg.primary_metric} {metrics['policy'] if metrics['policy'] is not None else float('nan'):.4f}, "
            f"drift share {'n/a' if drift is None else f'{drift.drift_share:.2f}'}, {decision.verdict}"
            + (f", retrained v{arm.next_version - 1} {'promoted' if promoted else 'rejected'}" if retrained else "")
            + (f" ({detail})" if detail and not retrained else ""))
        # the baselines retrain after every window (but the last) and promote what they train
        if not last_window and baselines:
            for name in active[2:]:
                _baseline_retrain(arms[name], name, history, w, cfg)
        kept.append(preds)
    if same and baselines:
        arms["every_window_train_on"].summary = _copy_summary(arms["every_window"].summary, "every_window_train_on")
    predictions = pd.concat(kept, ignore_index=True) if kept else pd.DataFrame()
    return BacktestResult(cfg.primary_metric, records, {n: a.summary for n, a in arms.items()}, predictions,
                          policy_cfg.train_on, plan.initial_period, plan.every, len(plan.initial), first.seconds,
                          time.perf_counter() - t_start, plan.notes)


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True, sort=False) if frames else pd.DataFrame()


def _retrain(frame: pd.DataFrame, what: str, cfg: PipelineConfig, champion: Champion, arm: _Arm, w: WindowSlice,
             gate: bool) -> tuple[Candidate | None, str]:
    """Train one challenger; a retrain the data cannot support is a failed retrain with its reason, not a stop."""
    if not len(frame):
        return None, f"no labelled rows to train on ({what})"
    try:
        cand = train_candidate(frame, cfg, champion, arm.next_version, w.end, gate=gate)
    except DataError as exc:
        arm.summary.failures += 1
        return None, f"retrain failed: {exc}"
    arm.next_version += 1
    arm.summary.retrains += 1
    verdict = ("promoted without a gate (baseline)" if not gate else "passed the gate" if cand.passed
               else "rejected by the gate: " + "; ".join(r for r in cand.reasons if r.startswith("FAIL")))
    return cand, f"v{cand.champion.version} {verdict}; trained on {what}"


def _baseline_retrain(arm: _Arm, name: str, history: list[pd.DataFrame], w: WindowSlice, cfg: PipelineConfig) -> None:
    t0 = time.perf_counter()
    champion = arm.champion
    window_rows = training_rows(w.frame.loc[w.frame[cfg.target].notna()], champion.contract)
    policy = cfg.monitoring.policy
    if name == "every_window":
        everything = _concat([training_rows(f.loc[f[cfg.target].notna()], champion.contract) for f in history])
        n_new = len(window_rows)
        frame = everything.assign(**{NEW_ROW_COLUMN: np.arange(len(everything)) >= len(everything) - n_new})
        what = f"all {len(everything):,} labelled rows so far"
    else:
        arm.pending.append(window_rows)
        frame, what = build_training_frame(policy.train_on, champion.trained_on, _concat(arm.pending), window_rows,
                                           champion.contract, policy.max_training_rows, policy.recent_rows,
                                           policy.recent_days)
    cand, _ = _retrain(frame, what, cfg, champion, arm, w, gate=False)
    if cand is not None:
        arm.champion, arm.pending = cand.champion, []
        arm.summary.promotions += 1
    arm.summary.seconds += time.perf_counter() - t0


def _copy_summary(s: ArmSummary, name: str) -> ArmSummary:
    return ArmSummary(name, list(s.metrics), s.retrains, s.promotions, s.failures, 0.0, s.same_as or "every_window")
