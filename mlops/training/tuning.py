"""Hyperparameter search per model family: Optuna's TPE sampler by default (its random sampler, or
scikit-learn's successive halving, as choices), trials that fall behind on the first folds pruned, a time
budget and a trial pool shared across families where it pays, trials in parallel on the cores (or a Dask
cluster) with trials x threads per trial never above the cores.

Default search spaces (used for a family listed without `search_space`; the one place they are written)
--------------------------------------------------------------------------------------------------------
=========================  ======================================================================================
family                     space (both tasks unless said)
=========================  ======================================================================================
hist_gradient_boosting     learning_rate loguniform 0.01-0.3; max_iter int (log) 50-1000 with early stopping
                           (fixed: early_stopping true, n_iter_no_change 20, validation_fraction 0.1);
                           max_leaf_nodes int (log) 7-255; max_depth choice none/4/6/8/12; min_samples_leaf
                           int (log) 2-200; l2_regularization loguniform 1e-4-10; max_features uniform 0.4-1.0
random_forest              n_estimators int (log) 50-500; max_depth choice none/8/16/32; min_samples_leaf int
                           (log) 1-50; max_features choice sqrt/0.25/0.5/0.75/1.0
logistic_regression        C loguniform 1e-4-100; l1_ratio choice 0 (L2) / 0.5 (elastic net) / 1 (L1); the saga
                           solver is used when l1_ratio > 0
ridge                      alpha loguniform 1e-3-1000
linear_regression          nothing to tune: one configuration (the summary says space "none")
=========================  ======================================================================================

A user's `search_space` replaces the default (write a narrower range to narrow it); `search_space: {}`
means no search, one configuration; a parameter fixed in `params` is left out of the default space. The
first trial of every search is the estimator's own default where it lies inside the space, so a search
never starts from a worse place than no search.

How trials are shared (`tune_families`): a short equal warm-up (30% of the time budget or of the trial
pool, n_trials x families), then the rest goes, in equal shares, to the families whose best cross-validated
score is within reach of the leader's (no further behind than the spread of the leader's fold scores).
A trial is one configuration fitted on the folds; a pruned trial (behind the median of earlier trials
after a fold) counts as a trial and is reported apart.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.base import BaseEstimator
from sklearn.pipeline import Pipeline

from mlops.core.config import ModelSpec, Param, SearchConfig

SCORERS = {
    ("classification", "roc_auc", True): "roc_auc",
    ("classification", "roc_auc", False): "roc_auc_ovr",
    ("classification", "f1", True): "f1",
    ("classification", "f1", False): "f1_macro",
    ("classification", "accuracy", True): "accuracy",
    ("classification", "accuracy", False): "accuracy",
    ("classification", "log_loss", True): "neg_log_loss",
    ("classification", "log_loss", False): "neg_log_loss",
    ("regression", "rmse", True): "neg_root_mean_squared_error",
    ("regression", "mae", True): "neg_mean_absolute_error",
    ("regression", "r2", True): "r2",
}


def scorer_for(task: str, metric: str, binary: bool, override: str | None = None, *,
               labels: Any = None, positive_class: Any = None) -> Any:
    """The scikit-learn scorer the search maximises: a scorer name, or for binary f1 with a positive class
    other than 1 a scorer that says which class is positive (sklearn's "f1" scores label 1).

    `labels` (the training target) let it resolve `positive_class` (None: 1 / True for 0/1 or boolean
    labels, else the larger label); a positive_class that is not a label is a DataError, raised here so a
    bad config stops before the search starts. `override` (search.scoring) wins over all of this.
    """
    if task == "classification" and binary and labels is not None:
        from mlops.training.evaluation import positive_label

        classes = sorted(pd.unique(pd.Series(labels).dropna()).tolist())
        positive = positive_label(classes, positive_class) if len(classes) == 2 else None
    else:
        positive = None
    if override:
        return override
    name = SCORERS[(task, metric, binary if task == "classification" else True)]
    if name == "f1" and positive is not None and not (positive == 1 and not isinstance(positive, str)):
        from sklearn.metrics import f1_score, make_scorer

        return make_scorer(f1_score, pos_label=positive, zero_division=0)
    return name


def scoring_name(scoring: Any) -> str:
    """A scorer as text for logs and parameters, e.g. `f1(pos_label='no')`."""
    if isinstance(scoring, str):
        return scoring
    func = getattr(getattr(scoring, "_score_func", None), "__name__", None)
    kwargs = {k: v for k, v in getattr(scoring, "_kwargs", {}).items() if k != "zero_division"}
    if func:
        return f"{func.removesuffix('_score')}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())})"
    return str(scoring)


def _p(type_: str, low: float | None = None, high: float | None = None, values: list[Any] | None = None,
       log: bool = False) -> Param:
    return Param(type=type_, low=low, high=high, values=values, log=log)  # type: ignore[arg-type]


DEFAULT_SPACES: dict[str, dict[str, Param]] = {
    "hist_gradient_boosting": {
        "learning_rate": _p("loguniform", 0.01, 0.3),
        "max_iter": _p("int", 50, 1000, log=True),
        "max_leaf_nodes": _p("int", 7, 255, log=True),
        "max_depth": _p("choice", values=[None, 4, 6, 8, 12]),
        "min_samples_leaf": _p("int", 2, 200, log=True),
        "l2_regularization": _p("loguniform", 1e-4, 10.0),
        "max_features": _p("uniform", 0.4, 1.0),
    },
    "random_forest": {
        "n_estimators": _p("int", 50, 500, log=True),
        "max_depth": _p("choice", values=[None, 8, 16, 32]),
        "min_samples_leaf": _p("int", 1, 50, log=True),
        "max_features": _p("choice", values=["sqrt", 0.25, 0.5, 0.75, 1.0]),
    },
    "logistic_regression": {
        "C": _p("loguniform", 1e-4, 100.0),
        "l1_ratio": _p("choice", values=[0.0, 0.5, 1.0]),
    },
    "ridge": {"alpha": _p("loguniform", 1e-3, 1000.0)},
    "linear_regression": {},
}
# fixed parameters that go with a default space (a user's params win)
DEFAULT_FIXED: dict[str, dict[str, Any]] = {
    "hist_gradient_boosting": {"early_stopping": True, "n_iter_no_change": 20, "validation_fraction": 0.1},
}
SPACE_LABELS = {"default": "default space", "config": "config space", "none": "none",
                "reused": "champion's configuration"}


def resolve_space(spec: ModelSpec) -> tuple[dict[str, Param], dict[str, Any], str]:
    """The space a family searches, its fixed parameters, and where the space comes from: `default` (listed
    without a search_space), `config` (the user's), `none` (search_space: {} or nothing to tune)."""
    if spec.search_space is None:
        space = {k: v for k, v in DEFAULT_SPACES[spec.family].items() if k not in spec.params}
        fixed = DEFAULT_FIXED.get(spec.family, {}) | dict(spec.params)
        return space, fixed, "default" if space else "none"
    return dict(spec.search_space), dict(spec.params), "config" if spec.search_space else "none"


def make_estimator(family: str, task: str, params: dict[str, Any], seed: int) -> BaseEstimator:
    """A fresh estimator of the family with fixed parameters; n_jobs=1 inside, parallelism is across trials
    (threads inside one fit are capped by the caller, see `thread_plan`)."""
    from sklearn.ensemble import (
        HistGradientBoostingClassifier,
        HistGradientBoostingRegressor,
        RandomForestClassifier,
        RandomForestRegressor,
    )
    from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge

    clf = task == "classification"
    if family == "logistic_regression":
        base: dict[str, Any] = {"max_iter": 2000, "random_state": seed}
        if params.get("l1_ratio") and "solver" not in params:
            base |= {"solver": "saga", "max_iter": 1000}  # lbfgs supports only l1_ratio 0 (pure L2)
        return LogisticRegression(**(base | params))
    if family == "linear_regression":
        return LinearRegression(**params)
    if family == "ridge":
        return Ridge(**({"random_state": seed} | params))
    if family == "random_forest":
        cls = RandomForestClassifier if clf else RandomForestRegressor
        return cls(**({"random_state": seed, "n_jobs": 1} | params))
    if family == "hist_gradient_boosting":
        cls = HistGradientBoostingClassifier if clf else HistGradientBoostingRegressor
        return cls(**({"random_state": seed} | params))
    raise ValueError(f"unknown model family {family!r}")


class _LogInt:
    """An integer drawn on a log scale, for scikit-learn's samplers (halving)."""

    def __init__(self, low: int, high: int) -> None:
        self.dist = stats.loguniform(low, high + 1)
        self.high = high

    def rvs(self, random_state: Any = None) -> int:
        return min(int(self.dist.rvs(random_state=random_state)), self.high)


def distribution(p: Param) -> Any:
    """A Param as a scikit-learn sampler distribution (successive halving)."""
    if p.type == "choice":
        return list(p.values or [])
    assert p.low is not None and p.high is not None
    if p.type == "int":
        return _LogInt(int(p.low), int(p.high)) if p.log else stats.randint(int(p.low), int(p.high) + 1)
    if p.type == "uniform":
        return stats.uniform(p.low, p.high - p.low)
    return stats.loguniform(p.low, p.high)


def optuna_distribution(p: Param) -> Any:
    """A Param as an Optuna distribution."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if p.type == "choice":
        return CategoricalDistribution(list(p.values or []))
    assert p.low is not None and p.high is not None
    if p.type == "int":
        return IntDistribution(int(p.low), int(p.high), log=p.log)
    return FloatDistribution(p.low, p.high, log=p.type == "loguniform")


def default_start(family: str, task: str, space: dict[str, Param], fixed: dict[str, Any]) -> dict[str, Any]:
    """The estimator's own defaults for the searched parameters that lie inside the space (the first trial)."""
    defaults = make_estimator(family, task, fixed, 0).get_params()
    start = {}
    for name, p in space.items():
        value = defaults.get(name)
        if p.type == "choice":
            if any(value == v and type(value) is type(v) for v in p.values or []):
                start[name] = value
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and p.low <= value <= p.high:  # type: ignore[operator]
            start[name] = int(value) if p.type == "int" else float(value)
    return start


# ---- threads: trials x threads per trial <= cores --------------------------------------------------------


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS says, else the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class ThreadPlan:
    """How many trials run at once and how many threads each fit may start."""

    trials: int
    per_trial: int

    def describe(self) -> str:
        return f"{self.trials} trial(s) at once x {self.per_trial} thread(s)"


def thread_plan(n_jobs: int, cores: int | None = None) -> ThreadPlan:
    """`n_jobs` trials at once (-1: one per core, -2: all cores but one, as joblib counts), never more than the
    cores; the cores left go to each trial's threads (OpenMP, BLAS), so trials x threads never exceed them."""
    cores = cores or available_cores()
    at_once = max(1, cores + 1 + n_jobs) if n_jobs < 0 else max(1, n_jobs)
    at_once = min(at_once, cores)
    return ThreadPlan(at_once, max(1, cores // at_once))


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


def splitter(task: str, cv_folds: int, seed: int) -> Any:
    from sklearn.model_selection import KFold, StratifiedKFold

    return (StratifiedKFold(cv_folds, shuffle=True, random_state=seed) if task == "classification"
            else KFold(cv_folds, shuffle=True, random_state=seed))


def prepare_folds(preprocessor: Any, X: pd.DataFrame, y: pd.Series, task: str, cfg: SearchConfig) -> Folds:
    """Fit the feature pipeline on each fold's training part and transform both parts."""
    from sklearn.base import clone
    from threadpoolctl import threadpool_limits

    t0 = time.perf_counter()
    parts = []
    y_arr = y.to_numpy()
    with threadpool_limits(limits=available_cores()):
        for tr, va in splitter(task, cfg.cv_folds, cfg.seed).split(X, y_arr):
            pre = clone(preprocessor)
            parts.append((pre.fit_transform(X.iloc[tr], y_arr[tr]), y_arr[tr], pre.transform(X.iloc[va]), y_arr[va]))
    return Folds(parts, time.perf_counter() - t0)


_LOADED: dict[str, Any] = {}


def _fold_data(source: Any) -> tuple[list[tuple[Any, Any, Any, Any]], Any]:
    if isinstance(source, str):  # a file in a worker process: memory-mapped once per process
        if source not in _LOADED:
            import joblib

            _LOADED.clear()
            _LOADED[source] = joblib.load(source, mmap_mode="r")
        return _LOADED[source]  # type: ignore[no-any-return]
    return source  # type: ignore[no-any-return]


def fit_fold(source: Any, fold: int, family: str, task: str, params: dict[str, Any], seed: int,
             threads: int) -> tuple[float, float]:
    """One trial's fit on one fold, at most `threads` threads: (validation score, seconds). Runs in a worker."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import check_scoring
    from threadpoolctl import threadpool_limits

    parts, scoring = _fold_data(source)
    X_tr, y_tr, X_va, y_va = parts[fold]
    t0 = time.perf_counter()
    with threadpool_limits(limits=threads), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = make_estimator(family, task, params, seed).fit(X_tr, y_tr)
        score = check_scoring(model, scoring=scoring)(model, X_va, y_va)
    return float(score), time.perf_counter() - t0


class _Inline:
    """Runs each fit at once in this process (one trial at a time)."""

    def __init__(self, folds: Folds, scorer: Any) -> None:
        self.source = (folds.parts, scorer)

    def submit(self, *args: Any) -> Future[tuple[float, float]]:
        fut: Future[tuple[float, float]] = Future()
        try:
            fut.set_result(fit_fold(self.source, *args))
        except BaseException as exc:  # noqa: BLE001 - handed over like a worker's error
            fut.set_exception(exc)
        return fut

    def wait(self, futures: list[Any], timeout: float | None, all_: bool) -> set[Any]:
        return set(futures)

    def stop(self) -> None:
        pass


class _Processes:
    """Worker processes on this machine (loky, reused between searches), each fit memory-mapping the folds."""

    def __init__(self, folds: Folds, scorer: Any, plan: ThreadPlan, folder: Path) -> None:
        self.path = str(folds.file(folder, scorer))
        self.executor = _executor(plan)

    def submit(self, *args: Any) -> Any:
        return self.executor.submit(fit_fold, self.path, *args)

    def wait(self, futures: list[Any], timeout: float | None, all_: bool) -> set[Any]:
        done, _ = wait_futures(futures, timeout=timeout, return_when="ALL_COMPLETED" if all_ else FIRST_COMPLETED)
        return set(done)

    def stop(self) -> None:
        """Ends fits still running when the budget is spent (the workers are started again when needed)."""
        _EXECUTORS.pop((self.executor.plan.trials, self.executor.plan.per_trial), None)
        self.executor.shutdown(wait=True, kill_workers=True)


_EXECUTORS: dict[tuple[int, int], Any] = {}  # this module's own worker pools (not joblib's shared one)


def _executor(plan: ThreadPlan) -> Any:
    """A pool of `plan.trials` worker processes whose native thread pools start `plan.per_trial` threads; kept
    for the next search (workers that sat idle for 5 minutes end by themselves)."""
    from joblib.externals.loky import ProcessPoolExecutor

    key = (plan.trials, plan.per_trial)
    pool = _EXECUTORS.get(key)
    if pool is None or getattr(pool, "_broken", False) or getattr(pool, "_shutdown_thread", False):
        threads = str(plan.per_trial)
        env = {"OMP_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
        pool = ProcessPoolExecutor(max_workers=plan.trials, env=env, timeout=300)
        pool.plan = plan
        _EXECUTORS[key] = pool
    return pool


class _Dask:
    """The Dask cluster's workers: the folds scattered to every worker once, one thread per fit."""

    def __init__(self, client: Any, folds: Folds, scorer: Any) -> None:
        self.client = client
        self.data = client.scatter((folds.parts, scorer), broadcast=True)
        self.submitted: list[Any] = []

    def submit(self, *args: Any) -> Any:
        fut = self.client.submit(fit_fold, self.data, *args, pure=False)
        self.submitted.append(fut)
        return fut

    def wait(self, futures: list[Any], timeout: float | None, all_: bool) -> set[Any]:
        # polled: distributed.wait needs a default client, and this one is not made the default
        until = None if timeout is None else time.monotonic() + timeout
        while True:
            done = {f for f in futures if f.done()}
            if (len(done) == len(futures) if all_ else done) or (until is not None and time.monotonic() >= until):
                return done
            time.sleep(0.02)

    def stop(self) -> None:
        """Cancels the fits not started yet (a Dask worker cannot stop a running one)."""
        self.client.cancel([f for f in self.submitted if not f.done()])


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

    def leaderboard_row(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "cv_score": round(self.best_score, 5),
            "cv_std": round(float(np.std(self.cv_scores)), 5),
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
        return (f"{self.family}: best cv score {self.best_score:.4f} (+/- {np.std(self.cv_scores):.4f}) of "
                f"{self.n_trials} trial(s){pruned} in {self.seconds:.1f} s, {SPACE_LABELS[self.space]}"
                + (f", stopped by the {self.stopped}" if self.stopped in {"time budget", "trial count"} else ""))


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


@contextlib.contextmanager
def _dask_client(cfg: SearchConfig) -> Iterator[Any]:
    if cfg.backend != "dask":
        yield None
        return
    from mlops.core.dask import connect, scheduler_address
    from mlops.core.settings import get_settings

    with connect(scheduler_address(cfg.dask_address, get_settings(), "search"), "search") as client:
        yield client


@contextlib.contextmanager
def _backend(cfg: SearchConfig) -> Iterator[None]:
    """joblib's Dask backend for scikit-learn's own searches (halving)."""
    if cfg.backend != "dask":
        yield
        return
    import joblib

    with _dask_client(cfg) as client, joblib.parallel_backend("dask", client=client):
        yield


def _plan_for(cfg: SearchConfig, client: Any) -> ThreadPlan:
    if client is None:
        return thread_plan(cfg.n_jobs)
    slots = max(1, sum(client.nthreads().values()))  # each Dask worker already runs one task per thread
    return ThreadPlan(min(slots, cfg.n_jobs) if cfg.n_jobs > 0 else slots, 1)


def _new_study(cfg: SearchConfig, plan: ThreadPlan, space: dict[str, Param]) -> Any:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if cfg.strategy == "random":
        sampler: Any = optuna.samplers.RandomSampler(seed=cfg.seed)
    else:
        sampler = optuna.samplers.TPESampler(seed=cfg.seed, multivariate=True, constant_liar=True,
                                             n_startup_trials=max(5, min(10, 2 * len(space))))
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
) -> FamilyResult:
    """Search one family's space with cross-validation and refit the best on all of X.

    `budget` (seconds) and `max_trials` default to the config's time_budget and n_trials; `resume` goes on
    with an earlier result's study (its trials count too); `folds` are prepared by `prepare_folds` (once for
    every family); `refit` False leaves the final fit on all rows to a later call. Fits still running when
    the budget is spent are stopped after `grace` more seconds (and do not count).
    """
    budget = cfg.time_budget if budget == -1.0 else budget
    max_trials = cfg.trials if max_trials == -1 else max_trials
    space, fixed, source = resolve_space(spec)
    if cfg.strategy == "halving" and source != "none":
        return _halving(spec, preprocessor, X, y, task, scoring, cfg, space, fixed, source)
    t0 = time.perf_counter()
    folds = folds or prepare_folds(preprocessor, X, y, task, cfg)
    distributions = {k: optuna_distribution(v) for k, v in space.items()}
    with _dask_client(cfg) as client:
        plan = _plan_for(cfg, client)
        study = resume.study if resume is not None and resume.study is not None else _new_study(cfg, plan, space)
        if resume is None and source != "none":
            start = default_start(spec.family, task, space, fixed)
            if start:
                study.enqueue_trial(start, skip_if_exists=True)
        if source == "none":
            max_trials, budget = (0 if resume is not None else 1), None
        stopped = _run_trials(study, spec.family, task, distributions, fixed, folds, scoring, cfg, plan, client,
                              budget, max_trials, grace)
    if max_trials == 0 and resume is not None:
        stopped = resume.stopped
    return _result(spec.family, study, preprocessor, X, y, task, scoring, cfg, fixed, source, plan, stopped,
                   time.perf_counter() - t0 + (resume.seconds if resume else 0.0), refit)


def _run_trials(study: Any, family: str, task: str, distributions: dict[str, Any], fixed: dict[str, Any],
                folds: Folds, scoring: Any, cfg: SearchConfig, plan: ThreadPlan, client: Any,
                budget: float | None, max_trials: int | None, grace: float = 0.0) -> str:
    """Ask, fit fold by fold, report, prune, tell, until `max_trials` more trials or `budget` seconds are spent.

    Without a budget the order is deterministic (each step waits for every running fit, results are told in
    the order the trials were asked); with one, a freed slot takes the next fit at once. A family's first
    finished trial is waited for whatever the budget (a search always has a configuration to offer).
    """
    import optuna

    if max_trials == 0:
        return "trial count"
    deadline = None if budget is None else time.monotonic() + budget
    finished = sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    first_batch: set[int] = set()  # a new search's first trial (the estimator's defaults) always finishes

    def spent() -> bool:
        return deadline is not None and not first_batch and time.monotonic() >= deadline

    with contextlib.ExitStack() as stack:
        if client is not None:
            runner: Any = _Dask(client, folds, scoring)
        elif plan.trials > 1:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mlops-folds-")))
            runner = _Processes(folds, scoring, plan, folder)
        else:
            runner = _Inline(folds, scoring)
            stack.enter_context(_limits(plan.per_trial))
        asked, running = 0, {}  # future -> (trial, fold, scores so far, parameters)
        while True:
            past_deadline = deadline is not None and time.monotonic() >= deadline
            while (len(running) < plan.trials and (max_trials is None or asked < max_trials)
                   and (not past_deadline or (finished == 0 and asked == 0))):
                trial = study.ask(distributions)
                if finished == 0 and asked == 0:
                    first_batch.add(trial.number)
                asked += 1
                params = fixed | trial.params
                running[runner.submit(0, family, task, params, cfg.seed, plan.per_trial)] = (trial, 0, [], params)
            if not running:
                return "time budget" if past_deadline or spent() else "trial count"
            timeout = None if deadline is None or first_batch else max(0.0, deadline + grace - time.monotonic())
            done = runner.wait(list(running), timeout, deadline is None)
            if not done:  # the budget is spent with fits still running: stop them, they do not count
                for trial, *_ in running.values():
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)
                runner.stop()
                return "time budget"
            for fut in sorted(done, key=lambda f: running[f][0].number):
                trial, fold, scores, params = running.pop(fut)
                if fold == len(folds.parts) - 1 or trial.number not in first_batch:
                    first_batch.discard(trial.number)
                try:
                    score, _ = fut.result()
                except Exception:
                    for other, *_ in running.values():
                        study.tell(other, state=optuna.trial.TrialState.FAIL)
                    runner.stop()
                    raise
                scores = [*scores, score]
                trial.report(float(np.mean(scores)), fold)
                if len(scores) == len(folds.parts):
                    trial.set_user_attr("folds", scores)
                    study.tell(trial, float(np.mean(scores)))
                    finished += 1
                elif trial.should_prune() and trial.number not in first_batch:
                    trial.set_user_attr("folds", scores)
                    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                elif spent():
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)  # no time for its other folds
                else:
                    nxt = runner.submit(fold + 1, family, task, params, cfg.seed, plan.per_trial)
                    running[nxt] = (trial, fold + 1, scores, params)


@contextlib.contextmanager
def _limits(threads: int) -> Iterator[None]:
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=threads):
        yield


def _result(family: str, study: Any, preprocessor: Any, X: pd.DataFrame, y: pd.Series, task: str, scoring: Any,
            cfg: SearchConfig, fixed: dict[str, Any], source: str, plan: ThreadPlan, stopped: str, seconds: float,
            refit: bool) -> FamilyResult:
    from optuna.trial import TrialState
    from sklearn.base import clone

    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    if not complete:
        raise RuntimeError(f"{family}: no trial finished within the time budget; give search.time_budget more "
                           "seconds or use fewer rows")
    best = max(complete, key=lambda t: t.value)
    params = {k: _jsonable(v) for k, v in best.params.items()}
    pipe = Pipeline([("features", clone(preprocessor)), ("model", make_estimator(family, task, fixed | params, cfg.seed))])
    t0 = time.perf_counter()
    if refit:
        with _limits(available_cores()):
            pipe.fit(X, y)
    trials = [{"params": {k: _jsonable(v) for k, v in t.params.items()}, "state": t.state.name.lower(),
               "mean_score": float(np.mean(t.user_attrs.get("folds", [np.nan]))),
               "std_score": float(np.std(t.user_attrs.get("folds", [np.nan]))),
               "folds": t.user_attrs.get("folds", [])}
              for t in complete + pruned]
    return FamilyResult(
        family=family, best_estimator=pipe, best_params=params, best_score=float(best.value),
        cv_scores=list(best.user_attrs["folds"]), scoring=scoring_name(scoring), n_trials=len(complete) + len(pruned),
        seconds=seconds + time.perf_counter() - t0, trials=trials, space=source, pruned=len(pruned),
        stopped="nothing to search" if source == "none" else stopped, threads=plan.describe(), study=study)


def _halving(spec: ModelSpec, preprocessor: Any, X: pd.DataFrame, y: pd.Series, task: str, scoring: Any,
             cfg: SearchConfig, space: dict[str, Param], fixed: dict[str, Any], source: str) -> FamilyResult:
    """scikit-learn's successive halving over n_trials candidates; trials counts the candidates (configurations),
    not the rounds."""
    from sklearn.base import clone
    from sklearn.experimental import enable_halving_search_cv  # noqa: F401
    from sklearn.model_selection import HalvingRandomSearchCV

    pipe = Pipeline([("features", clone(preprocessor)), ("model", make_estimator(spec.family, task, fixed, cfg.seed))])
    plan = thread_plan(cfg.n_jobs)
    search = HalvingRandomSearchCV(
        pipe, {f"model__{k}": distribution(v) for k, v in space.items()}, n_candidates=max(cfg.trials or 8, 2),
        scoring=scoring, cv=splitter(task, cfg.cv_folds, cfg.seed), n_jobs=plan.trials, random_state=cfg.seed,
        refit=True, error_score="raise", factor=2, min_resources="exhaust")
    t0 = time.perf_counter()
    with _backend(cfg), _limits(plan.per_trial):
        search.fit(X, y)
    res = search.cv_results_
    best = int(search.best_index_)
    folds = [float(res[f"split{i}_test_score"][best]) for i in range(cfg.cv_folds) if f"split{i}_test_score" in res]
    trials = [{"params": {k.removeprefix("model__"): _jsonable(v) for k, v in p.items()}, "round": int(res["iter"][i]),
               "mean_score": float(res["mean_test_score"][i]), "std_score": float(res["std_test_score"][i])}
              for i, p in enumerate(res["params"])]
    return FamilyResult(
        family=spec.family, best_estimator=search.best_estimator_,
        best_params={k.removeprefix("model__"): _jsonable(v) for k, v in search.best_params_.items()},
        best_score=float(search.best_score_), cv_scores=folds, scoring=scoring_name(scoring),
        n_trials=int(search.n_candidates_[0]), seconds=time.perf_counter() - t0, trials=trials, space=source,
        stopped="halving", threads=plan.describe())


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    return v


# ---- every family: a warm-up, then the rest where it pays --------------------------------------------------

WARMUP_SHARE = 0.3


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
    started = time.monotonic()
    folds = prepare_folds(preprocessor, X, y, task, cfg)
    n = len(specs)
    pool = None if cfg.trials is None else cfg.trials * n
    warm_trials = None if pool is None else max(1, math.ceil(pool * WARMUP_SHARE / n))
    warm_budget = None if cfg.time_budget is None else cfg.time_budget * WARMUP_SHARE / n
    grace = 0.0 if warm_budget is None else warm_budget / 2  # a fit running at a phase's end may finish
    results = {s.family: tune(s, preprocessor, X, y, task, scoring, cfg, budget=warm_budget, max_trials=warm_trials,
                              folds=folds, refit=False, grace=grace) for s in specs}
    contenders = in_reach(list(results.values()))
    behind = [r.family for r in results.values() if r not in contenders and r.space != "none"]
    say(f"Tuning: warm-up done ({', '.join(f'{r.family} {r.best_score:.4f}' for r in results.values())}); "
        + (f"the rest goes to {', '.join(r.family for r in contenders)}" if contenders else "nothing left to search")
        + (f"; {', '.join(behind)} clearly behind, not searched further" if behind else ""))
    for i, r in enumerate(contenders):
        share = len(contenders) - i
        trials_left = None if pool is None else max(0, pool - sum(x.n_trials for x in results.values()))
        time_left = None if cfg.time_budget is None else max(0.0, cfg.time_budget - (time.monotonic() - started))
        more_trials = None if trials_left is None else trials_left // share
        more_time = None if time_left is None else time_left / share
        spec = next(s for s in specs if s.family == r.family)
        if more_trials == 0 or (more_time is not None and more_time < 0.5):
                continue
        last = share == 1  # the last share ends the search: fits running then are stopped
        results[r.family] = tune(spec, preprocessor, X, y, task, scoring, cfg, budget=more_time,
                                 max_trials=more_trials, resume=r, folds=folds, refit=False,
                                 grace=0.0 if last or more_time is None else more_time / 4)
    winner = max(results.values(), key=lambda r: r.best_score)
    t0 = time.perf_counter()
    with _limits(available_cores()):  # only the winner is fitted on every row; the others' pipelines stay unfitted
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
