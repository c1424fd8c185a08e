"""Hyperparameter search per model family: Optuna's TPE sampler by default (its random sampler, or
scikit-learn's successive halving, as choices), trials that fall behind on the first folds pruned, a time
budget and a trial pool shared across families where it pays, trials in parallel on the cores (or a Dask
cluster) with trials x threads per trial never above the cores.

Default search spaces, a search's first trials and the local moves from the best of them:
`mlops.training.spaces`.

How trials are shared (`tune_families`): a short equal warm-up (30% of the time budget or of the trial pool,
n_trials x families), then the rest goes, in equal shares, to the families whose best cross-validated score
is within reach of the leader's (no further behind than the spread of the leader's fold scores) or that are
not yet judged (a start was cut at the warm-up's end; those starts are asked again first), the dearest
family first so that a share it cannot use passes on at once. A trial is one configuration fitted on the
folds; a pruned trial (behind the median of earlier trials after a fold) counts as a trial and is reported
apart.

How the time budget holds: no trial starts once its share is spent, nor when the family's usual trial time
(the median over its finished trials and what its cut trials would have taken at their pace) would take it
past its share; every fit has a deadline and forests and boosting stop themselves there
(mlops.training.trials), so the search ends within about one round of a fit after `time_budget`. A family's
first trial (its defaults) may run on past its share, up to the budget's end, while no tree family has a
score yet; the warm-up goes from the cheapest family to the dearest (linear, boosting, forest), so such a
trial only holds back families dearer than itself. A family whose trials were all cut is scored on the folds
they finished. One exception to the budget: when no tree family (boosting, forest) has a score at its end,
so that only a linear baseline could be chosen, the cheapest tree family's defaults are fitted whatever the
time (on a machine too busy for the budget, a better model beats an on-time one). Cut trials do not count;
the summary says how many.
"""

from __future__ import annotations

import contextlib
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from mlops.core.config import ModelSpec, Param, SearchConfig
from mlops.core.startup import available_cores
from mlops.training.halving import halving_search
from mlops.training.scorers import SCORERS as SCORERS
from mlops.training.scorers import scorer_for as scorer_for
from mlops.training.scorers import scoring_name
from mlops.training.spaces import LOCAL_AXES, SPACE_LABELS, moves, optuna_distribution, resolve_space, starts
from mlops.training.trials import (
    Dask,
    Inline,
    OutOfTime,
    Processes,
    ThreadPlan,
    dask_client,
    fit_threads,
    limits,
    make_estimator,
    plan_for,
    splitter,
    start_workers,
    thread_plan,
)

# ---- fold data, prepared once and shared by every trial and family ------------------------------------


@dataclass
class Folds:
    """The cross-validation folds with the feature pipeline fitted on each training part: the feature
    pipeline has no hyperparameters, so every trial of every family fits only its estimator on these."""

    parts: list[tuple[Any, Any, Any, Any]]  # (X_train, y_train, X_valid, y_valid) in feature space
    seconds: float
    _file: Path | None = None

    def file(self, folder: Path, scorer: Any) -> Path:
        """The folds and scorer in one file that worker processes memory-map (written once)."""
        import joblib

        if self._file is None or not self._file.exists():
            self._file = folder / f"folds-{id(self)}.joblib"
            joblib.dump((self.parts, scorer), self._file)
        return self._file


def prepare_folds(preprocessor: Any, X: pd.DataFrame, y: pd.Series, task: str, cfg: SearchConfig) -> Folds:
    """Fit the feature pipeline on each fold's training part and transform both parts."""
    from sklearn.base import clone

    t0 = time.perf_counter()
    parts = []
    y_arr = y.to_numpy()
    with limits(available_cores()):
        for tr, va in splitter(task, cfg.cv_folds, cfg.seed).split(X, y_arr):
            pre = clone(preprocessor)
            parts.append((pre.fit_transform(X.iloc[tr], y_arr[tr]), y_arr[tr], pre.transform(X.iloc[va]), y_arr[va]))
    return Folds(parts, time.perf_counter() - t0)


# ---- one family's search -------------------------------------------------------------------------------


