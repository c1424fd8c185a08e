"""What starting a process needs, written once: every start-up speed trick of the system, and waiting
until a server answers or a condition holds. Nothing here runs at import, and importing it is cheap
(the standard library only), so `mlops --help` pays nothing for it.

The speed tricks (figures in docs/benchmarks.md):

- GC: a process that imports MLflow, scikit-learn, pandas and Prefect holds several hundred thousand
  long-lived objects; cyclic collections during the imports walk them again and again for nothing,
  and later full collections stall requests. `frozen_imports()` turns collection off while importing
  and freezes the imported heap after (frozen objects are never scanned again); `freeze_heap()` does
  the freezing alone (a server after loading a model, the CLI at exit).
- Preloading: `preload(*modules)` imports, under `frozen_imports()`, what an entry point needs later,
  while something else waits: the CLI's private Prefect API boots (`TRAINING`, `MONITORING`, ...,
  for `mlops.cli.common.prepare_flow_process`), or the flow searches (`SERVING_STACK`, for infra
  validation's fresh process). Imported where used, the same modules would sit on the critical path
  with the collector on. The sets name modules as strings: nothing here imports them.
- Threads: `search_on_threads()` runs a search's trials on threads of this process, one OpenMP/BLAS
  thread each, instead of new worker processes that would each import scikit-learn and pandas first
  (the CLI's monitor, whose retrain may run in-process). `one_native_thread()` gives OpenMP, OpenBLAS
  and MKL one thread each before they load (the model server's workers, the CLI's monitor), and
  `NATIVE_THREAD_VARS` names their variables for the processes started with an environment of their
  own (infra validation's fresh process, the search's workers): more threads than cores would only
  spin against each other.
- A migrated Prefect database: a Prefect server migrates its database when it starts, and on a new
  SQLite file that is every Alembic revision (about 5 CPU s, half of a server's start). Each new state
  folder pays it: the first local run, each new stack. `seed_prefect_database(url)` copies in a
  migrated empty database instead, made once per Prefect version (`prefect_database_template()`).
- Lazy imports: the CLI imports the project's capability packages and the heavy libraries inside its
  commands (each pulls pydantic, pandas, MLflow or Prefect), so `mlops --help` answers at once; the
  other modules import at their top, except where a comment says why.

Waiting: `wait_until(probe, timeout, what)` is the one polling loop (servers of the stack, the CLI's
private API, the tests); `http_ok(url)` is the usual probe.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from mlops.core.errors import MLOpsError

T = TypeVar("T")

# The variables OpenMP, OpenBLAS and MKL read their thread counts from, once, when they load.
NATIVE_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
# What loading a champion needs: skops (whose import walks all of scikit-learn) and MLflow's sklearn flavour.
CHAMPION_LOAD = ("skops.io", "mlflow.sklearn")
# The training flow, what it needs before its search, and what registration (skops, MLflow's sklearn
# flavour) and the plots (matplotlib) need after it.
TRAINING = ("great_expectations", "sklearn.ensemble", "flows.train", *CHAMPION_LOAD, "matplotlib.pyplot")
# The monitoring flow, the window's check (GX) and the champion's load: the flow's first steps.
MONITORING = ("flows.monitor", "great_expectations", *CHAMPION_LOAD)
# Infra validation's fresh process: the model server's app and loader, the registry's stores behind a
# database URI (the local default; half a second of imports), the client it calls the app with.
SERVING_STACK = ("httpx", "orjson", *CHAMPION_LOAD, "mlflow.store.model_registry.sqlalchemy_store",
                 "mlflow.store.tracking.sqlalchemy_store", "mlops.serving.app", "mlops.serving.model")


@contextlib.contextmanager
def frozen_imports() -> Iterator[None]:
    """Cyclic GC off inside the block; everything alive at its end is frozen, then GC is back on.

    Nesting is safe: an inner block leaves collection off when an outer one turned it off.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()


def preload(*modules: str) -> None:
    """Import `modules` (dotted names) with the cyclic GC off, and freeze what they loaded."""
    with frozen_imports():
        for name in modules:
            importlib.import_module(name)


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS says, else the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def one_native_thread(variables: tuple[str, ...] = NATIVE_THREAD_VARS) -> None:
    """One thread for each native library whose variable is in `variables`, unless the environment sets
    its own: for this process when called before the library loads (numpy, scikit-learn's compiled
    code), and for the processes it starts."""
    for var in variables:
        os.environ.setdefault(var, "1")


