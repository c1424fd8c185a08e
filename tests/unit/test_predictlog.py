"""Prediction log: bounded queue that drops and counts instead of blocking, sensitive columns hashed
or dropped before writing, date-partitioned files readable by monitoring, corrupt files skipped."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops.core.errors import DataError
from mlops.core.startup import poll
from mlops.serving.predictlog import (
    UNHASHABLE,
    UNSTORABLE,
    LogRecord,
    PredictionLogWriter,
    Redactor,
    hash_value,
    join_labels,
    list_log_files,
    output_columns,
    read_prediction_log,
)

KEY = b"test-key"


def record(rid: str, n: int = 1, at: float | None = None, version: str = "1", start: int = 0) -> LogRecord:
    ids = [f"C{start + i}" for i in range(n)]
    return LogRecord(
        request_id=rid,
        logged_at=time.time() if at is None else at,
        model_name="m",
        model_version=version,
        inputs={"customer_id": ids, "age": [30.0 + i for i in range(n)], "plan": ["basic"] * n},
        outputs=output_columns(np.arange(n) % 2, np.full((n, 2), 0.5), [0, 1]),
        n=n,
    )


def test_full_queue_drops_and_counts_without_blocking(tmp_path: Path) -> None:
    w = PredictionLogWriter(tmp_path, max_queue_rows=5)  # not started: nothing drains the queue
    assert w.submit(record("a", 2)) and w.submit(record("b", 2))
    assert not w.submit(record("c", 2))
    started = time.perf_counter()
    results = [w.submit(record(f"x{i}", 1)) for i in range(2000)]
    elapsed = time.perf_counter() - started
    assert results.count(True) == 1  # one more row fits (5 rows), the rest are dropped
    assert elapsed < 1.0  # never waits for room
    assert w.stats.dropped_rows == 2 + 1999 and w.stats.dropped_records == 1 + 1999
    assert w.stats.queued_rows == 5
    w.close()
    log = read_prediction_log(tmp_path)
    assert log["request_id"].tolist() == ["a", "a", "b", "b", "x0"]
    assert w.stats.written_rows == 5 and w.stats.queued_rows == 0


def test_writer_thread_flushes_in_the_background(tmp_path: Path) -> None:
    w = PredictionLogWriter(tmp_path, flush_seconds=0.1).start()
    w.submit(record("r1", 3))
    poll(lambda: w.stats.written_rows >= 3, 5, interval=0.02)
    assert w.stats.written_rows == 3 and w.stats.written_files == 1
    w.close()
    log = read_prediction_log(tmp_path)
    assert log["request_row"].tolist() == [0, 1, 2]
    assert log["prediction"].tolist() == [0, 1, 0] and log["prediction_proba"].tolist() == [0.5] * 3
    assert set(log["model_version"]) == {"1"} and set(log["log_source"]) == {"api"}
    assert str(log["logged_at"].dt.tz) == "UTC"


def test_layout_is_date_partitioned_with_unique_names(tmp_path: Path) -> None:
    day1 = datetime(2026, 3, 1, 23, 59, tzinfo=UTC).timestamp()
    day2 = datetime(2026, 3, 2, 0, 1, tzinfo=UTC).timestamp()
    a, b = PredictionLogWriter(tmp_path), PredictionLogWriter(tmp_path)  # e.g. two worker processes
    paths = a.write([record("r1", at=day1), record("r2", at=day2)]) + b.write([record("r3", at=day1)])
    assert {p.parent.name for p in paths} == {"date=2026-03-01", "date=2026-03-02"}
    assert len({p.name for p in paths}) == 3
    assert all(p.name.startswith("part-") and p.suffix == ".parquet" for p in paths)
    assert not list(tmp_path.rglob("*.tmp"))
    assert len(list_log_files(tmp_path, since="2026-03-02")) == 1
    log = read_prediction_log(tmp_path, since="2026-03-01T23:00:00Z", until="2026-03-02T00:00:00Z")
    assert sorted(log["request_id"]) == ["r1", "r3"]
    assert read_prediction_log(tmp_path, since=pd.Timestamp("2026-03-02", tz="UTC"))["request_id"].tolist() == ["r2"]


def test_sensitive_columns_hashed_with_a_key(tmp_path: Path) -> None:
    w = PredictionLogWriter(tmp_path, Redactor(frozenset({"customer_id"}), "hash", KEY))
    w.write([record("r", 2)])
    log = read_prediction_log(tmp_path)
    assert log["customer_id"].tolist() == [hash_value("C0", KEY), hash_value("C1", KEY)]
    assert hash_value("C0", KEY) != hash_value("C0", b"other-key")
    raw = b"".join(p.read_bytes() for p in tmp_path.rglob("*.parquet"))
    assert b"C0" not in raw and b"C1" not in raw
    assert log.attrs["hashed_columns"] == ["customer_id"]


def test_sensitive_columns_dropped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    PredictionLogWriter(tmp_path / "drop", Redactor(frozenset({"customer_id"}), "drop")).write([record("r")])
    assert "customer_id" not in read_prediction_log(tmp_path / "drop").columns
    with caplog.at_level(logging.WARNING):  # hash mode without a key falls back to dropping, loudly
        redactor = Redactor(frozenset({"customer_id"}), "hash", None)
    assert redactor.mode == "drop" and "MLOPS_LOG_HASH_KEY" in caplog.text
    PredictionLogWriter(tmp_path / "nokey", redactor).write([record("r")])
    assert "customer_id" not in read_prediction_log(tmp_path / "nokey").columns


def test_corrupt_file_is_skipped_and_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    good = PredictionLogWriter(tmp_path).write([record("ok", 2)])[0]
    bad = good.parent / "part-broken.parquet"
    bad.write_bytes(good.read_bytes()[:100])  # truncated
    (good.parent / "part-empty.parquet").write_bytes(b"")
    (good.parent / ".part-in-progress.parquet.tmp").write_bytes(b"partial")
    with caplog.at_level(logging.WARNING):
        log = read_prediction_log(tmp_path)
    assert log["request_id"].tolist() == ["ok", "ok"]
    assert sorted(Path(p).name for p in log.attrs["corrupt_files"]) == ["part-broken.parquet", "part-empty.parquet"]
    assert "part-broken.parquet" in caplog.text


def test_empty_or_missing_folder_reads_as_empty(tmp_path: Path) -> None:
    log = read_prediction_log(tmp_path / "nothing")
    assert log.empty and "request_id" in log.columns and log.attrs["corrupt_files"] == []


def test_a_failed_write_is_counted_not_raised(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    w = PredictionLogWriter(blocker)
    assert w.submit(record("r", 2))
    assert w.flush() == []
    assert w.stats.write_errors == 1 and w.stats.dropped_rows == 2 and w.stats.last_error


def test_input_columns_that_clash_with_log_columns_are_renamed(tmp_path: Path) -> None:
    rec = record("r")
    rec.inputs = {"request_id": ["mine"], "prediction_date": ["2026-01-01"], "age": [3.0]}
    PredictionLogWriter(tmp_path).write([rec])
    log = read_prediction_log(tmp_path)
    assert log["request_id"].tolist() == ["r"] and log["input.request_id"].tolist() == ["mine"]
    assert log["input.prediction_date"].tolist() == ["2026-01-01"]


def test_join_labels_by_request_id(tmp_path: Path) -> None:
    w = PredictionLogWriter(tmp_path)
    w.write([record("r1"), record("r2"), record("r3")])
    log = read_prediction_log(tmp_path)
    labels = pd.DataFrame({"request_id": ["r1", "r3", "r3", "zz"], "churned": [1, 0, 1, 1]})
    joined = join_labels(log, labels, by="request_id")
    assert joined.sort_values("request_id")[["request_id", "churned"]].values.tolist() == [["r1", 1], ["r3", 1]]


def test_join_labels_by_request_and_row(tmp_path: Path) -> None:
    PredictionLogWriter(tmp_path).write([record("r1", 3)])
    log = read_prediction_log(tmp_path)
    with pytest.raises(DataError, match="request_row"):
        join_labels(log, pd.DataFrame({"request_id": ["r1"], "churned": [1]}), by="request_id")
    labels = pd.DataFrame({"request_id": ["r1", "r1"], "request_row": [2, 0], "churned": [1, 0]})
    joined = join_labels(log, labels, by="request_id").sort_values("request_row")
    assert joined[["request_row", "churned", "customer_id"]].values.tolist() == [[0, 0, "C0"], [2, 1, "C2"]]


def test_join_labels_by_hashed_id_column(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLOPS_LOG_HASH_KEY", raising=False)
    PredictionLogWriter(tmp_path, Redactor(frozenset({"customer_id"}), "hash", KEY)).write([record("r1", 3)])
    log = read_prediction_log(tmp_path)
    labels = pd.DataFrame({"customer_id": ["C1", "C2", "C9"], "churned": [1, 0, 1]})
    with pytest.raises(DataError, match="MLOPS_LOG_HASH_KEY"):
        join_labels(log, labels, by="customer_id")
    joined = join_labels(log, labels, by="customer_id", hash_key=KEY).sort_values("request_row")
    assert joined["request_row"].tolist() == [1, 2] and joined["churned"].tolist() == [1, 0]
    with pytest.raises(DataError, match="no column 'account'"):
        join_labels(log, labels.rename(columns={"customer_id": "account"}), by="account")


# -- one bad value never costs a batch (issue 12) ---------------------------------------------------


def test_an_unhashable_value_is_replaced_by_a_marker_and_counted_and_the_batch_is_kept(tmp_path: Path) -> None:
    w = PredictionLogWriter(tmp_path, Redactor(frozenset({"customer_id"}), "hash", KEY))
    bad = record("bad", 3, start=10)
    bad.inputs["customer_id"] = ["C10", "\ud800", "C12"]  # a lone surrogate: no UTF-8 form, so no HMAC
    for i in range(300):
        assert w.submit(record(f"r{i}"))
    assert w.submit(bad)
    w.flush()
    log = read_prediction_log(tmp_path)
    assert len(log) == 303 and w.stats.dropped_rows == 0 and w.stats.write_errors == 0
    assert w.stats.replaced_values == 1
    mine = log[log["request_id"] == "bad"].sort_values("request_row")
    assert mine["customer_id"].tolist() == [hash_value("C10", KEY), UNHASHABLE, hash_value("C12", KEY)]
    assert mine["age"].tolist() == [30.0, 31.0, 32.0]


def test_an_unstorable_text_value_is_replaced_by_a_marker_and_counted(tmp_path: Path) -> None:
    w = PredictionLogWriter(tmp_path)
    one = record("one")
    one.inputs["plan"] = ["\udfff"]
    many = record("many", 2)
    many.inputs["plan"] = ["basic", "pro\ud800"]
    assert w.submit(record("fine", 2)) and w.submit(one) and w.submit(many)
    w.flush()
    log = read_prediction_log(tmp_path).sort_values(["request_id", "request_row"])
    assert len(log) == 5 and w.stats.dropped_rows == 0 and w.stats.replaced_values == 2
    got = dict(zip(log["request_id"] + ":" + log["request_row"].astype(str), log["plan"], strict=True))
    assert got == {"fine:0": "basic", "fine:1": "basic", "many:0": "basic", "many:1": UNSTORABLE, "one:0": UNSTORABLE}


class _Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no text form")


def test_a_record_that_cannot_be_written_is_lost_alone(tmp_path: Path) -> None:
    w = PredictionLogWriter(tmp_path)
    bad = record("bad", 2)
    bad.inputs["plan"] = ["basic", _Unprintable()]
    assert w.submit(record("a", 2)) and w.submit(bad) and w.submit(record("b", 3))
    w.flush()
    log = read_prediction_log(tmp_path)
    assert sorted(set(log["request_id"])) == ["a", "b"] and len(log) == 5
    assert w.stats.dropped_rows == 2 and w.stats.dropped_records == 1 and w.stats.write_errors == 1