@dataclass
class FamilyResult:
    family: str
    best_estimator: Pipeline
    best_params: dict[str, Any]
    best_score: float
    cv_scores: list[float]
    scoring: str
    n_trials: int
    seconds: float
    trials: list[dict[str, Any]] = field(default_factory=list)
    space: str = "config"  # default / config / none: which space was searched
    pruned: int = 0
    stopped: str = ""  # why the search ended: "trials", "time budget", "nothing to search", "halving"
    threads: str = ""
    study: Any = field(default=None, repr=False, compare=False)  # the Optuna study, to continue the search
    cut: int = 0  # trials cut at their deadline (not counted in n_trials)
    partial: bool = False  # no trial finished every fold: the best is scored on the folds one finished

    def leaderboard_row(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "cv_score": round(self.best_score, 5),
            "cv_std": round(float(np.std(self.cv_scores)), 5) if self.cv_scores else math.nan,
            "trials": self.n_trials,
            "pruned": self.pruned,
            "space": SPACE_LABELS[self.space],
            "seconds": round(self.seconds, 2),
            "best_params": ", ".join(f"{k}={_short(v)}" for k, v in self.best_params.items()),
        }

    def describe(self) -> str:
        """One line: best score, trials (pruned), space, time, why it stopped."""
        if self.space == "reused":
            return f"{self.family}: no search, {self.stopped}"
        pruned = f", {self.pruned} pruned" if self.pruned else ""
        if not self.cv_scores or self.partial:
            return (f"{self.family}: no trial finished in its share of the time budget ({self.cut} cut at the "
                    f"deadline{pruned}, {self.seconds:.1f} s)" + (
                        f"; the best scored {self.best_score:.4f} on the {len(self.cv_scores)} fold(s) it finished"
                        if self.partial else ""))
        return (f"{self.family}: best cv score {self.best_score:.4f} (+/- {np.std(self.cv_scores):.4f}) of "
                f"{self.n_trials} trial(s){pruned} in {self.seconds:.1f} s, {SPACE_LABELS[self.space]}"
                + (f", stopped by the {self.stopped}" if self.stopped in {"time budget", "trial count"} else "")
                + (f" ({self.cut} cut at the deadline)" if self.cut else ""))


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _new_study(cfg: SearchConfig, plan: ThreadPlan, space: dict[str, Param]) -> Any:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if cfg.strategy == "random":
        sampler: Any = optuna.samplers.RandomSampler(seed=cfg.seed)
    else:
        # the starts (defaults, boosting's portfolio) already spread the first trials: the sampler models the
        # space after five, not after the ten random ones it would wait for by default
        sampler = optuna.samplers.TPESampler(seed=cfg.seed, multivariate=True, constant_liar=True,
                                             n_startup_trials=5)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=max(5, plan.trials), n_warmup_steps=0)
    return optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner)


def tune_family(
    spec: ModelSpec,
    preprocessor: Any,
    X: pd.DataFrame,
    y: pd.Series,
    task: str,
    scoring: Any,
    cfg: SearchConfig,
    *,
    budget: float | None = -1.0,
    max_trials: int | None = -1,
    resume: FamilyResult | None = None,
    folds: Folds | None = None,
    refit: bool = True,
    grace: float = 0.0,
    deadline: float | None = None,
    free_start: bool = True,
) -> FamilyResult:
    """Search one family's space with cross-validation and refit the best on all of X.

    `budget` (seconds) and `max_trials` default to the config's time_budget and n_trials; `resume` goes on
    with an earlier result's study (its trials count too); `folds` are prepared by `prepare_folds` (once for
    every family); `refit` False leaves the final fit on all rows to a later call. No trial starts once the
    budget is spent or when its expected time (`expected_seconds`) would not fit;
    fits still running `grace` seconds after the budget stop themselves (and do not count). `deadline`
    (`time.time()` seconds) is the hard end for every fit, the search's first trial too; without one, that
    first trial always finishes (a search always has a configuration to offer). With `free_start` False the
    first trial keeps to the budget like the others (another family already has a score to offer).
    """
    budget = cfg.time_budget if budget == -1.0 else budget
    max_trials = cfg.trials if max_trials == -1 else max_trials
    space, fixed, source = resolve_space(spec)
    if cfg.strategy == "halving" and source != "none":
        return FamilyResult(**halving_search(spec, preprocessor, X, y, task, scoring, cfg, space, fixed, source))
    t0 = time.perf_counter()
    folds = folds or prepare_folds(preprocessor, X, y, task, cfg)
    with dask_client(cfg) as client:
        plan = plan_for(cfg, client)
        study = resume.study if resume is not None and resume.study is not None else _new_study(cfg, plan, space)
        if resume is None and source != "none":
            for start in starts(spec.family, task, space, fixed):
                study.enqueue_trial(start, user_attrs={"start": True}, skip_if_exists=True)
        elif source != "none":
            _enqueue_cut_starts(study)
        if source == "none":
            max_trials, budget = (0 if resume is not None else 1), None
        stopped = _run_trials(study, spec.family, task, space, fixed, folds, scoring, cfg, plan, client,
                              budget, max_trials, grace, deadline, free_start)
    if max_trials == 0 and resume is not None:
        stopped = resume.stopped
    return _result(spec.family, study, preprocessor, X, y, task, scoring, cfg, fixed, source, plan, stopped,
                   time.perf_counter() - t0 + (resume.seconds if resume else 0.0), refit)


