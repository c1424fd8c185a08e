"""A private Prefect API for one command-line run.

With no `PREFECT_API_URL` set, Prefect would start its temporary server lazily, from inside this
process, once the first flow runs: its import and start-up then sit on the run's critical path.
`start_local_api()` instead launches the same server (`prefect.server.api.server:create_app` under
uvicorn, UI off, the database under `PREFECT_HOME`) as a child process before Prefect is imported
here, points `PREFECT_API_URL` at it, and returns at once, so the server boots on the other core
while this process imports its libraries. `wait_ready()` blocks until `/api/health` answers. The
child is stopped at exit, and the kernel stops it if this process dies first (Linux).

Nothing here imports Prefect except `serve()`, which runs in the child.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import subprocess
import sys

from mlops.core.startup import WaitTimeout, free_port, frozen_imports, seed_prefect_database, wait_until

STARTUP_TIMEOUT = 120.0


class LocalAPI:
    """One uvicorn child serving Prefect's API on a free loopback port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/api"
        self.proc: subprocess.Popen[bytes] | None = None
        self._ready = False

    def start(self) -> None:
        env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1",
               "PREFECT__SERVER_FINAL": "1"}
        env.pop("PREFECT_API_URL", None)
        env.pop("PREFECT_UI_URL", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlops.cli.local_api", str(self.port)],
            env=env, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent,
        )

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT) -> None:
        """Block until the API answers its health check; a child that exits or hangs is a one-line error."""
        if self._ready:
            return
        proc = self.proc
        assert proc is not None

        def exited() -> str | None:
            if proc.poll() is None:
                return None
            return f"the local Prefect server exited with code {proc.returncode} while starting on 127.0.0.1:{self.port}"

        try:
            wait_until(self._healthy, timeout, f"the local Prefect server did not answer on 127.0.0.1:{self.port}",
                       gone=exited)
        except WaitTimeout:
            self.stop()
            raise
        self._ready = True

    def _healthy(self) -> bool:
        """`/api/health` answers `true`."""
        import urllib.request  # here: the CLI imports this module on every command, `--help` included

        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2) as r:
                return r.status == 200 and json.loads(r.read() or b"false") is True
        except (OSError, ValueError):  # URLError, refused, timed out; a body that is not JSON
            return False

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


_current: LocalAPI | None = None


def start_local_api() -> LocalAPI | None:
    """Launch the private API unless one is configured (`PREFECT_API_URL`); idempotent. Must run before
    Prefect's settings are first read in this process, since it sets `PREFECT_API_URL`."""
    global _current
    from mlops.core.settings import get_settings  # not at the top: the server child does not need it

    if _current is not None:
        return _current
    if get_settings().prefect_api_url:
        return None
    api = LocalAPI()
    api.start()
    os.environ["PREFECT_API_URL"] = api.url
    # this server has no UI and ends with the run: no "View at" links to it
    os.environ.setdefault("PREFECT_UI_URL", "")
    atexit.register(api.stop)
    _current = api
    return api


def current() -> LocalAPI | None:
    """The private API this process started, if any."""
    return _current


def wait_local_api() -> None:
    """Wait for the private API started by `start_local_api()` (no-op when none was started)."""
    if _current is not None:
        _current.wait_ready()


def serve(port: int) -> None:
    """In the child: Prefect's server app under uvicorn on 127.0.0.1:`port`, as
    `uvicorn --factory prefect.server.api.server:create_app` would run it, with the cyclic GC off
    while it imports and the imported heap frozen, and a new database seeded already migrated (its
    start-up is the local run's critical path)."""
    with frozen_imports():
        import uvicorn
        from prefect.server.api.server import create_app
        from prefect.settings import get_current_settings

        url = get_current_settings().server.database.connection_url
        if url is not None:  # a new state folder starts from a migrated database, not an empty one
            seed_prefect_database(url.get_secret_value())
        app = create_app()
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="error", lifespan="on")


def _die_with_parent() -> None:
    """In the child: ask the kernel for SIGTERM when the parent dies (Linux), so no server outlives a
    killed run."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


if __name__ == "__main__":
    serve(int(sys.argv[1]))
