"""A test run killed by a CI timeout leaves no stack behind. A pytest process (loading tests/conftest.py,
whose hook turns SIGTERM into Ctrl-C) whose test started a stack through the e2e fixture's code
(tests/support/stack.start_stack: MLflow and the model server here, each with worker processes of its own)
is sent SIGTERM: the run ends like Ctrl-C, the session finalizer runs `mlops down`, and every stack process
is gone. Sent SIGKILL instead, it cannot clean up; the reaper process it left watching does."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from mlops.core.startup import wait_until
from mlops.stack.processes import read_state
from tests.conftest import REPO
from tests.support.loopback import tail

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

INNER = '''
import os
import threading
from pathlib import Path

from mlops.stack import supervisor as stack
from tests.conftest import write_config
from tests.support.loopback import free_port
from tests.support.stack import start_stack


def test_holds_a_stack(request):
    work = Path(os.environ["SIGTERM_TEST_WORK"])
    opts = stack.StackOptions.from_env(
        environ=dict(os.environ), state_dir=work / "state", config_path=write_config(work),
        components=("mlflow", "model-server"), prefect_port=free_port(), mlflow_port=free_port(),
        serve_port=free_port(), webhook_port=free_port(), schedules=False, timeout=240.0)
    start_stack(request, opts)
    (work / "ready").write_text("up")
    threading.Event().wait()  # until the run is stopped from outside
'''


def stack_processes(state_dir: Path) -> list[psutil.Process]:
    """Every running process the stack's pid file records, with its descendants."""
    state = read_state(state_dir)
    assert state is not None and state.processes, "no stack recorded"
    found = []
    for rec in state.processes.values():
        proc = psutil.Process(rec.pid)
        found += [proc, *proc.children(recursive=True)]
    return found


def reaper_log(state_dir: Path) -> str:
    log = state_dir.parent / f"reaper-{state_dir.name}.log"
    return log.read_text() if log.exists() else ""


def running(procs: list[psutil.Process]) -> list[psutil.Process]:
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            continue
    return out


@pytest.fixture
def held(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path, list[psutil.Process]]]:
    """A pytest run holding a started stack: (its process, the stack's state folder, the stack's processes)."""
    test = tmp_path / "inner" / "test_inner.py"
    test.parent.mkdir()
    test.write_text(INNER)
    work = tmp_path / "work"
    work.mkdir()
    log = tmp_path / "inner.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "MLFLOW_", "PREFECT_API"))}
    env["SIGTERM_TEST_WORK"] = str(work)
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "pytest", str(test), "-q", "-p", "tests.conftest",
                                 "-p", "no:cacheprovider", "--rootdir", str(test.parent)], cwd=REPO, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    procs: list[psutil.Process] = []
    try:
        wait_until(lambda: (work / "ready").exists(), 300, "the inner test never started its stack", interval=0.2,
                   gone=lambda: None if proc.poll() is None else f"the inner run exited:\n{tail(log, 60)}")
        procs = stack_processes(work / "state")
        assert len(procs) > 2 and {"mlflow", "model-server"} <= set(read_state(work / "state").processes)
        yield proc, work / "state", procs
    finally:  # whatever happened, nothing this test started outlives it
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for p in running(procs):
            p.kill()


def test_sigterm_to_the_test_run_stops_every_stack_process(
        held: tuple[subprocess.Popen[bytes], Path, list[psutil.Process]]) -> None:
    proc, state_dir, procs = held
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == pytest.ExitCode.INTERRUPTED
    wait_until(lambda: not running(procs), 60, "stack processes outlived the test run",
               detail=lambda: str([(p.pid, p.name()) for p in running(procs)]))
    assert read_state(state_dir) is None  # `mlops down` ran and removed the pid file
    assert "ended without stopping" not in reaper_log(state_dir)  # the finalizer stopped it, not the reaper


def test_sigkill_to_the_test_run_leaves_the_reaper_to_stop_them(
        held: tuple[subprocess.Popen[bytes], Path, list[psutil.Process]]) -> None:
    proc, state_dir, procs = held
    proc.kill()  # no handler, no finalizer
    proc.wait(timeout=30)
    reaper_log = state_dir.parent / f"reaper-{state_dir.name}.log"
    wait_until(lambda: not running(procs) and read_state(state_dir) is None, 90,
               "stack processes outlived a killed test run",
               detail=lambda: str([(p.pid, p.name()) for p in running(procs)]) + "\n" + tail(reaper_log))
    assert "ended without stopping the stack" in reaper_log.read_text()