@contextlib.contextmanager
def search_on_threads() -> Iterator[None]:
    """Inside the block, joblib runs a search's trials on threads of this process, and BLAS gets one
    thread each (with `one_native_thread(("OMP_NUM_THREADS",))` called before, OpenMP too).

    Worker processes would each start Python and import scikit-learn and pandas first, which on a busy
    2-core machine costs more than the search itself; more native threads would only spin against each
    other. The fits and their seeds are the same, so is the chosen model. A search on a Dask cluster is
    unchanged.
    """
    import joblib
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1), joblib.parallel_config(backend="threading"):
        yield


def freeze_heap(collect: bool = False) -> None:
    """Move everything alive now out of the collector's scans (after a `gc.collect()` when `collect`).

    Collect first when nobody waits (before a server's first model serves); not on a hot path, where
    a full collection would stall requests.
    """
    if collect:
        gc.collect()
    gc.freeze()


class WaitTimeout(MLOpsError):
    """What was waited for did not happen in time."""


class WaitAborted(MLOpsError):
    """The process waited on exited, or the wait was stopped."""


def wait_until(
    probe: Callable[[], T],
    timeout: float,
    what: str,
    *,
    interval: float = 0.05,
    gone: Callable[[], str | None] | None = None,
    stop: threading.Event | None = None,
    ignore: tuple[type[BaseException], ...] = (),
    detail: Callable[[], str] | None = None,
) -> T:
    """Call `probe()` every `interval` s until it returns something truthy, and return that.

    `what` is the failure as the start of a sentence ("the MLflow server was not healthy"): after
    `timeout` s the wait ends with `WaitTimeout("<what> within N s")`, plus `detail()` (a log tail)
    when given. `gone()`, checked before each try, returns a sentence once the thing waited on has
    died, which ends the wait with `WaitAborted(sentence)`; so does a set `stop` event. Exceptions of
    the `ignore` types from `probe` count as "not yet". The probe always runs at least once.
    """
    t0 = time.monotonic()
    while stop is None or not stop.is_set():
        if gone is not None and (reason := gone()):
            raise WaitAborted(reason)
        try:
            value = probe()
        except ignore:
            value = None  # type: ignore[assignment]
        if value:
            return value
        if time.monotonic() - t0 >= timeout:
            extra = detail() if detail is not None else ""
            raise WaitTimeout(f"{what} within {timeout:.0f} s" + (f"; {extra}" if extra else ""))
        time.sleep(interval)
    raise WaitAborted(f"stopped waiting: {what}")


def poll(probe: Callable[[], T], timeout: float, interval: float = 0.05) -> T:
    """Call `probe()` until it returns something truthy or `timeout` s pass; return its last value.

    For callers that assert on the outcome themselves (tests: "the log has three rows").
    """
    deadline = time.monotonic() + timeout
    value = probe()
    while not value and time.monotonic() < deadline:
        time.sleep(interval)
        value = probe()
    return value


def http_ok(url: str, timeout: float = 2.0, accept: frozenset[int] = frozenset({200}),
            headers: dict[str, str] | None = None) -> bool:
    """True when GET `url` answers with a status in `accept`; False when it answers otherwise or not at all."""
    import httpx

    try:
        return httpx.get(url, timeout=timeout, headers=headers).status_code in accept
    except httpx.HTTPError:
        return False


EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LISTEN_PORTS = range(20000, 32768)  # below every usual ephemeral range (Linux 32768-60999, BSD 49152-65535)
_handed_out: set[tuple[str, int]] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A port on `host` that nothing holds now and that no outgoing connection will take before a
    server binds it.

    A port the OS hands out for `bind(host, 0)` comes from the ephemeral range, the same range the
    kernel draws from for the local end of every outgoing connection; on a busy machine a client's
    connection can take it between this call and the server's bind ("address already in use"). So
    the port comes from `LISTEN_PORTS` below the start of that range, tried with a real bind, and is
    never handed out twice by one process. Where the range starts at or below `LISTEN_PORTS` (a
    machine tuned so), the OS picks as before.
    """
    import random
    import socket  # here, not at the top: `mlops --help` imports this module and needs no socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    low = _ephemeral_low()
    candidates = [p for p in LISTEN_PORTS if p < low and (host, p) not in _handed_out]
    for port in random.SystemRandom().sample(candidates, min(len(candidates), 64)):  # no seed set elsewhere applies
        with socket.socket(family, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        _handed_out.add((host, port))
        return port
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (Linux); where it cannot be read, the top of
    `LISTEN_PORTS` (every usual default starts above it)."""
    try:
        return int(EPHEMERAL_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return LISTEN_PORTS.stop


# ---- a migrated, empty Prefect database ------------------------------------------------------------

SQLITE_URL_PREFIX = "sqlite+aiosqlite:///"
PREFECT_MIGRATION_TIMEOUT = 300.0


def cache_dir() -> Path:
    """Where the system keeps what it can always make again: `$MLOPS_CACHE_DIR`, else
    `$XDG_CACHE_HOME/mlops-tabular`, else `~/.cache/mlops-tabular`."""
    if os.environ.get("MLOPS_CACHE_DIR"):
        return Path(os.environ["MLOPS_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "mlops-tabular"


def sqlite_path(database_url: str) -> Path | None:
    """The file of a Prefect database URL when it is SQLite on disk (None for PostgreSQL or in-memory)."""
    if not database_url.startswith(SQLITE_URL_PREFIX):
        return None
    path = database_url.removeprefix(SQLITE_URL_PREFIX).split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def prefect_database_template() -> Path | None:
    """A migrated empty Prefect database for the installed Prefect version, made on first use.

    `prefect server database upgrade` runs into a scratch file, which then holds the schema and its
    `alembic_version` row and nothing else (no flow, block or work pool: the server registers its block
    types each time it starts); SQLite's backup copies it into one file with no write-ahead log beside
    it, and the file is moved into place atomically, so processes making it at once cannot see half of
    one. None when it cannot be made (a read-only cache, a failed upgrade): the server then migrates its
    own database, as it always does.
    """
    import sqlite3  # these four here, not at the top: `mlops --help` imports this module (12 ms together)
    import subprocess
    import tempfile
    from importlib.metadata import PackageNotFoundError, version

    try:
        template = cache_dir() / f"prefect-{version('prefect')}.db"
    except PackageNotFoundError:
        return None
    if template.is_file():
        return template
    try:
        template.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=template.parent, prefix=".prefect-migrating-") as scratch:
            db = Path(scratch) / "prefect.db"
            env = {k: v for k, v in os.environ.items()
                   if not k.startswith(("PREFECT_SERVER_DATABASE_", "PREFECT_API_DATABASE_", "PREFECT_API_URL"))}
            env.update(PREFECT_HOME=scratch, PREFECT_SERVER_DATABASE_CONNECTION_URL=SQLITE_URL_PREFIX + str(db),
                       PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1")
            done = subprocess.run([sys.executable, "-m", "prefect", "server", "database", "upgrade", "-y"],
                                  env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, timeout=PREFECT_MIGRATION_TIMEOUT)
            if done.returncode != 0 or not _migrated(db):
                return None
            copy = Path(scratch) / "template.db"
            with contextlib.closing(sqlite3.connect(db)) as src, contextlib.closing(sqlite3.connect(copy)) as dst:
                src.backup(dst)
            os.replace(copy, template)
    except (OSError, sqlite3.Error, subprocess.SubprocessError):
        return None
    return template


def _migrated(db: Path) -> bool:
    """The file is a database Alembic has brought to a revision (one `alembic_version` row)."""
    import sqlite3

    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
            return len(con.execute("SELECT version_num FROM alembic_version").fetchall()) == 1
    except sqlite3.Error:
        return False


def seed_prefect_database(database_url: str) -> bool:
    """Put a migrated empty database where a Prefect server on `database_url` will look, when that is an
    SQLite file that does not exist yet; True when it did. An existing database is never touched, and
    PostgreSQL is left to Prefect."""
    import shutil

    path = sqlite_path(database_url)
    if path is None or path.exists():
        return False
    template = prefect_database_template()
    if template is None:
        return False
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.seeding")
        shutil.copyfile(template, partial)
        os.replace(partial, path)
    except OSError:
        return False
    return True
