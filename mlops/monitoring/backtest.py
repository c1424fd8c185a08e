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

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import numpy as np
import pandas as pd

from mlops.core.config import METRIC_DIRECTION, PipelineConfig
from mlops.core.contract import DataContract
from mlops.core.data import check_frame, split_frame
from mlops.core.errors import DataError
from mlops.core.periods import parse_period
from mlops.core.rowkeys import NEW_ROW_COLUMN, RowHashSet, hash_columns, new_row_mask, pop_new_rows
from mlops.core.validation import validate_training_batch
from mlops.monitoring.backtest_lane import Lane, check_fresh_gain, fit_and_score
from mlops.monitoring.backtest_plan import BacktestPlan, WindowSlice
from mlops.monitoring.backtest_result import ArmSummary, BacktestResult, WindowRecord
from mlops.monitoring.drift import compute_drift
from mlops.monitoring.live_quality import holdout_slice_metrics, labelled_rows, live_quality
from mlops.monitoring.payoff import retrain_cost
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
from mlops.monitoring.yardstick import Board, Family, Schedule, every_window, optimal_schedule, score_row
from mlops.training import steps
from mlops.training.assessment import evaluate, judge, reference_sample
from mlops.training.evaluation import metric_value, predict
from mlops.training.retune import Reuse, plan_retune, search_digest
from mlops.training.tuning import pick_best
from mlops.training.window import (
    WindowChoice,
    Windowed,
    all_history,
    last_periods,
    refit_in_window,
    train_in_window,
)

Log = Callable[[str], None]
ARMS = ("policy", "never", "every_window", "every_window_train_on")


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
    trained_on: pd.DataFrame  # the frame it was trained from (the `original` of original_plus_new; all history)
    trained_at: pd.Timestamp
    rows: RowHashSet | None = None  # the rows the served model was fitted on (the gate compares on others; None for
    # a baseline's model, which no gate compares with)
    window: WindowChoice | None = None
    lineage: dict[str, str] = field(default_factory=dict)  # the configuration's tuning (mlops.training.retune)

    @property
    def tags(self) -> dict[str, str]:
        """The version tags live quality and the retune rule read (`metric.<name>`, `family`, `lineage.*`),
        formatted as registration writes them."""
        return ({f"metric.{k}": f"{v:.6g}" for k, v in self.metrics.items() if math.isfinite(v)}
                | {"family": self.family} | {f"lineage.{k}": v for k, v in self.lineage.items()})

    @property
    def window_periods(self) -> int | None:
        return None if self.window is None else self.window.periods


@dataclass
class Candidate:
    """A trained challenger and the gate's verdict on it; `fits` counts every model fitted for it and `seconds`
    the time training it took (the gate's own checks left out, so gated and ungated retrains compare)."""

    champion: Champion
    passed: bool
    reasons: list[str]
    seconds: float
    fits: int = 0
    tuned: Any = None  # the tuned configuration fitted on all training rows (the fixed-window baselines refit it)
    search_seconds: float = 0.0  # of `seconds`: the search, or the reused configuration's one fit
    window_seconds: float = 0.0  # of `seconds`: choosing the training window


