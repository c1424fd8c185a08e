"""A real Dask cluster on loopback: one `dask scheduler` and N `dask worker` processes.

Tuning (`search.backend: dask`) and batch scoring (`scoring.backend: dask`) send their work to it. The
tests start one as a context manager; `mlops up --profile production --dask` starts one beside the stack
(the supervisor records each process in the pid file, so `mlops down` stops them) and gives the flows its
address as MLOPS_DASK_ADDRESS. Each worker runs one thread under its nanny with a memory limit: past it
the nanny restarts the worker, so a runaway task cannot take the machine. Ready means the scheduler
reports all N workers, waited on as a condition. Each process runs in its own session and is stopped by
its process group. Nothing here runs at import.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from mlops.core.startup import WaitAborted, WaitTimeout, free_port, wait_until
from mlops.stack.options import StackError, StackOptions, port_taken
from mlops.stack.processes import ProcessRecord, live_process, timestamp
from mlops.stack.readiness import tail

DEFAULT_WORKERS = 2
DEFAULT_MEMORY_LIMIT = "2GiB"
DEFAULT_PORT = 8786
SCHEDULER = "dask-scheduler"


def worker_name(i: int) -> str:
    """The record and Dask name of the i-th worker (1-based): `dask-worker-1`, ..."""
    return f"dask-worker-{i}"


def dask_command() -> list[str]:
    """`<venv>/bin/dask`, or the same CLI through this interpreter when the script is missing."""
    script = Path(sys.executable).parent / "dask"
    return [str(script)] if script.exists() else [sys.executable, "-m", "dask"]


@dataclass
class DaskProcess:
    """One process of the cluster: its name, the running process, its command and its log."""

    name: str
    proc: subprocess.Popen[bytes]
    cmd: list[str]
    log: Path

    def alive(self) -> bool:
        return self.proc.poll() is None


class DaskCluster:
    """`dask scheduler` + `n_workers` x `dask worker --nthreads 1 --memory-limit ...` on `host`.

    `port=0` picks a free port. `launch()` starts the processes and returns at once (the address is known
    before they answer); `wait_ready()` returns once the scheduler reports every worker; `stop()` ends them.
    As a context manager it does all three.
    """

    def __init__(self, n_workers: int = DEFAULT_WORKERS, *, port: int = 0, host: str = "127.0.0.1",
                 memory_limit: str = DEFAULT_MEMORY_LIMIT, logs_dir: Path | None = None,
                 env: Mapping[str, str] | None = None, cwd: Path | None = None) -> None:
        if n_workers < 1:
            raise StackError(f"a Dask cluster needs at least one worker, not {n_workers}")
        self.n_workers, self.host, self.memory_limit = n_workers, host, memory_limit
        self.port = port or free_port(host)
        self.env = dict(os.environ if env is None else env)
        self.cwd = cwd
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if logs_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="mlops-dask-")
            logs_dir = Path(self._tmp.name)
        self.logs_dir = logs_dir
        self.processes: list[DaskProcess] = []

    @property
    def address(self) -> str:
        """The scheduler's address, as clients give it (`tcp://127.0.0.1:8786`)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp://{host}:{self.port}"

    def commands(self) -> list[tuple[str, list[str]]]:
        """(name, command) of the scheduler and each worker, in start order."""
        dask = dask_command()
        scheduler = [*dask, "scheduler", "--host", self.host, "--port", str(self.port), "--no-dashboard"]
        workers = [(worker_name(i), [*dask, "worker", self.address, "--name", worker_name(i), "--host", self.host,
                                     "--nthreads", "1", "--nworkers", "1", "--memory-limit", self.memory_limit,
                                     "--no-dashboard", "--death-timeout", "60",
                                     "--local-directory", str(self.logs_dir / "dask-worker-space")])
                   for i in range(1, self.n_workers + 1)]
        return [(SCHEDULER, scheduler), *workers]

    def launch(self) -> list[DaskProcess]:
        """Start the scheduler and the workers, each in its own session, logging to `<logs_dir>/<name>.log`."""
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        env = {**self.env, "PYTHONUNBUFFERED": "1"}
        for name, cmd in self.commands():
            log = self.logs_dir / f"{name}.log"
            with open(log, "ab") as out:
                out.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S')} {shlex.join(cmd)}\n".encode())
                out.flush()
                proc = subprocess.Popen(cmd, cwd=self.cwd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                        stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)
            self.processes.append(DaskProcess(name, proc, cmd, log))
        return self.processes

    def _gone(self) -> str | None:
        for p in self.processes:
            if not p.alive():
                return (f"the Dask process {p.name} exited (code {p.proc.returncode}) before the cluster was ready; "
                        f"last lines of {p.log}:\n{tail(p.log, 15)}")
        return None

    def wait_ready(self, timeout: float = 60.0, stop: threading.Event | None = None) -> float:
        """Seconds until the scheduler reports all `n_workers` workers; a process exit or the timeout is a
        StackError naming the log to read."""
        from distributed import Client

        t0 = time.monotonic()
        client: list[Any] = []

        def ready() -> bool:
            if not client:
                client.append(Client(self.address, timeout=2, set_as_default=False))
            return len(client[0].nthreads()) >= self.n_workers

        try:
            wait_until(ready, timeout, f"the Dask cluster at {self.address} did not report {self.n_workers} "
                       "worker(s)", interval=0.1, gone=self._gone, stop=stop, ignore=(OSError, TimeoutError),
                       detail=lambda: f"see the logs in {self.logs_dir}")
        except (WaitTimeout, WaitAborted) as exc:
            raise StackError(str(exc)) from None
        finally:
            for c in client:
                c.close()
        return time.monotonic() - t0

    def client(self, timeout: float = 10.0) -> Any:
        """A `distributed.Client` on this cluster (close it, or use it in a `with`)."""
        from distributed import Client

        return Client(self.address, timeout=timeout, set_as_default=False)

    def executed(self) -> dict[str, int]:
        """Tasks each worker has run so far, by worker name (how tests see that the workers did the work)."""
        with self.client() as c:
            counts = c.run(lambda dask_worker: (str(dask_worker.name), dask_worker.state.executed_count))
        return dict(counts.values())

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM each process group (workers first), SIGKILL what is left after `grace` s, and reap them."""
        running = [p for p in reversed(self.processes) if p.alive()]
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            for p in running:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(p.proc.pid, sig)
            deadline = time.monotonic() + wait
            for p in running:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            running = [p for p in running if p.alive()]
            if not running:
                break
        self.processes = []
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> DaskCluster:
        self.launch()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def launch_for_stack(opts: StackOptions, env: Mapping[str, str],
                     echo: Callable[[str], None]) -> tuple[DaskCluster, dict[str, ProcessRecord]]:
    """`mlops up --dask`: the cluster launched on the stack's host and port (MLOPS_DASK_PORT, checked free first),
    logging to the stack's logs, with a pid-file record per process."""
    s = opts.settings
    if port_taken(opts.host, s.dask_port):
        raise StackError(f"port {s.dask_port} on {opts.host} (Dask scheduler) is already taken by another program; "
                         "stop it or choose another port with MLOPS_DASK_PORT")
    cluster = DaskCluster(s.dask_workers, port=s.dask_port, host=opts.host, memory_limit=s.dask_memory_limit,
                          logs_dir=opts.logs_dir, env=env, cwd=opts.project_dir)
    echo(f"starting a Dask scheduler and {s.dask_workers} worker(s) at {cluster.address} ...")
    records = {}
    for p in cluster.launch():
        started = live_process(p.proc.pid)
        records[p.name] = ProcessRecord(name=p.name, pid=p.proc.pid, cmd=p.cmd, log=str(p.log), started_at=timestamp(),
                                        create_time=started.create_time() if started else None)
    return cluster, records


@contextlib.contextmanager
def dask_cluster(n_workers: int = DEFAULT_WORKERS, memory_limit: str = DEFAULT_MEMORY_LIMIT,
                 **kwargs: Any) -> Iterator[DaskCluster]:
    """A ready cluster on a free loopback port for the duration of the block, stopped after it."""
    with DaskCluster(n_workers, memory_limit=memory_limit, **kwargs) as cluster:
        yield cluster

