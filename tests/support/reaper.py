"""Stops a test session's stack if the test process dies without stopping it (SIGKILL, a crash).

`python -m tests.support.reaper STATE_DIR` runs in its own session and reads its stdin, a pipe whose
only writer is the test process: when the test process ends, however it ends, the read returns. If it
did not first write `done` (its finalizer stopped the stack), the reaper stops what the stack's pid file
records, with `mlops down`'s code (each process with its process group and descendants).
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from pathlib import Path

DONE = b"done"
REPO = Path(__file__).resolve().parents[2]


class Reaper:
    """The watching process and the write end of its pipe."""

    def __init__(self, state_dir: Path, log: Path) -> None:
        with open(log, "ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "tests.support.reaper", str(state_dir)], cwd=REPO,
                                         stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)  # a signal to the test's group spares it

    def release(self) -> None:
        """The stack was stopped by its finalizer: the reaper exits without doing anything."""
        with contextlib.suppress(OSError, ValueError):
            assert self.proc.stdin is not None
            self.proc.stdin.write(DONE)
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def main(argv: list[str]) -> int:
    state_dir = Path(argv[0])
    said = sys.stdin.buffer.read()  # returns when the test process closed the pipe or died
    if said == DONE:
        return 0
    from mlops.stack.options import StackError
    from mlops.stack.supervisor import down

    print(f"the test process ended without stopping the stack in {state_dir}; stopping it", flush=True)
    deadline = time.monotonic() + 60
    while True:
        try:
            stopped = down(state_dir, grace=10)
            print(f"stopped: {', '.join(stopped) or 'nothing was running'}", flush=True)
            return 0
        except StackError as exc:  # the pid file's lock is still held by a process on its way out
            if time.monotonic() > deadline:
                print(f"could not stop the stack: {exc}", flush=True)
                return 1
            time.sleep(0.5)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
