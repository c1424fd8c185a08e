"""The replay's second process: the short-window baselines and the fresh-model checks run in one worker process
beside the replay give exactly what they give run in the replay's own process; a family whose retrain cannot fit
keeps its model; a worker's error reaches the replay."""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingRegressor

from mlops.core.config import parse_config
from mlops.monitoring.backtest_lane import Lane, check_fresh_gain, fit_and_score
from mlops.monitoring.yardstick import Board, Family, score_row


def _cfg():
    return parse_config({"name": "t", "task": "regression", "source": {"kind": "file", "path": "x.csv"},
                         "target": "y", "gate": {"primary_metric": "rmse"}, "registry": {"model_name": "t"},
                         "models": [{"family": "hist_gradient_boosting"}]})


def _windows(n: int = 5, rows: int = 200, seed: int = 0) -> list[pd.DataFrame]:
    rng = np.random.default_rng(seed)
    out = []
    for w in range(n):
        x = rng.normal(size=(rows, 3))
        y = 10 * w + 5 * x[:, 0] + rng.normal(size=rows)
        frame = pd.DataFrame(x, columns=["a", "b", "c"]).assign(y=y)
        frame.loc[frame.index[:10], "y"] = np.nan  # blank targets: not scored
        out.append(frame)
    return out


def _fits(lane: Lane, windows: list[pd.DataFrame]) -> None:
    for j in range(1, len(windows)):
        seen = pd.concat(windows[:j]).dropna(subset=["y"])
        lane.submit(("f", j), fit_and_score, HistGradientBoostingRegressor(max_iter=20, random_state=0),
                    seen.drop(columns=["y"]), seen["y"], j)
    lane.submit(("f", len(windows)), fit_and_score, HistGradientBoostingRegressor(), pd.DataFrame({"a": []}),
                pd.Series([], dtype=float), 0)
    history = pd.concat(windows[:3])
    champion = HistGradientBoostingRegressor(max_iter=20, random_state=0).fit(*_xy(pd.concat(windows[:2])))
    lane.submit("fresh", check_fresh_gain, champion, history, windows[3])


def test_the_worker_process_scores_what_the_replay_process_scores() -> None:
    windows, cfg = _windows(), _cfg()
    board = Board.of(windows, "y")
    with Lane(cfg, board, processes=False) as here, Lane(cfg, board, processes=True) as beside:
        _fits(here, windows)
        _fits(beside, windows)
        assert here.results and not beside.results  # handed over, not waited for
        _let_the_worker_finish(beside)  # else the lane's caller takes back the tasks still waiting their turn
        beside.quiet()
    assert here.results.keys() == beside.results.keys()
    fresh, other_fresh = here.result("fresh"), beside.result("fresh")
    assert fresh is not None and fresh.gain > 0  # a model of the newer rows beats one of windows 0-1 on window 3
    assert (fresh.champion, fresh.fresh, fresh.ci_low) == (other_fresh.champion, other_fresh.fresh, other_fresh.ci_low)
    for key, (row, _seconds) in here.results.items():
        other = beside.results[key][0]
        if row is None:  # the empty fit: no model, in either process
            assert other is None
        else:
            np.testing.assert_array_equal(row, other)
            j = key[1]
            assert np.isnan(row[:j]).all() and np.isfinite(row[j:]).all()
    # a model fitted on the windows before j does worse on later windows as the level climbs
    row = here.results[("f", 1)][0]
    assert row is not None and row[4] > row[1]


def test_a_family_whose_retrain_cannot_fit_keeps_its_model() -> None:
    windows, cfg = _windows(4), _cfg()
    board = Board.of(windows, "y")
    seen = pd.concat(windows[:1]).dropna(subset=["y"])
    first = HistGradientBoostingRegressor(max_iter=20).fit(seen.drop(columns=["y"]), seen["y"])
    second = HistGradientBoostingRegressor(max_iter=20).fit(*_xy(pd.concat(windows[:2])))
    family = Family("f", 1, [score_row(first, board, 0, cfg), score_row(second, board, 1, cfg), None])
    loss = family.loss()
    assert loss.shape == (3, 4)
    np.testing.assert_array_equal(loss[2, 2:], loss[1, 2:])  # the kept model serves on
    assert np.isnan(loss[2, :2]).all() and np.isnan(loss[1, :1]).all()


def test_a_worker_error_is_raised_when_the_lane_is_waited_for() -> None:
    windows, cfg = _windows(3), _cfg()
    with Lane(cfg, Board.of(windows, "y"), processes=True) as lane:
        lane.submit(("f", 1), fit_and_score, _Broken(), pd.DataFrame({"a": [1.0, 2.0]}), pd.Series([1.0, 2.0]), 1)
        _let_the_worker_finish(lane)
        with pytest.raises(RuntimeError, match="broken on purpose"):
            lane.quiet()


def test_the_caller_runs_the_tasks_still_waiting_their_turn_and_the_worker_keeps_the_one_it_started(
        tmp_path: Path) -> None:
    fifo = tmp_path / "gate"
    os.mkfifo(fifo)
    held = ["sh", "-c", f'cat "{fifo}" > /dev/null; echo $PPID']  # waits until the pipe is written; says who ran it
    with Lane(_cfg(), processes=True) as lane:
        lane.submit("held", subprocess.check_output, held)
        started = lane._pending["held"][0]
        deadline = time.monotonic() + 60
        while not started.running() and time.monotonic() < deadline:  # handed to the worker: no longer cancellable
            time.sleep(0.01)
        for k in range(3):
            lane.submit(("pid", k), os.getpid)
        assert lane.result(("pid", 2)) == os.getpid()  # third in line behind a held worker: run here
        writer = threading.Thread(target=fifo.write_text, args=("go",))
        writer.start()
        lane.quiet()
        writer.join()
        worker = int(lane.result("held"))
        assert worker != os.getpid()  # started by the worker, left to it
        assert {lane.result(("pid", k)) for k in range(2)} <= {os.getpid(), worker}  # one process or the other


def _let_the_worker_finish(lane: Lane) -> None:
    """Wait until the worker has run every task handed over (the caller takes none back)."""
    concurrent.futures.wait([future for future, _task, _args in lane._pending.values()])


def _xy(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    frame = frame.dropna(subset=["y"])
    return frame.drop(columns=["y"]), frame["y"]


class _Broken:
    def fit(self, X: object, y: object) -> _Broken:
        raise RuntimeError("broken on purpose")
