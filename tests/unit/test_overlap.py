"""Reading ahead and writing behind the scoring loop (mlops.serving.overlap): order kept, memory bounded,
errors raised in the loop, threads gone when the loop ends either way."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from mlops.serving.overlap import OrderedWriter, ordered_map, prefetch


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


def test_ordered_map_keeps_the_order_whatever_finishes_first_and_bounds_what_is_in_flight() -> None:
    running, most = [0], [0]
    lock = threading.Lock()

    def work(i: int) -> int:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.02 if i % 2 == 0 else 0.001)  # the even items finish after the odd ones
        with lock:
            running[0] -= 1
        return i * i

    assert list(ordered_map(work, range(10), threads=2)) == [i * i for i in range(10)]
    assert most[0] <= 2
    assert _wait_until(lambda: not _threads("mlops-score"))


def test_ordered_map_raises_at_the_failing_item_and_starts_nothing_after_it() -> None:
    started: list[int] = []

    def work(i: int) -> int:
        started.append(i)
        if i == 3:
            raise ValueError("chunk 3 cannot be scored")
        return i

    seen = []
    with pytest.raises(ValueError, match="chunk 3"):
        for value in ordered_map(work, range(100), threads=2):
            seen.append(value)
    assert seen == [0, 1, 2]
    assert max(started) <= 5  # at most the items already in flight when it failed
    assert _wait_until(lambda: not _threads("mlops-score"))


def test_each_scoring_thread_walks_on_one_openmp_thread() -> None:
    # what scikit-learn's tree walk asks for its thread count (OpenMP's, per calling thread)
    from sklearn.utils._openmp_helpers import _openmp_effective_n_threads

    before = _openmp_effective_n_threads()
    seen = set(ordered_map(lambda _: _openmp_effective_n_threads(), range(4), threads=2))
    assert seen == {1}, "a scoring thread kept more than one OpenMP thread"
    assert _openmp_effective_n_threads() == before  # the caller's own count is untouched
