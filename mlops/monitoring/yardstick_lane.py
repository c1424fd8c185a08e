"""The yardstick's short-window baselines, fitted and scored in one worker process beside the replay.

The replay's main process runs the policy and the all-history baseline, one thread at a time. The baselines on
the last k periods (the all-history baseline's configuration refitted on fewer rows, each model scored on every
later window) depend on neither, so they run in one worker process beside them: two processes, one thread each.
Before the main process spreads over every core (a search's trials, the window choice's side-by-side fits) it
waits for the lane to finish what it was given (`Lane.quiet`), so the processes never outnumber the cores.
With one core the lane fits in process as each task arrives. Same fits, same scores either way.
"""

from __future__ import annotations

import time
from concurrent.futures import Future
from typing import Any

import numpy as np
import pandas as pd

from mlops.core.config import PipelineConfig
from mlops.core.startup import NATIVE_THREAD_VARS, available_cores
from mlops.monitoring.yardstick import Board, score_row

Key = tuple[str, int]  # (family, model index)
_board: Board | None = None  # the windows, loaded once per worker process
_cfg: PipelineConfig | None = None


def _load(board: Board, cfg: PipelineConfig) -> None:
    global _board, _cfg
    _board, _cfg = board, cfg


def fit_and_score(estimator: Any, X: pd.DataFrame, y: pd.Series, j: int,
                  board: Board | None = None, cfg: PipelineConfig | None = None) -> tuple[np.ndarray | None, float]:
    """Fit `estimator` and score it on the windows from j on: (its scores, or None when it cannot fit these rows;
    the fit's seconds)."""
    board, cfg = board or _board, cfg or _cfg
    assert board is not None and cfg is not None, "the lane's windows were not loaded"
    started = time.perf_counter()
    try:
        model = estimator.fit(X, y)
    except ValueError:  # too few rows or one class only: the family keeps its model
        return None, time.perf_counter() - started
    seconds = time.perf_counter() - started
    return score_row(model, board, j, cfg), seconds


class Lane:
    """Fits handed over as they come, collected by key; `quiet` waits for every one given so far."""

    def __init__(self, board: Board, cfg: PipelineConfig, processes: bool | None = None) -> None:
        self.board, self.cfg = board, cfg
        self.results: dict[Key, tuple[np.ndarray | None, float]] = {}
        self._pending: dict[Key, Future] = {}
        self._pool: Any = None
        if processes if processes is not None else available_cores() >= 2:
            from joblib.externals.loky import ProcessPoolExecutor

            env = {**dict.fromkeys(NATIVE_THREAD_VARS, "1"), "OMP_WAIT_POLICY": "PASSIVE"}
            self._pool = ProcessPoolExecutor(max_workers=1, initializer=_load, initargs=(board, cfg), env=env)

    def submit(self, key: Key, estimator: Any, X: pd.DataFrame, y: pd.Series, j: int) -> None:
        if self._pool is None:
            self.results[key] = fit_and_score(estimator, X, y, j, self.board, self.cfg)
        else:
            self._pending[key] = self._pool.submit(fit_and_score, estimator, X, y, j)

    def quiet(self) -> None:
        """Wait until every fit handed over so far is done (a worker's error is raised here)."""
        for key, fut in list(self._pending.items()):
            self.results[key] = fut.result()
            del self._pending[key]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, kill_workers=True)
            self._pool = None

    def __enter__(self) -> Lane:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