def train_candidate(frame: pd.DataFrame, cfg: PipelineConfig, champion: Champion | None, version: int,
                    at: pd.Timestamp, gate: bool = True, period: str | None = None,
                    choose: bool = True, search: bool = False, served_only: bool = False,
                    before_parallel: Callable[[], None] | None = None) -> Candidate:
    """Validate, split, tune, choose the training window, evaluate and (with `gate`) judge, as the training
    flow does, in process.

    `frame` may carry the new-row marker of a retraining file. The rows are checked for structure and the
    user's rules, and the contract evolves from the kept rows (from the champion's, when there is one).
    `period` is the window length candidate training windows are counted in (`train_on: auto`); with
    `choose` False the challenger trains on every row (the all-history baseline). A retrain refits the
    champion's configuration until the data outgrows it (mlops.training.retune); `search` always searches.
    `served_only` is for a baseline (no gate, all history), whose holdout scores nothing reads: a retrain that
    refits the configuration fits only the model it serves, on train + holdout, and is not evaluated.
    `before_parallel` is called before work that spreads over every core (a search, the window choice); the time
    it waits is not the candidate's.
    """
    started = time.perf_counter()
    df, new_rows = pop_new_rows(frame)
    df = check_frame(df, cfg)
    batch = validate_training_batch(df, champion.contract if champion else None, cfg)
    outcome, contract = batch.outcome, batch.contract
    good = outcome.good
    mask = None if new_rows is None else new_row_mask(good, new_rows, cfg.id_column)
    split = split_frame(good, cfg.target, cfg.task, cfg.split, cfg.timestamp_column, mask)
    inputs = steps.search_inputs(split.train, contract, cfg)
    reuse = plan_retune(cfg, champion, rows=len(split.train), retraining=new_rows is not None and not search)
    if served_only and reuse.reuse and cfg.refit and not (gate or choose):
        return _served_refit(df, split.train, split.test, inputs, reuse, contract, cfg, version, at, started)
    waited = time.perf_counter()
    if before_parallel is not None and (choose or not reuse.reuse):
        before_parallel()
    waited = time.perf_counter() - waited
    results = steps.search(cfg, inputs, reuse)  # a retrain the data has not outgrown: the champion's configuration
    fits = steps.fits_of(results, cfg.search.cv_folds)
    best = pick_best(results)
    windowed = (train_in_window(best.best_estimator, split.train, cfg, period) if choose
                else Windowed(best.best_estimator, all_history("the all-history baseline", cfg.primary_metric)))
    fits += windowed.choice.fits + (0 if windowed.choice.is_all else 1)
    model = windowed.model
    evaluation = evaluate(model, split.test, cfg, None)
    passed, reasons = True, ["promoted without a gate (baseline)"]
    judging = time.perf_counter()
    if gate:
        verdict = judge(evaluation, champion.model if champion else None, str(champion.version) if champion else None,
                        split.test, cfg, model=model, train=split.train, contract=contract,
                        champion_rows=champion.rows if champion else None)
        passed, reasons = verdict.passed, verdict.reasons
    judged = time.perf_counter() - judging
    served, fitted_on = model, split.train
    if cfg.refit:  # as the training flow registers it: the gated configuration refitted on train + holdout
        served = refit_in_window(windowed, split.train, split.test, cfg)
        fits += 1
        fitted_on = pd.concat([split.train, split.test], ignore_index=True)
    fitted_on = windowed.choice.rows(fitted_on, cfg.timestamp_column, windowed.period)
    made = Champion(version, served, best.family, contract, reference_sample(fitted_on, served, cfg),
                    evaluation.metrics, holdout_slice_metrics(split.test, evaluation.predictions, cfg), df, at,
                    RowHashSet.of(fitted_on, hash_columns(contract, cfg.serving.sensitive_columns)) if gate else None,
                    windowed.choice,
                    reuse.lineage(len(split.train), search_digest(cfg)))
    return Candidate(made, passed, reasons, time.perf_counter() - started - judged - waited, fits, best.best_estimator,
                     sum(r.seconds for r in results), windowed.choice.seconds)


def _served_refit(df: pd.DataFrame, train: pd.DataFrame, test: pd.DataFrame, inputs: steps.SearchInputs, reuse: Reuse,
                  contract: DataContract, cfg: PipelineConfig, version: int, at: pd.Timestamp,
                  started: float) -> Candidate:
    """A baseline's refit of a reused configuration: the one model it serves, fitted on train + holdout (no
    reference sample or metrics: nothing monitors or gates a baseline)."""
    from sklearn.base import clone
    from sklearn.pipeline import Pipeline

    configuration = Pipeline([("features", inputs.preprocessor), ("model", clone(reuse.estimator))])
    choice = all_history("the all-history baseline", cfg.primary_metric)
    served = refit_in_window(Windowed(configuration, choice), train, test, cfg)
    made = Champion(version, served, str(reuse.family), contract, df.iloc[0:0], {}, {}, df, at, None, choice,
                    reuse.lineage(len(train), search_digest(cfg)))
    seconds = time.perf_counter() - started
    return Candidate(made, True, ["promoted without a gate (baseline)"], seconds, 1, configuration, seconds, 0.0)


# ---------------------------------------------------------------------------------------------
# scoring and monitoring one window


def score_window(champion: Champion, frame: pd.DataFrame, cfg: PipelineConfig) -> tuple[np.ndarray, float]:
    """The champion's prediction for every row, and its primary metric on the labelled ones."""
    p = predict(champion.model, frame.drop(columns=[cfg.target]), cfg.task, cfg.positive_class)
    known = frame[cfg.target].notna().to_numpy()
    sub = p.subset(known)
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



def _finite(v: float | None) -> float | None:
    return float(v) if v is not None and math.isfinite(v) else None


