"""One trial's fits: the estimator of a family, the threads a fit may start, a fit on one fold that stops itself
at a deadline, and where fits run (in this process, in worker processes, on a Dask cluster).

Fits that can be cut: forests and histogram gradient boosting grow in rounds (scikit-learn's `warm_start`, the
same trees and iterations as one fit), each round sized to the pace of the last one, so a fit still running when
the search's time is spent ends at its deadline instead of running on; the other families fit in well under a
round's time. A cut fit raises `OutOfTime`; its trial does not count.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sklearn.base import BaseEstimator

from mlops.core.config import SearchConfig
from mlops.core.startup import NATIVE_THREAD_VARS, available_cores


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


# ---- threads: trials x threads per trial <= cores --------------------------------------------------------


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


def fit_threads() -> int:
    """The threads one fit in this process may start: every core, or one when the machine is already busy (load
    average above half the cores). OpenMP threads wait for each other by spinning; on a busy machine a 2-thread
    fit was measured 10-50x slower than a 1-thread one (load 14 on 2 cores)."""
    cores = available_cores()
    try:
        busy = os.getloadavg()[0] > cores / 2
    except OSError:  # no load average on this system
        busy = False
    return 1 if busy else cores


@contextlib.contextmanager
def limits(threads: int) -> Iterator[None]:
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=threads):
        yield


def splitter(task: str, cv_folds: int, seed: int) -> Any:
    from sklearn.model_selection import KFold, StratifiedKFold

    return (StratifiedKFold(cv_folds, shuffle=True, random_state=seed) if task == "classification"
            else KFold(cv_folds, shuffle=True, random_state=seed))


# ---- one fit that stops at a deadline ----------------------------------------------------------------------


class OutOfTime(Exception):  # noqa: N818 - a signal, not an error a user sees
    """A fit reached its deadline before it finished (its trial does not count)."""


GROWN = {"random_forest": "n_estimators", "hist_gradient_boosting": "max_iter"}  # what grows round by round


FIRST_ROUND = 10  # trees or iterations grown before the pace is known


def fit_until(model: Any, family: str, X: Any, y: Any, stop_at: float | None) -> Any:
    """`model.fit(X, y)`, or with a deadline (`time.time()` seconds) for a forest or boosting: grown in rounds
    (10 trees or 11 iterations first, then a tenth of them or half of what is grown, whichever is more: few rounds,
    each re-bins the data), each round no larger than what the last round's pace fits before the deadline, and
    `OutOfTime` raised once not one more tree or iteration would (or a round ended past it: the pace fell). So
    a fit ends near its deadline even when a round of a large model is long or the machine slows down. Warm
    starts continue the same random streams, so the grown model equals one fit's."""
    attr = GROWN.get(family)
    if stop_at is None or attr is None or getattr(model, "warm_start", True):
        return model.fit(X, y)
    total = int(getattr(model, attr))
    if time.time() >= stop_at:
        raise OutOfTime
    grown, pace = 0, None  # seconds per tree or iteration in the last round
    # boosting's early stopping continues across warm starts only from a first round longer than its patience
    # (scikit-learn 1.9: a first round of exactly `n_iter_no_change` iterations grows one more than one fit)
    first = max(FIRST_ROUND, int(getattr(model, "n_iter_no_change", 0) or 0) + 1)
    model.set_params(warm_start=True)
    while grown < total:
        if pace is None:
            step = first
        else:  # what the last round's pace fits before the deadline, at most the usual round
            step = min(max(FIRST_ROUND, math.ceil(total / 10), grown // 2), int((stop_at - time.time()) / pace))
            if step < 1:
                raise OutOfTime
        started, before = time.time(), grown
        grown = min(total, grown + step)
        model.set_params(**{attr: grown}).fit(X, y)
        if attr == "max_iter" and model.n_iter_ < grown:  # early stopping ended it
            break
        now = time.time()
        if grown < total and now >= stop_at:
            raise OutOfTime
        pace = max(now - started, 1e-9) / (grown - before)
    return model.set_params(warm_start=False, **{attr: total})


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
             threads: int, stop_at: float | None = None) -> tuple[float, float]:
    """One trial's fit on one fold, at most `threads` threads, cut at `stop_at` (`time.time()` seconds; None:
    no deadline): (validation score, seconds). Runs in a worker."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import check_scoring
    from threadpoolctl import threadpool_limits

    parts, scoring = _fold_data(source)
    X_tr, y_tr, X_va, y_va = parts[fold]
    t0 = time.perf_counter()
    with threadpool_limits(limits=threads), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = fit_until(make_estimator(family, task, params, seed), family, X_tr, y_tr, stop_at)
        score = check_scoring(model, scoring=scoring)(model, X_va, y_va)
    return float(score), time.perf_counter() - t0


def _ready() -> None:
    """Run once in a fresh worker so its first fit does not pay for the imports."""
    import sklearn.ensemble  # noqa: F401
    import sklearn.linear_model  # noqa: F401
    import sklearn.metrics  # noqa: F401


# ---- where fits run --------------------------------------------------------------------------------------


class Inline:
    """Runs each fit at once in this process (one trial at a time)."""

    def __init__(self, parts: Any, scorer: Any) -> None:
        self.source = (parts, scorer)

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


class Processes:
    """Worker processes on this machine (loky, reused between searches), each fit memory-mapping the folds."""

    def __init__(self, path: Path, plan: ThreadPlan) -> None:
        self.path = str(path)
        self.executor = executor(plan)

    def submit(self, *args: Any) -> Any:
        return self.executor.submit(fit_fold, self.path, *args)

    def wait(self, futures: list[Any], timeout: float | None, all_: bool) -> set[Any]:
        done, _ = wait_futures(futures, timeout=timeout, return_when="ALL_COMPLETED" if all_ else FIRST_COMPLETED)
        return set(done)

    def stop(self) -> None:
        """Ends fits that did not stop at their deadline (the workers are started again when needed)."""
        _EXECUTORS.pop((self.executor.plan.trials, self.executor.plan.per_trial), None)
        self.executor.shutdown(wait=True, kill_workers=True)


_EXECUTORS: dict[tuple[int, int], Any] = {}  # this module's own worker pools (not joblib's shared one)
IDLE_TIMEOUT = 300  # seconds a worker sits idle before it ends by itself


def executor(plan: ThreadPlan) -> Any:
    """A pool of `plan.trials` worker processes whose native thread pools start `plan.per_trial` threads; kept
    for the next search (workers that sat idle for `IDLE_TIMEOUT` end by themselves)."""
    from joblib.externals.loky import ProcessPoolExecutor

    key = (plan.trials, plan.per_trial)
    pool = _EXECUTORS.get(key)
    if pool is None or getattr(pool, "_broken", False) or getattr(pool, "_shutdown_thread", False):
        threads = str(plan.per_trial)
        # passive: threads waiting in a parallel region sleep instead of spinning, which on a busy machine made
        # a 2-thread fit 10-30x slower than a 1-thread one (measured at load 14 on 2 cores)
        env = {**dict.fromkeys(NATIVE_THREAD_VARS, threads), "OMP_WAIT_POLICY": "PASSIVE"}
        pool = ProcessPoolExecutor(max_workers=plan.trials, env=env, timeout=IDLE_TIMEOUT)
        pool.plan = plan
        _EXECUTORS[key] = pool
    pool.used = time.monotonic()
    return pool


def warm_executor(plan: ThreadPlan) -> Any | None:
    """The pool `executor` would give when its workers are still up (used within the last `IDLE_TIMEOUT`, less
    a margin), else None: starting workers (about 1.5 s of imports on 2 cores) costs more than a few small fits
    run side by side save."""
    pool = _EXECUTORS.get((plan.trials, plan.per_trial))
    if plan.trials < 2 or pool is None or time.monotonic() - getattr(pool, "used", -math.inf) > IDLE_TIMEOUT - 30:
        return None
    return executor(plan)


def start_workers(plan: ThreadPlan) -> None:
    """Start the worker processes and their imports now (while the folds are prepared), not on the first fit."""
    if plan.trials > 1:
        pool = executor(plan)
        for _ in range(plan.trials):
            pool.submit(_ready)


@contextlib.contextmanager
def dask_client(cfg: SearchConfig) -> Iterator[Any]:
    if cfg.backend != "dask":
        yield None
        return
    # here, not at the top: the search's worker processes import this module (fit_fold), and the
    # settings these pull in (pydantic-settings) serve only a search on a Dask cluster
    from mlops.core.dask import connect, scheduler_address
    from mlops.core.settings import get_settings

    with connect(scheduler_address(cfg.dask_address, get_settings(), "search"), "search") as client:
        yield client


@contextlib.contextmanager
def joblib_backend(cfg: SearchConfig) -> Iterator[None]:
    """joblib's Dask backend for scikit-learn's own searches (halving)."""
    if cfg.backend != "dask":
        yield
        return
    import joblib

    with dask_client(cfg) as client, joblib.parallel_backend("dask", client=client):
        yield


def plan_for(cfg: SearchConfig, client: Any) -> ThreadPlan:
    if client is None:
        return thread_plan(cfg.n_jobs)
    slots = max(1, sum(client.nthreads().values()))  # each Dask worker already runs one task per thread
    return ThreadPlan(min(slots, cfg.n_jobs) if cfg.n_jobs > 0 else slots, 1)


class Dask:
    """The Dask cluster's workers: the folds scattered to every worker once, one thread per fit. Deadlines are
    read from each worker's clock."""

    def __init__(self, client: Any, parts: Any, scorer: Any) -> None:
        self.client = client
        self.data = client.scatter((parts, scorer), broadcast=True)
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