def cut_starts(study: Any) -> list[dict[str, Any]]:
    """The starts a phase's end cut and that were not asked for again."""
    from optuna.trial import TrialState

    if study is None:
        return []
    tried = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("start")]
    settled = [t.params for t in tried if t.state != TrialState.FAIL or t.user_attrs.get("again")]
    out: list[dict[str, Any]] = []
    for t in tried:
        if t.state == TrialState.FAIL and t.params not in settled + out:
            out.append(t.params)
    return out


def _enqueue_cut_starts(study: Any) -> None:
    """Ask again, first, for the starts a phase's end cut (a warm-up's share is short, and the starts are the
    best guesses there are); a start cut again stays cut."""
    for params in cut_starts(study):
        study.enqueue_trial(params, user_attrs={"start": True, "again": True})


def _enqueue_moves(study: Any, family: str, space: dict[str, Param], running: list[Any]) -> None:
    """Queue the `moves` from the best finished trial once no start or move is waiting, running or cut at a
    phase's end (to be asked again), when that trial is itself a start or a move (the sampler's own finds are
    left to the sampler). Called right after a trial finished, so the study has a best trial."""
    from optuna.trial import TrialState

    def local(t: Any) -> bool:
        return bool(t.user_attrs.get("start") or t.user_attrs.get("move"))

    if not LOCAL_AXES.get(family) or any(local(t) for t in running):
        return
    best = study.best_trial
    if not local(best) or cut_starts(study):  # the starts cut at a phase's end go first
        return
    if any(t.state == TrialState.WAITING for t in study.get_trials(deepcopy=False)):
        return
    for params in moves(family, space, best.params):
        study.enqueue_trial(params, user_attrs={"move": True}, skip_if_exists=True)


def trial_seconds(study: Any) -> list[float]:
    """What each of the study's trials took on every fold: finished trials' times and the estimates left by
    trials cut at a deadline."""
    from optuna.trial import TrialState

    seen = []
    for t in study.get_trials(deepcopy=False) if study is not None else []:
        if t.state == TrialState.COMPLETE and "seconds" in t.user_attrs:
            seen.append(t.user_attrs["seconds"])
        elif t.state == TrialState.FAIL and "estimate" in t.user_attrs:
            seen.append(t.user_attrs["estimate"])
    return seen


def usual_seconds(durations: list[float]) -> float:
    """The median of trial times (0 when there are none)."""
    return float(np.median(durations)) if durations else 0.0


def expected_seconds(study: Any) -> float:
    """The usual time of one of the study's trials: the median of `trial_seconds`."""
    return usual_seconds(trial_seconds(study))


STRAGGLER_SLACK = 2.0  # seconds past its deadline before a fit that did not stop itself is stopped from outside


