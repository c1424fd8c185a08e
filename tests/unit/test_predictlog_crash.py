"""Nothing accepted is lost to a crash: requests of 100 rows to a real `python -m mlops.serving`, all
answered 200, then `kill -9` of the server; reading the log afterwards finds every row, once. The
journal's replay is also checked in process: a segment a dead writer left is written once, a live
writer's is left alone, a frame cut short by the crash ends the segment, foreign types are refused."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from mlops.serving.journal import JOURNAL_DIR, read_frames
from mlops.serving.predictlog import LogRecord, PredictionLogWriter, output_columns, read_prediction_log
from mlops.serving.records import records_from_frame
from tests.support.model_server import churn_frame, fit_pipeline, isolated_state, register_model, server_process

NAME = "churn-crash"


def record(rid: str, n: int) -> LogRecord:
    return LogRecord(rid, time.time(), "m", "1", {"age": [30.0 + i for i in range(n)], "plan": ["basic"] * n},
                     output_columns(np.arange(n) % 2, np.full((n, 2), 0.5), [0, 1]), n)


@pytest.mark.process
@pytest.mark.timeout(300)
def test_kill_9_of_the_server_loses_no_accepted_row(tmp_path: Path) -> None:
    with isolated_state(tmp_path) as state:
        pipe, contract, frame = fit_pipeline(churn_frame(1200, seed=5), "churned", params={"max_iter": 15},
                                             id_column="customer_id", timestamp_column="event_time")
        register_model(NAME, pipe, contract, frame)
        records = records_from_frame(frame.drop(columns=["churned"]).head(100))
        log_dir = state / "predictions"
        with server_process(NAME, tmp_path, ["--log-dir", str(log_dir)]) as server:
            sent = []
            with httpx.Client(timeout=30) as client:
                for i in range(20):
                    r = client.post(f"{server.url}/invocations", json={"dataframe_records": records},
                                    headers={"x-request-id": f"crash-{i}"})
                    assert r.status_code == 200 and len(r.json()["predictions"]) == 100
                    sent.append(f"crash-{i}")
            # accepted and answered, still waiting for the writer's next flush (every 5 s or 20,000 rows)
            os.kill(server.process.pid, signal.SIGKILL)
            server.process.wait(30)
        log = read_prediction_log(log_dir)
        assert sorted(set(log["request_id"])) == sorted(sent)
        assert len(log) == 2000  # every row, none twice
        assert set(log.groupby("request_id")["request_row"].nunique()) == {100}
        assert not list((log_dir / JOURNAL_DIR).glob("*.seg"))  # replayed and removed


def test_a_dead_writers_journal_is_written_once_and_a_live_one_is_left(tmp_path: Path) -> None:
    live = PredictionLogWriter(tmp_path, flush_seconds=3600).start()
    assert live.submit(record("live", 3))
    dead = PredictionLogWriter(tmp_path, flush_seconds=3600).start()
    assert dead.submit(record("a", 2)) and dead.submit(record("b", 4))
    assert dead._segment is not None
    os.close(dead._segment.fd)  # as if the process died: its lock is gone, its queue never written
    dead._segment = None
    log = read_prediction_log(tmp_path)
    assert sorted(log["request_id"]) == ["a", "a", "b", "b", "b", "b"]  # the live writer's row waits
    assert len(read_prediction_log(tmp_path)) == 6  # replayed once
    live.close()
    assert sorted(set(read_prediction_log(tmp_path)["request_id"])) == ["a", "b", "live"]
    assert not list((tmp_path / JOURNAL_DIR).glob("*.seg"))


def test_a_frame_cut_short_ends_the_segment_and_foreign_types_are_refused(tmp_path: Path) -> None:
    w = PredictionLogWriter(tmp_path, flush_seconds=3600).start()
    w.submit(record("whole", 2))
    assert w._segment is not None
    path: Any = w._segment.path
    data = path.read_bytes()
    frames = read_frames(data)
    assert len(frames) == 2 and frames[1][1] == "whole"  # the header, then the record
    assert len(read_frames(data[:-5])) == 1  # a write cut by the crash: the record is not half-read
    import pickle
    import struct

    evil = pickle.dumps(os.system)
    with pytest.raises(pickle.UnpicklingError):
        read_frames(struct.pack("<Q", len(evil)) + evil)
    w.close()
