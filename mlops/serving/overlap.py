"""A batch read, scored and written at once: the next chunk is read and the last one written while chunks are
checked and scored, a chunk per core at a time.

Reading (Arrow's Parquet and CSV code), writing, and the tree walk (OpenMP, one thread per scoring thread) run
outside Python's lock and so overlap for real; the contract check and the feature columns hold the lock, so they
still run one chunk at a time, which is what limits a run now (10M rows: 1.09x from the reader and writer, 1.22x
with two scoring threads; docs/benchmarks.md "Batch scoring"). The reader holds at most `depth` chunks ahead,
`ordered_map` as many in flight as threads, the writer one behind, so memory stays bounded whatever the input's
size; order is kept, and an error in any thread is raised in the loop (the run fails as it would without them).
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")
_DONE = object()


def prefetch(items: Iterable[T], depth: int = 1) -> Iterator[T]:
    """`items` in order, the next `depth` of them produced by a background thread while the caller works on
    this one. Closing the iterator early (an error in the caller) stops the thread at its next item."""
    slots: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        slots.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            slots.put((_DONE, None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            slots.put((_DONE, exc))

    thread = threading.Thread(target=produce, name="mlops-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item, error = slots.get()
            if error is not None:
                raise error
            if item is _DONE:
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue, then let it end
            try:
                slots.get_nowait()
            except queue.Empty:
                pass
            thread.join(timeout=0.1)


class OrderedWriter:
    """Calls run one after another on one background thread, in the order given, one behind the caller:
    `submit` waits for the previous call to finish (raising its error, so no later call runs after a failure)
    and returns once this one is queued."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlops-writer")
        self._pending: Future[Any] | None = None

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        self._finish_pending()
        self._pending = self._pool.submit(fn, *args)

    def _finish_pending(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def wait(self) -> None:
        """The last call finished (its error raised); the thread stops."""
        try:
            self._finish_pending()
        finally:
            self._pool.shutdown(wait=True)

    def discard(self) -> None:
        """Stop without raising: the running call finishes, its outcome is dropped."""
        self._pending = None
        self._pool.shutdown(wait=True, cancel_futures=True)


def one_openmp_thread() -> None:
    """A scoring thread's tree walk uses one OpenMP thread (OpenMP's thread count is per calling thread), so
    threads x OpenMP threads stays within the cores."""
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1, user_api="openmp")
    except Exception:  # noqa: BLE001 - only a speed setting
        pass


def ordered_map(fn: Callable[[T], R], items: Iterable[T], threads: int) -> Iterator[R]:
    """`fn(item)` for each item, computed on `threads` threads (each with one OpenMP thread) and yielded in the
    items' order; at most `threads` items are in flight, so memory stays bounded. An error is raised at its item,
    and the items not started then are dropped. One thread: computed here, one after another."""
    if threads <= 1:
        yield from map(fn, items)
        return
    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="mlops-score", initializer=one_openmp_thread)
    pending: deque[Future[R]] = deque()
    try:
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= threads:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for f in pending:
            f.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