def _run_trials(study: Any, family: str, task: str, space: dict[str, Param], fixed: dict[str, Any],
                folds: Folds, scoring: Any, cfg: SearchConfig, plan: ThreadPlan, client: Any,
                budget: float | None, max_trials: int | None, grace: float = 0.0,
                deadline: float | None = None, free_start: bool = True) -> str:
    """Ask, fit fold by fold, report, prune, tell, until `max_trials` more trials or `budget` seconds are spent.

    Without a budget the order is deterministic (each step waits for every running fit, results are told in
    the order the trials were asked); with one, a freed slot takes the next fit at once. Each trial records
    when it started (`started`) and when its fits must end (`stop_at`), both `time.time()` seconds.
    """
    import optuna

    fail = optuna.trial.TrialState.FAIL
    distributions = {k: optuna_distribution(v) for k, v in space.items()}
    if max_trials == 0:
        return "trial count"
    end = None if budget is None else time.time() + budget  # no trial starts after this
    stop = None if end is None else end + grace  # no fit runs past this
    if deadline is not None:
        stop = deadline if stop is None else min(stop, deadline)
    done_trials = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    durations = trial_seconds(study)  # kept up to date below: not read from the study at every ask
    first: int | None = None  # a new search's first trial (the estimator's defaults): only `deadline` ends it
    reason = "trial count"

    with contextlib.ExitStack() as stack:
        if client is not None:
            runner: Any = Dask(client, folds.parts, scoring)
        elif plan.trials > 1:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mlops-folds-")))
            runner = Processes(folds.file(folder, scoring), plan)
        else:
            runner = Inline(folds.parts, scoring)
            stack.enter_context(limits(min(plan.per_trial, fit_threads())))
        asked, running = 0, {}  # future -> (trial, fold, scores so far, parameters, its stop, seconds so far)
        while True:
            while len(running) < plan.trials and (max_trials is None or asked < max_trials):
                now = time.time()
                opening = free_start and not done_trials and asked == 0
                fit_stop = deadline if opening else stop
                expected = usual_seconds(durations)
                if not opening and end is not None and (now >= end or (fit_stop is not None and now + expected > fit_stop)):
                    reason = "time budget"
                    break
                trial = study.ask(distributions)
                trial.set_user_attr("started", now)
                trial.set_user_attr("stop_at", fit_stop)
                first = trial.number if opening else first
                asked += 1
                params = fixed | trial.params
                fut = runner.submit(0, family, task, params, cfg.seed, plan.per_trial, fit_stop)
                running[fut] = (trial, 0, [], params, fit_stop, 0.0)
            if not running:
                return reason
            stops = [r[4] for r in running.values()]
            timeout = (None if end is None or None in stops
                       else max(0.0, max(stops) + STRAGGLER_SLACK - time.time()))
            done = runner.wait(list(running), timeout, end is None)
            if not done:  # fits that did not stop at their deadline: stopped from outside, they do not count
                for trial, *_ in running.values():
                    study.tell(trial, state=fail)
                runner.stop()
                return "time budget"
            for fut in sorted(done, key=lambda f: running[f][0].number):
                trial, fold, scores, params, fit_stop, seconds = running.pop(fut)
                try:
                    score, took = fut.result()
                except OutOfTime:
                    if scores:  # the folds it finished stay on record (see _result)
                        trial.set_user_attr("folds", scores)
                    # what the whole trial would have taken, at least: its folds at the pace it was cut at
                    ran = time.time() - trial.user_attrs["started"]
                    estimate = ran * len(folds.parts) / (len(scores) + 1)
                    trial.set_user_attr("estimate", estimate)
                    durations.append(estimate)
                    study.tell(trial, state=fail)  # cut at its deadline
                    reason = "time budget"
                    continue
                except Exception:
                    for other, *_ in running.values():
                        study.tell(other, state=fail)
                    runner.stop()
                    raise
                scores, seconds = [*scores, score], seconds + took
                trial.report(float(np.mean(scores)), fold)
                left = len(folds.parts) - len(scores)
                if not left:
                    trial.set_user_attr("folds", scores)
                    trial.set_user_attr("seconds", seconds)
                    trial.set_user_attr("ended", time.time())
                    study.tell(trial, float(np.mean(scores)))
                    done_trials.append(trial)
                    durations.append(seconds)
                    _enqueue_moves(study, family, space, [r[0] for r in running.values()])
                elif trial.number != first and trial.should_prune():
                    trial.set_user_attr("folds", scores)
                    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                elif (trial.number != first and fit_stop is not None
                      and time.time() + left * seconds / len(scores) > fit_stop):
                    trial.set_user_attr("folds", scores)
                    study.tell(trial, state=fail)  # its other folds would not end in time
                    reason = "time budget"
                else:
                    nxt = runner.submit(fold + 1, family, task, params, cfg.seed, plan.per_trial, fit_stop)
                    running[nxt] = (trial, fold + 1, scores, params, fit_stop, seconds)