def run_backtest(cfg: PipelineConfig, plan: BacktestPlan, log: Log | None = None,
                 baselines: bool = True, fast: bool = False) -> BacktestResult:
    """Replay the plan: the policy and (with `baselines`) never, every-window and hindsight schedules side by side.

    The every-window baseline searches at every window, the cost a retrain had before retrains reused their
    configuration; with `fast` it follows the retune rule as the policy does (searches when its rows doubled,
    refits between), so a long replay (years of hourly rows, dozens of windows) takes minutes, not hours. Its
    training time is then the refitting schedule's, not the searching one's.

    OpenMP and BLAS are held to one thread in this process: the search's trials run in parallel worker processes,
    and the refit's OpenMP threads spin against them (and any other busy process) for nothing; measured
    on 2 busy cores, one HistGradientBoosting retrain took 95 s with two threads and 3 s with one. The baselines on
    the last k windows are fitted and scored in one worker process beside this one (mlops.monitoring.backtest_lane),
    as are the policy's fresh-model checks.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1), contextlib.ExitStack() as lanes:
        return _replay(cfg, plan, log or (lambda _m: None), baselines, fast, lanes)


def _labelled(frames: list[pd.DataFrame], target: str) -> pd.DataFrame:
    parts = [f.loc[f[target].notna()] for f in frames if len(f)]
    return pd.concat(parts, ignore_index=True, sort=False) if parts else pd.DataFrame()


def _replay(cfg: PipelineConfig, plan: BacktestPlan, say: Log, baselines: bool, fast: bool,
            lanes: contextlib.ExitStack) -> BacktestResult:
    t_start = time.perf_counter()
    policy_cfg = cfg.monitoring.policy
    ts = plan.timestamp_column
    period = parse_period(plan.every, "--every")
    try:
        first = train_candidate(plan.initial, cfg, None, 1, plan.windows[0].start, period=plan.every)
    except DataError as exc:
        raise DataError(f"the first champion could not be trained on the initial period ({plan.initial_period}, "
                        f"{len(plan.initial)} rows): {exc}") from None
    if not first.passed:
        say(f"the first champion misses the gate ({'; '.join(r for r in first.reasons if r.startswith('FAIL'))[:300]})"
            "; it is replayed as champion anyway, as a backtest needs one")
    say(f"first champion v1 ({first.champion.family}) on {len(plan.initial):,} rows in {first.seconds:.1f} s: "
        f"holdout {cfg.primary_metric} {first.champion.metrics.get(cfg.primary_metric, float('nan')):.4f}; "
        f"training window {first.champion.window.chosen if first.champion.window else 'all history'}")
    arm = ArmSummary("policy")
    champion, pending, next_version = first.champion, [], 2
    # without baselines nothing runs beside the fresh-model checks: they run here
    lane = lanes.enter_context(Lane(cfg, Board.of([w.frame for w in plan.windows], cfg.target) if baselines else None,
                                    processes=None if baselines else False))
    yard = Yardstick(cfg, first, plan, lane, search=not fast) if baselines else None
    history = [plan.initial]
    state = PolicyState()
    records: list[WindowRecord] = []
    kept: list[pd.DataFrame] = []
    for w in plan.windows:
        now = w.end.to_pydatetime()
        last_window = w.index == len(plan.windows)
        t0 = time.perf_counter()
        y_pred, value = score_window(champion, w.frame, cfg)
        metric = _finite(value)
        arm.metrics.append(metric)
        kept.append(pd.DataFrame({ts: w.frame[ts], "window": w.index, cfg.target: w.frame[cfg.target],
                                  "prediction_policy": y_pred, "version_policy": champion.version}))
        seen = monitor_window(champion, w, cfg, live_baseline(state, str(champion.version),
                                                               policy_cfg.live_baseline_windows))
        pending.append(seen.labelled)
        if not last_window:  # a retrain after the last window would have nothing left to serve
            before = _labelled(history, cfg.target)
            before = champion.window.rows(before, ts, period) if champion.window else before
            lane.submit("fresh gain", check_fresh_gain, champion.model, before, w.frame)
        history.append(w.frame)
        baseline_started = time.perf_counter()
        if yard is not None and not last_window:  # the baselines need nothing from the policy: trained meanwhile
            yard.retrain_all_history(w, history)
        t0 += time.perf_counter() - baseline_started  # a window's seconds are the policy's
        payoff = None if last_window else lane.result("fresh gain")
        if payoff is not None:
            arm.fits += 1
            arm.training_seconds += payoff.seconds
            arm.check_seconds += payoff.seconds
            seen.result.payoff = payoff.record(cfg.primary_metric)
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
                frame, what = build_training_frame(policy_cfg.train_on, champion.trained_on, _concat(pending),
                                                   seen.labelled, champion.contract, policy_cfg.max_training_rows,
                                                   policy_cfg.recent_rows, policy_cfg.recent_days)
                cand, detail = _retrain(frame, what, cfg, champion, next_version, w, arm, plan.every,
                                        lane.quiet)
                retrained = cand is not None
                state = finish_training(state, now, succeeded=retrained, trained=bool(len(frame)))
                if cand is not None:
                    next_version += 1
                    arm.retrain_windows.append(w.index)
                if cand is not None and cand.passed:
                    promoted = True
                    champion, pending = cand.champion, []
                    arm.promotions += 1
        drift = seen.result.drift
        records.append(WindowRecord(
            w.index, f"{w.start:%Y-%m-%d %H:%M}", f"{w.end:%Y-%m-%d %H:%M}", len(w.frame),
            int(w.frame[cfg.target].notna().sum()), int(kept[-1]["version_policy"].iloc[0]), metric,
            None if drift is None else round(drift.drift_share, 4), decision.verdict, decision.reasons, retrained,
            promoted, round(time.perf_counter() - t0, 3), detail,
            training_window=champion.window.chosen if champion.window else ""))
        say(f"window {w.index}/{len(plan.windows)} {w.label}: {len(w.frame)} rows, v{records[-1].champion_version} "
            f"{cfg.primary_metric} {metric if metric is not None else float('nan'):.4f}, "
            f"drift share {'n/a' if drift is None else f'{drift.drift_share:.2f}'}, {decision.verdict}"
            + (f", retrained v{next_version - 1} {'promoted' if promoted else 'rejected'}" if retrained else "")
            + (f" ({detail})" if detail and not retrained else ""))
    arms = {"policy": arm}
    hindsight = None
    if yard is not None:
        arms |= yard.arms()
        hindsight = yard.hindsight_family
        for r in records:
            r.baselines = {name: a.metrics[r.window - 1] for name, a in arms.items() if name != "policy"}
    predictions = pd.concat(kept, ignore_index=True) if kept else pd.DataFrame()
    return BacktestResult(cfg.primary_metric, records, arms, predictions, policy_cfg.train_on, plan.initial_period,
                          plan.every, len(plan.initial), first.seconds, time.perf_counter() - t_start, plan.notes,
                          yard.cost if yard is not None else None, hindsight, fast)


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True, sort=False) if frames else pd.DataFrame()


def _retrain(frame: pd.DataFrame, what: str, cfg: PipelineConfig, champion: Champion, version: int, w: WindowSlice,
             arm: ArmSummary, period: str, before_parallel: Callable[[], None]) -> tuple[Candidate | None, str]:
    """Train one gated challenger; a retrain the data cannot support is a failed retrain with its reason, not a stop."""
    if not len(frame):
        return None, f"no labelled rows to train on ({what})"
    try:
        cand = train_candidate(frame, cfg, champion, version, w.end, gate=True, period=period,
                               before_parallel=before_parallel)
    except DataError as exc:
        arm.failures += 1
        return None, f"retrain failed: {exc}"
    arm.retrains += 1
    arm.fits += cand.fits
    arm.training_seconds += cand.seconds
    arm.search_seconds += cand.search_seconds
    arm.window_seconds += cand.window_seconds
    arm.searches += cand.champion.lineage.get("configuration") == "tuned"
    verdict = ("passed the gate" if cand.passed
               else "rejected by the gate: " + "; ".join(r for r in cand.reasons if r.startswith("FAIL")))
    window = cand.champion.window.chosen if cand.champion.window else "all history"
    return cand, f"v{cand.champion.version} {verdict}; trained on {what}; window {window}"


class Yardstick:
    """The baselines of one replay: retrain after every window on all history (searched each time, or with
    `search` False under the retune rule) and on the last k windows (that configuration refitted on them, in the
    lane beside the replay); each model is scored on every later window as it is trained, giving the fixed
    schedules, never retraining and the hindsight-optimal schedule."""

    def __init__(self, cfg: PipelineConfig, first: Candidate, plan: BacktestPlan, lane: Lane,
                 search: bool = True) -> None:
        self.cfg, self.plan, self.search, self.lane = cfg, plan, search, lane
        self.period = parse_period(plan.every, "--every")
        n = len(plan.windows)
        ks = [k for k in (1, 2, 4, 8, 16) if k < n]
        assert lane.board is not None, "the yardstick's lane holds the windows"
        self.board = lane.board
        first_row = score_row(first.champion.model, self.board, 0, cfg)
        self.families = [Family("every_window", None, [first_row])]
        self.families += [Family(f"every_window_last_{k}", k, [first_row]) for k in ks]
        self.fits = {f.name: 0 for f in self.families}
        self.seconds = {f.name: 0.0 for f in self.families}
        self.champion = first.champion
        self.latest: tuple[int, Candidate] | None = None  # the all-history retrain whose short-window fits wait
        self.shaped: list[pd.DataFrame] = []  # the history's windows as training rows, for `shaped_for`
        self.shaped_for: DataContract | None = None
        self.handed: list[tuple[str, int]] = []  # the short-window fits given to the lane
        self.cost: float | None = None
        self.hindsight_family: str | None = None

    def retrain_all_history(self, w: WindowSlice, history: list[pd.DataFrame]) -> None:
        """The all-history model for the window after `w`, tuned (or refitted) here. That configuration's
        short-window fits go to the lane at the next window, after its fresh-model check (which the replay waits
        for), or when the arms are summed up."""
        self._hand_over_short_windows()
        cfg, contract = self.cfg, self.champion.contract
        shaping = time.perf_counter()
        if contract != self.shaped_for:  # the windows shaped as training rows again only when the contract changed
            self.shaped, self.shaped_for = [], contract
        self.shaped += [training_rows(f.loc[f[cfg.target].notna()], contract) for f in history[len(self.shaped):]]
        everything = _concat(self.shaped)
        n_new = int(w.frame[cfg.target].notna().sum())
        frame = everything.assign(**{NEW_ROW_COLUMN: np.arange(len(everything)) >= len(everything) - n_new})
        shaping = time.perf_counter() - shaping
        try:
            cand = train_candidate(frame, cfg, self.champion, 0, w.end, gate=False, choose=False,
                                   search=self.search, served_only=True, before_parallel=self.lane.quiet)
        except DataError:
            for f in self.families:  # a window the baselines cannot train on keeps their models
                f.rows.append(None)
            return
        self.champion, self.latest = cand.champion, (w.index, cand)
        self.fits["every_window"] += cand.fits
        self.seconds["every_window"] += shaping + cand.seconds  # not the wait for the lane
        self.families[0].rows.append(score_row(cand.champion.model, self.board, w.index, cfg))

    def _hand_over_short_windows(self) -> None:
        """Hand the lane the last k windows' fits of the configuration `retrain_all_history` trained last."""
        from sklearn.base import clone

        if self.latest is None:
            return
        (j, latest), self.latest = self.latest, None
        cfg, rows = self.cfg, latest.champion.trained_on
        for f in self.families[1:]:
            part = last_periods(rows, cfg.timestamp_column, f.periods, self.period)
            part = part.loc[part[cfg.target].notna()]
            self.lane.submit((f.name, j), fit_and_score, clone(latest.tuned), part.drop(columns=[cfg.target]),
                             part[cfg.target], j)
            self.handed.append((f.name, j))
            f.rows.append(None)  # filled from the lane in `arms`

    def arms(self) -> dict[str, ArmSummary]:
        """Never, every fixed schedule and the hindsight-optimal schedule, scored on every window."""
        self._hand_over_short_windows()
        family = {f.name: f for f in self.families}
        for name, j in self.handed:
            row, seconds = self.lane.result((name, j))
            family[name].rows[j] = row
            self.fits[name] += row is not None
            self.seconds[name] += seconds
        n = len(self.plan.windows)
        higher = METRIC_DIRECTION[self.cfg.primary_metric]
        out: dict[str, ArmSummary] = {}
        losses = {f.name: f.loss() for f in self.families}
        out["never"] = ArmSummary("never", [_finite(v) for v in losses["every_window"][0]])
        for f in self.families:
            out[f.name] = ArmSummary(f.name, every_window(losses[f.name]), n - 1, n - 1, 0, self.fits[f.name],
                                     self.seconds[f.name], list(range(2, n + 1)))
        reference = out["every_window"].mean_metric
        self.cost = retrain_cost(self.cfg, reference if reference is not None else float("nan"))
        best: Schedule | None = None
        for f in self.families:
            sched = optimal_schedule(f.name, losses[f.name], self.cost, higher)
            if best is None or sched.objective < best.objective:
                best = sched
        if best is not None:
            self.hindsight_family = best.name
            out["hindsight"] = ArmSummary("hindsight", best.metrics, best.retrains, best.retrains,
                                          retrain_windows=best.retrain_windows)
        return out
