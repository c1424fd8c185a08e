"""The replay's second process: work that does not depend on what the main process is doing runs beside it.

The replay's main process runs the policy and the all-history baseline, one thread at a time. Two parts of the
work depend on neither as they run, so they go to one worker process beside it: the baselines on the last k
periods (the all-history baseline's configuration refitted on fewer rows, each model scored on every later window)
and the policy's fresh-model check of each window (mlops.monitoring.payoff), which fits while the main process
retrains the all-history baseline on the same window. Two processes, one thread each. Before the main process
spreads over every core (a search's trials, the window choice's side-by-side fits) it empties the lane
(`Lane.quiet`, running the tasks still waiting their turn itself), so the processes never outnumber the cores.
With one core the lane runs each task in process as it arrives. The same fits and scores either way.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from typing import Any

import numpy as np
import pandas as pd

from mlops.core.config import PipelineConfig
from mlops.core.startup import NATIVE_THREAD_VARS, available_cores
from mlops.monitoring.payoff import FreshGain, fresh_gain
from mlops.monitoring.yardstick import Board, score_row

_board: Board | None = None  # the windows and the configuration, loaded once per worker process
_cfg: PipelineConfig | None = None


def _load(board: Board | None, cfg: PipelineConfig) -> None:
    global _board, _cfg
    _board, _cfg = board, cfg


def fit_and_score(estimator: Any, X: pd.DataFrame, y: pd.Series, j: int) -> tuple[np.ndarray | None, float]:
    """Fit `estimator` and score it on the windows from j on: (its scores, or None when it cannot fit these rows;
    the fit's seconds)."""
    assert _board is not None and _cfg is not None, "the lane's windows were not loaded"
    started = time.perf_counter()
    try:
        model = estimator.fit(X, y)
    except ValueError:  # too few rows or one class only: the family keeps its model
        return None, time.perf_counter() - started
    seconds = time.perf_counter() - started
    return score_row(model, _board, j, _cfg), seconds


def check_fresh_gain(champion: Any, history: pd.DataFrame, window: pd.DataFrame) -> FreshGain | None:
    """`payoff.fresh_gain` with the lane's configuration."""
    assert _cfg is not None, "the lane's configuration was not loaded"
    return fresh_gain(champion, history, window, _cfg)


def _run_here(board: Board | None, cfg: PipelineConfig, task: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    """Run a lane task in this process, with the lane's windows and configuration."""
    previous = _board, _cfg
    _load(board, cfg)
    try:
        return task(*args)
    finally:
        _load(*previous)


class Lane:
    """Tasks handed over as they come, their results collected by key.

    The worker takes the tasks in the order given. The caller never idles while tasks it handed over still wait
    their turn: when it needs a result (`result`) or the lane empty (`quiet`), it takes back the waiting ones
    (the newest first; a task the worker has started is left to it) and runs them itself.
    """

    def __init__(self, cfg: PipelineConfig, board: Board | None = None, processes: bool | None = None) -> None:
        self.board, self.cfg = board, cfg
        self.results: dict[Hashable, Any] = {}
        self._pending: dict[Hashable, tuple[Future, Callable[..., Any], tuple[Any, ...]]] = {}
        self._pool: Any = None
        if processes if processes is not None else available_cores() >= 2:
            from joblib.externals.loky import ProcessPoolExecutor

            env = {**dict.fromkeys(NATIVE_THREAD_VARS, "1"), "OMP_WAIT_POLICY": "PASSIVE"}
            self._pool = ProcessPoolExecutor(max_workers=1, initializer=_load, initargs=(board, cfg), env=env)

    def submit(self, key: Hashable, task: Callable[..., Any], *args: Any) -> None:
        """Run `task(*args)` (a function of this module) beside the caller, or here at once without a process."""
        if self._pool is None:
            self.results[key] = _run_here(self.board, self.cfg, task, args)
            return
        self._pending[key] = (self._pool.submit(task, *args), task, args)

    def _collect(self, key: Hashable) -> None:
        """A pending task's result: run here when the worker has not started it, else waited for while this
        process runs the tasks still waiting their turn."""
        future, task, args = self._pending.pop(key)
        if future.cancel():
            self.results[key] = _run_here(self.board, self.cfg, task, args)
            return
        while not future.done() and self._take_back_newest():
            pass
        self.results[key] = future.result()

    def _take_back_newest(self) -> bool:
        """Run here the newest task still waiting its turn; False when the worker has started every one (it takes
        them in order)."""
        if not self._pending:
            return False
        key = next(reversed(self._pending))
        future, task, args = self._pending[key]
        if not future.cancel():
            return False
        del self._pending[key]
        self.results[key] = _run_here(self.board, self.cfg, task, args)
        return True

    def result(self, key: Hashable) -> Any:
        """One task's result (run here if it still waits its turn), taken out of the lane."""
        if key in self._pending:
            self._collect(key)
        return self.results.pop(key)

    def quiet(self) -> None:
        """Every task handed over so far done, the waiting ones here, newest first (a worker's error is raised
        here)."""
        while self._pending:
            self._collect(next(reversed(self._pending)))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, kill_workers=True)
            self._pool = None

    def __enter__(self) -> Lane:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