def _result(family: str, study: Any, preprocessor: Any, X: pd.DataFrame, y: pd.Series, task: str, scoring: Any,
            cfg: SearchConfig, fixed: dict[str, Any], source: str, plan: ThreadPlan, stopped: str, seconds: float,
            refit: bool) -> FamilyResult:
    from optuna.trial import TrialState
    from sklearn.base import clone

    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    # without a finished trial, the best evidence there is: a trial scored on the folds it finished
    scored = complete or [t for t in pruned + failed if t.user_attrs.get("folds")]
    best = max(scored, key=lambda t: float(np.mean(t.user_attrs["folds"]))) if scored else None
    params = {k: _jsonable(v) for k, v in best.params.items()} if best else {}
    pipe = Pipeline([("features", clone(preprocessor)), ("model", make_estimator(family, task, fixed | params, cfg.seed))])
    t0 = time.perf_counter()
    if refit and best:
        with limits(fit_threads()):
            pipe.fit(X, y)
    trials = [{"params": {k: _jsonable(v) for k, v in t.params.items()}, "state": t.state.name.lower(),
               "mean_score": float(np.mean(t.user_attrs.get("folds", [np.nan]))),
               "std_score": float(np.std(t.user_attrs.get("folds", [np.nan]))),
               "folds": t.user_attrs.get("folds", [])}
              for t in complete + pruned]
    return FamilyResult(  # without a finished trial: best score -inf, never picked, never in reach
        family=family, best_estimator=pipe, best_params=params,
        best_score=float(np.mean(best.user_attrs["folds"])) if best else -math.inf,
        cv_scores=list(best.user_attrs["folds"]) if best else [], scoring=scoring_name(scoring),
        n_trials=len(complete) + len(pruned), seconds=seconds + time.perf_counter() - t0, trials=trials,
        space=source, pruned=len(pruned), stopped="nothing to search" if source == "none" else stopped,
        threads=plan.describe(), study=study, cut=len(failed), partial=bool(best) and not complete)


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    return v


# ---- every family: a warm-up, then the rest where it pays --------------------------------------------------

WARMUP_SHARE = 0.3
LINEAR = {"linear_regression", "ridge", "logistic_regression"}  # baselines: a search never ends with only these
# families by the usual cost of one fit, cheapest first (the warm-up's order)
WARMUP_ORDER = ["linear_regression", "ridge", "logistic_regression", "hist_gradient_boosting", "random_forest"]


def in_reach(results: list[FamilyResult]) -> list[FamilyResult]:
    """The families worth more trials: those whose best cv score is no further behind the leader's than the
    spread (standard deviation) of the leader's fold scores; a family with nothing to search is done."""
    leader = max(results, key=lambda r: r.best_score)
    reach = max(float(np.std(leader.cv_scores)), 1e-9 * max(1.0, abs(leader.best_score)))
    return [r for r in results if r.space != "none" and leader.best_score - r.best_score <= reach]


TuneFn = Callable[..., FamilyResult]


