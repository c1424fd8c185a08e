"""The processes the local stack started, found again by pid and creation time, and the pid file
that records them.

psutil gives the same answers on Linux and macOS (liveness, creation time, descendants, command
lines); nothing here reads the Linux process file system itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from mlops.core.state import LockedJsonFile
from mlops.stack.options import COMPONENTS, StackError

PID_FILE = "stack.json"
# Two readings of one process's creation time agree within this: on Linux psutil derives it from the
# boot time, which follows whole-second clock adjustments. A reused pid starts later than that.
SAME_START_SECONDS = 2.0


def timestamp() -> str:
    """Now, in UTC, as the pid file and the logs write it (2026-01-31T12:00:00Z)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def live_process(pid: int, create_time: float | None = None) -> psutil.Process | None:
    """The running process `pid`, if it started at `create_time` (when given); None if gone or a zombie."""
    try:
        proc = psutil.Process(pid)
        if proc.status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
            return None
        if create_time is not None and abs(proc.create_time() - create_time) > SAME_START_SECONDS:
            return None  # the pid now belongs to another process
        return proc
    except psutil.Error:
        return None


def process_alive(pid: int, create_time: float | None = None) -> bool:
    """True while the process `pid` (started at `create_time`, when given) runs; a zombie is dead."""
    return live_process(pid, create_time) is not None


def _running(proc: psutil.Process) -> bool:
    try:  # is_running() also notices a pid reused since `proc` was looked up
        return proc.is_running() and proc.status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
    except psutil.Error:
        return False


