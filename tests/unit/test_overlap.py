"""Reading ahead and writing behind the scoring loop (mlops.serving.overlap): order kept, memory bounded,
errors raised in the loop, threads gone when the loop ends either way."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from mlops.serving.overlap import OrderedWriter, prefetch


def _threads(prefix: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(prefix)]


def _wait_until(cond, timeout: float = 10.0) -> bool:  # noqa: ANN001 - a predicate
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


def test_prefetch_keeps_order_and_reads_at_most_one_ahead() -> None:
    produced: list[int] = []

    def source() -> Iterator[int]:
        for i in range(6):
            produced.append(i)
            yield i

    seen = []
    for item in prefetch(source(), depth=1):
        # the producer may hold one item in the queue and one in hand, never more
        assert _wait_until(lambda i=item: len(produced) >= min(i + 2, 6))
        assert len(produced) <= item + 3
        seen.append(item)
    assert seen == list(range(6))
    assert _wait_until(lambda: not _threads("mlops-prefetch"))


def test_an_error_while_reading_is_raised_in_the_loop_after_the_items_before_it() -> None:
    def source() -> Iterator[int]:
        yield 1
        yield 2
        raise ValueError("row 3 cannot be parsed")

    seen = []
    with pytest.raises(ValueError, match="row 3 cannot be parsed"):
        for item in prefetch(source()):
            seen.append(item)
    assert seen == [1, 2]


def test_leaving_the_loop_early_stops_the_reader() -> None:
    closed = threading.Event()

    def endless() -> Iterator[int]:
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.set()

    items = prefetch(endless())
    assert next(items) == 0
    items.close()
    assert closed.wait(10), "the source was not closed"
    assert _wait_until(lambda: not _threads("mlops-prefetch"))


def test_the_writer_runs_calls_in_order_one_behind() -> None:
    done: list[int] = []
    writer = OrderedWriter()
    for i in range(5):
        writer.submit(lambda i=i: (time.sleep(0.01), done.append(i)))
        assert done == list(range(i)) or done == list(range(i + 1))  # at most the current call is unfinished
    writer.wait()
    assert done == list(range(5))
    assert not _threads("mlops-writer")


def test_a_failed_write_is_raised_and_no_later_write_runs() -> None:
    done: list[str] = []
    writer = OrderedWriter()

    def fail() -> None:
        raise OSError("disk full")

    writer.submit(done.append, "first")
    writer.submit(fail)
    with pytest.raises(OSError, match="disk full"):
        writer.submit(done.append, "after the failure")
    writer.discard()
    assert done == ["first"]
    assert not _threads("mlops-writer")