def tune_families(specs: list[ModelSpec], preprocessor: Any, X: pd.DataFrame, y: pd.Series, task: str,
                  scoring: Any, cfg: SearchConfig, tune: TuneFn = tune_family,
                  log: Callable[[str], None] | None = None) -> list[FamilyResult]:
    """Every family's search with the time budget and the trial pool (n_trials x families) shared where it
    pays: an equal warm-up, then the rest in equal shares to the families within reach of the leader.

    `tune` has tune_family's signature (the flow passes its Prefect task); the folds are prepared once.
    Halving searches each family with its own n_trials candidates, as scikit-learn runs them. Only the
    winner's `best_estimator` is fitted on all rows (the one the flow goes on with).
    """
    say = log or (lambda _msg: None)
    if cfg.strategy == "halving":
        return [tune(s, preprocessor, X, y, task, scoring, cfg) for s in specs]
    started = time.time()
    deadline = None if cfg.time_budget is None else started + cfg.time_budget  # no fit of the search runs past it
    if cfg.backend == "local":
        start_workers(thread_plan(cfg.n_jobs))
    folds = prepare_folds(preprocessor, X, y, task, cfg)
    n = len(specs)
    pool = None if cfg.trials is None else cfg.trials * n
    warm_trials = None if pool is None else max(1, math.ceil(pool * WARMUP_SHARE / n))
    warm_budget = None if cfg.time_budget is None else cfg.time_budget * WARMUP_SHARE / n
    grace = 0.0 if warm_budget is None else warm_budget / 2  # a fit running at a phase's end may finish

    # the warm-up goes from the cheapest family to the dearest, so a slow first trial (cut at the deadline) can
    # only hold back families dearer than itself
    order = sorted(specs, key=lambda s: WARMUP_ORDER.index(s.family) if s.family in WARMUP_ORDER else 0)
    trees = [s for s in order if s.family not in LINEAR]
    results: dict[str, FamilyResult] = {}
    for s in order:  # a first trial runs past its share only while no tree family has a score to offer
        scored = any(results[t.family].cv_scores and not results[t.family].partial for t in trees if t.family in results)
        results[s.family] = tune(s, preprocessor, X, y, task, scoring, cfg, budget=warm_budget, max_trials=warm_trials,
                                 folds=folds, refit=False, grace=grace, deadline=deadline, free_start=not scored)
    if not any(results[s.family].cv_scores for s in trees or order):  # one configuration whatever it takes
        spec = next((s for s in trees or order if results[s.family].space != "none"), (trees or order)[0])
        say(f"Tuning: no {'tree model' if trees else 'trial'} was scored within the time budget; {spec.family}'s "
            "first configuration is fitted whatever the time")
        results[spec.family] = tune(spec, preprocessor, X, y, task, scoring, cfg, budget=None, max_trials=1,
                                    folds=folds, refit=False)
    # within reach of the leader, or not yet judged (a start was cut); the dearest first, so that a family whose
    # trial would not fit its share hands the share on at once
    reach = in_reach(list(results.values()))
    contenders = sorted((r for r in results.values() if r in reach
                         or (r.space != "none" and cut_starts(r.study))),
                        key=lambda r: -expected_seconds(r.study))
    behind = [r.family for r in results.values() if r not in contenders and r.space != "none"]
    say(f"Tuning: warm-up done ({', '.join(f'{r.family} {r.best_score:.4f}' for r in results.values())}); "
        + (f"the rest goes to {', '.join(r.family for r in contenders)}" if contenders else "nothing left to search")
        + (f"; {', '.join(behind)} behind or too slow for the budget, not searched further" if behind else ""))
    for i, r in enumerate(contenders):
        share = len(contenders) - i
        trials_left = None if pool is None else max(0, pool - sum(x.n_trials for x in results.values()))
        time_left = None if deadline is None else max(0.0, deadline - time.time())
        more_trials = None if trials_left is None else trials_left // share
        more_time = None if time_left is None else time_left / share
        spec = next(s for s in specs if s.family == r.family)
        if more_trials == 0 or (more_time is not None and more_time < 0.5):
            continue
        last = share == 1  # the last share ends the search: fits running then stop at the deadline
        results[r.family] = tune(spec, preprocessor, X, y, task, scoring, cfg, budget=more_time,
                                 max_trials=more_trials, resume=r, folds=folds, refit=False,
                                 grace=0.0 if last or more_time is None else more_time / 4, deadline=deadline,
                                 free_start=False)
    say(f"Tuning: search ended {time.time() - started:.1f} s after it started"
        + (f" (time budget {cfg.time_budget:g} s)" if cfg.time_budget is not None else ""))
    winner = max(results.values(), key=lambda r: r.best_score)
    t0 = time.perf_counter()
    with limits(fit_threads()):  # only the winner is fitted on every row; the others' pipelines stay unfitted
        winner.best_estimator.fit(X, y)
    winner.seconds += time.perf_counter() - t0
    return [results[s.family] for s in specs]


def pick_best(results: list[FamilyResult]) -> FamilyResult:
    """The family with the best cross-validated score (scorers are 'greater is better')."""
    return max(results, key=lambda r: r.best_score)


def refit_on_all(model: Any, train: pd.DataFrame, test: pd.DataFrame, target: str) -> Any:
    """A fresh copy of the gated configuration fitted on train + holdout.

    With time-ordered data the holdout is the newest rows; the gate judged the model fitted without
    them, and this copy (same hyperparameters, one fit more) is the one registered and served.
    """
    from sklearn.base import clone

    rows = pd.concat([train, test], ignore_index=True)
    return clone(model).fit(rows.drop(columns=[target]), rows[target])