def _reap(pid: int) -> None:
    """Collect the exit status of `pid` if it is our child, so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def is_flow_process(pid: int) -> bool:
    """True while `pid` is a live Prefect flow-run process (not gone, not a zombie, not some other program)."""
    proc = live_process(pid)
    try:
        return proc is not None and any("prefect" in part for part in proc.cmdline())
    except psutil.Error:
        return False


@dataclass
class ProcessRecord:
    """One process the stack started: enough to find it again, and only it."""

    name: str
    pid: int
    create_time: float | None
    cmd: list[str]
    log: str
    url: str | None = None
    started_at: str = ""

    def alive(self) -> bool:
        """True while this very process runs (a reused pid has another creation time)."""
        return process_alive(self.pid, self.create_time)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ProcessRecord:
        """A record from the pid file; older files (Linux only) hold start ticks since boot instead."""
        fields = dict(raw)
        ticks = fields.pop("start_ticks", None)
        if fields.get("create_time") is None and ticks is not None:
            fields["create_time"] = psutil.boot_time() + ticks / os.sysconf("SC_CLK_TCK")
        fields.setdefault("create_time", None)
        return cls(**fields)


def kill_tree(record: ProcessRecord, sig: int = signal.SIGTERM, grace: float = 15.0) -> bool:
    """Stop a recorded process, its process group and the groups of everything it started.

    Returns False when the record's process was already gone. Only the recorded process (checked by
    creation time) and its descendants are signalled; what still runs after `grace` s gets SIGKILL.
    """
    root = live_process(record.pid, record.create_time)
    if root is None:
        _reap(record.pid)
        return False
    family = [root]
    with contextlib.suppress(psutil.Error):
        family += root.children(recursive=True)
    groups = {record.pid}
    for proc in family:
        with contextlib.suppress(OSError):
            groups.add(os.getpgid(proc.pid))
    groups -= {0, 1, os.getpgrp()}
    for sig_now, wait in ((sig, grace), (signal.SIGKILL, 5.0)):
        for group in groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, sig_now)
        for proc in family:  # members that left their group (setsid) but are still ours
            with contextlib.suppress(psutil.Error):
                proc.send_signal(sig_now)  # psutil refuses a pid that now belongs to another process
        deadline = time.monotonic() + wait
        while True:
            _reap(record.pid)
            family = [p for p in family if _running(p)]
            if not family:
                return True
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
    return True


def stop_postgres(record: ProcessRecord, grace: float = 15.0) -> bool:
    """Stop a recorded PostgreSQL server by its fast shutdown (SIGINT to the postmaster only: it ends
    its sessions and writes a checkpoint), then `kill_tree` for anything left. False when it was gone."""
    root = live_process(record.pid, record.create_time)
    if root is None:
        _reap(record.pid)
        return False
    with contextlib.suppress(psutil.Error):
        root.send_signal(signal.SIGINT)
        root.wait(timeout=grace)
    _reap(record.pid)
    kill_tree(record, signal.SIGTERM, grace=5.0)
    return True


# ---- the pid file -----------------------------------------------------------------------------


@dataclass
class StackState:
    state_dir: str
    started_at: str
    urls: dict[str, str] = field(default_factory=dict)
    processes: dict[str, ProcessRecord] = field(default_factory=dict)
    work_pool: str | None = None
    deployments: list[str] = field(default_factory=list)
    supervisor_pid: int = 0
    model_name: str | None = None  # the registered model the model server serves (its config's)
    options: dict[str, Any] = field(default_factory=dict)  # StackOptions.record(): what `restart` reuses

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_raw(cls, raw: Mapping[str, Any]) -> StackState:
        fields = dict(raw)
        procs = {k: ProcessRecord.from_dict(v) for k, v in fields.pop("processes", {}).items()}
        return cls(processes=procs, **fields)

    @classmethod
    def from_json(cls, text: str) -> StackState:
        return cls.from_raw(json.loads(text))

    def running(self) -> dict[str, ProcessRecord]:
        return {k: p for k, p in self.processes.items() if p.alive()}


class PidFile(LockedJsonFile[StackState | None]):
    """`$MLOPS_HOME/stack.json` (the shared locked, atomic JSON file), held for a whole `up` or `down`.

    The holder of the lock writes as processes start (`save`), so a killed `up` still leaves a
    record of what it started; `peek` reads without the lock (`stack-status` while `up` runs).
    """

    def __init__(self, state_dir: Path) -> None:
        super().__init__(state_dir / PID_FILE, "the pid file", lambda: None, parse=StackState.from_raw, dump=asdict,
                         fix="stop any stack processes by hand and delete it", holder="`mlops up` or `mlops down`",
                         timeout_seconds=0.0, error=StackError)

    def peek(self) -> StackState | None:
        return self._read_unlocked()

    def save(self, state: StackState) -> None:
        self._write_unlocked(state)


def pid_file(state_dir: Path) -> Path:
    return state_dir / PID_FILE


def read_state(state_dir: Path) -> StackState | None:
    """What the pid file records (None when there is none); read without the lock."""
    return PidFile(state_dir).peek()


def write_state(state: StackState) -> None:
    """Record the stack atomically (the caller holds `stack_lock`, or nobody else can be writing)."""
    PidFile(Path(state.state_dir)).save(state)


@contextlib.contextmanager
def stack_lock(state_dir: Path) -> Iterator[None]:
    """One `up` or `down` at a time per state folder: a second one fails at once."""
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(PidFile(state_dir).locked())
        except StackError:
            raise StackError(f"another `mlops up` or `mlops down` is working on {state_dir}; wait for it "
                             "to finish") from None
        yield


def log_file(state_dir: Path, component: str) -> Path:
    names = (*COMPONENTS, "postgres", "worker-2", "deploy", "automations", "dask-scheduler", "dask-worker-1")
    if component not in names and not component.removeprefix("dask-worker-").isdigit():
        raise StackError(f"no log named {component!r}; choose from {', '.join(names)}")
    return state_dir.expanduser().resolve() / "logs" / f"{component}.log"


def kill_component(state_dir: Path, component: str, sig: int = signal.SIGKILL) -> bool:
    """Kill one recorded component and what it started (for failure drills: a worker dying mid-run)."""
    state = read_state(state_dir.expanduser().resolve())
    rec = state.processes.get(component) if state else None
    if rec is None:
        raise StackError(f"the stack in {state_dir} has no {component}")
    return kill_tree(rec, sig, grace=5.0)
