"""Infra validation: before the alias moves, prove the registered version serves what the flow saw.

In a fresh Python process (nothing cached from training), the version is loaded by the model
server's own loader (`mlops.serving.model.load_served_model`: artifact, contract, fast
path, self-check) and put behind the server's own ASGI app; the holdout is sent to `POST /predict`
as JSON records, as a client would. The predictions must equal the ones computed in the flow
(class labels exactly; probabilities and regression values within 1e-9, because BLAS may sum a
batch and a single row in different orders).

Then single-row latency is timed at the client: after a warm-up, a robust percentile (p95 by
default) of the timed requests must be under the budget, and one over-budget pass is timed again
before the version fails, so a neighbour's burst of work does not reject a good model. A request's
latency is its wall-clock time less the time the process was runnable but waiting for a core (the
kernel's run-queue wait, /proc/self/task/*/schedstat): on a busy machine the other processes' work
is not counted against the model, while everything the request itself does (parsing, checking,
predicting, waiting on anything but a core) is. The detail gives the wall-clock figure beside it. The timing
can wait for the caller: `start_infra_validation` runs the checks at once and times only when
`measure()` is called, so a flow calls it once its own heavy work (evaluation) is done.

    run = start_infra_validation(name, version, X_holdout, model.predict(X_holdout),
                                 cfg.gate.latency_budget_ms, settings.tracking_uri,
                                 percentile=cfg.gate.latency_percentile)
    ...  # the flow's own work
    passed, detail, latency_ms = run.measure()

`infra_validate(...)` does both at once and returns the same triple.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd

from mlops.core import startup

TOLERANCE = 1e-9
DEFAULT_ROWS = 200
DEFAULT_PERCENTILE = 95.0
WARMUP_ROWS = 20
MAX_HOLDOUT_ROWS = 5000
MEASURE = "measure"


class FreshProcess:
    """The fresh Python process infra validation runs in, started ahead of time.

    It imports the serving stack (model server, MLflow, scikit-learn, skops) and then waits on stdin
    for its one job, so a flow can start it when tuning begins and the imports cost nothing on the
    critical path. It loads nothing from training: the model comes from the registry, by the
    server's loader, once the job names the version. It runs at lower CPU priority so the tuning
    workers keep the cores. Its output goes to a temporary file (a pipe nobody reads could fill and
    stall it). `close()` ends it if it is still running.
    """

    def __init__(self) -> None:
        env = _child_env()
        self._output: IO[str] | None = tempfile.TemporaryFile(mode="w+", prefix="mlops-infra-", suffix=".log")
        self.proc: subprocess.Popen[str] | None = subprocess.Popen(
            [sys.executable, "-m", "mlops.serving.infra_validation", "--wait-for-job"], env=env, cwd=env["MLOPS_REPO"],
            stdin=subprocess.PIPE, stdout=self._output, stderr=subprocess.STDOUT, text=True,
            preexec_fn=_lower_priority,
        )
        self._job_sent = False

    def alive(self) -> bool:
        """Started, not yet given a job, and still running."""
        return self.proc is not None and not self._job_sent and self.proc.poll() is None

    def start(self, argv: list[str]) -> None:
        """Hand the process its job; it runs while the caller goes on."""
        if self.proc is None or self._job_sent:
            raise RuntimeError("this process already ran its job")
        self._job_sent = True
        self.send(json.dumps(argv))

    def send(self, line: str) -> None:
        """One line to the process's stdin (ignored if it already exited; `finish` reports why)."""
        if self.proc is None or self.proc.stdin is None:
            return
        try:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError):
            pass

    def finish(self, timeout: float) -> tuple[int, str]:
        """Close its stdin and wait for it to exit; (exit code, output). Killed on timeout (re-raised)."""
        proc = self.proc
        if proc is None:
            raise RuntimeError("this process already ran its job")
        if proc.stdin is not None:
            try:
                proc.stdin.close()
            except BrokenPipeError:
                pass
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.close()
            raise
        self.proc = None
        output = ""
        if self._output is not None:
            self._output.seek(0)
            output = self._output.read()
        self.close()
        return code, output

    def run(self, argv: list[str], timeout: float) -> tuple[int, str]:
        """Hand the process its job and wait for it; (exit code, captured output)."""
        self.start(argv)
        return self.finish(timeout)

    def close(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc is not None and proc.stdin is not None:
            try:
                proc.stdin.close()
            except BrokenPipeError:
                pass
        output, self._output = self._output, None
        if output is not None:
            output.close()


_spare: FreshProcess | None = None


def prestart_fresh_process() -> FreshProcess:
    """Start the fresh process now for a training flow this process may run later (the CLI's monitor
    starts it before its checks, so the imports overlap them instead of the retrain's search); idempotent.
    An unused one ends at exit."""
    global _spare
    if _spare is None or not _spare.alive():
        _spare = FreshProcess()
        atexit.register(_close_spare)
    return _spare


def take_fresh_process() -> FreshProcess:
    """The process `prestart_fresh_process` started (each is handed out once), else a new one."""
    global _spare
    spare, _spare = _spare, None
    if spare is not None and spare.alive():
        return spare
    if spare is not None:
        spare.close()
    return FreshProcess()


def _close_spare() -> None:
    global _spare
    spare, _spare = _spare, None
    if spare is not None:
        spare.close()


class InfraValidation:
    """A started infra validation: the checks run at once in the fresh process, the latency timing
    waits for `measure()` (or runs at once when started with `two_phase=False`)."""

    def __init__(self, version: str, percentile: float, process: FreshProcess | None, work: Path | None,
                 timeout: float, result: tuple[bool, str, float] | None = None) -> None:
        self.version, self.percentile = str(version), percentile
        self.process, self.work, self.timeout = process, work, timeout
        self.deadline = time.monotonic() + timeout
        self.result = result

    def measure(self) -> tuple[bool, str, float]:
        """Time the version now and wait for the verdict; (passed, detail, latency ms at the percentile)."""
        if self.result is not None:
            return self.result
        assert self.process is not None and self.work is not None
        try:
            self.process.send(MEASURE)
            code, output = self.process.finish(max(1.0, self.deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.result = False, f"infra validation did not finish within {self.timeout:.0f} s", float("nan")
        else:
            self.result = _read_result(self.work, code, output)
        finally:
            self.close()
        return self.result

    def close(self) -> None:
        """End the process and remove the work folder (measure() does this itself)."""
        if self.process is not None:
            self.process.close()
        if self.work is not None:
            shutil.rmtree(self.work, ignore_errors=True)


def start_infra_validation(
    model_name: str,
    version: str,
    holdout: pd.DataFrame,
    expected: np.ndarray,
    budget_ms: float,
    tracking_uri: str,
    rows: int = DEFAULT_ROWS,
    timeout: float = 600.0,
    process: FreshProcess | None = None,
    percentile: float = DEFAULT_PERCENTILE,
    two_phase: bool = True,
) -> InfraValidation:
    """Hand `model_name` version `version` to a fresh process, which loads it the server's way and
    checks its predictions at once; the latency is timed when `measure()` is called.

    `holdout` holds the input columns (extra columns such as the target are ignored); `expected` is
    what the flow's pipeline returned for it: `predict` (labels or values, shape (n,)) or, for a
    classifier, `predict_proba` (shape (n, classes)). At most 5,000 holdout rows are compared;
    `rows` single-row requests (cycling through the holdout) are timed after a warm-up, and the
    `percentile` of their latency must be under `budget_ms`. `process` is a `FreshProcess` started
    earlier; without one, a new process is started here. `timeout` counts from now.
    """
    expected = np.asarray(expected)
    if len(holdout) == 0:
        return InfraValidation(version, percentile, None, None, timeout, (False, "infra validation needs holdout rows", float("nan")))
    if len(expected) != len(holdout):
        return InfraValidation(version, percentile, None, None, timeout, (
            False, f"expected has {len(expected)} rows but the holdout has {len(holdout)}", float("nan")))
    n = min(len(holdout), MAX_HOLDOUT_ROWS)
    work = Path(tempfile.mkdtemp(prefix="mlops-infra-"))
    holdout.head(n).reset_index(drop=True).to_parquet(work / "holdout.parquet", index=False)
    exp = expected[:n]
    if exp.dtype.kind == "O":
        exp = exp.astype(str)
    np.save(work / "expected.npy", exp, allow_pickle=False)
    argv = ["--model", model_name, "--version", str(version), "--tracking-uri", tracking_uri,
            "--work", str(work), "--budget-ms", str(budget_ms), "--rows", str(rows),
            "--percentile", str(percentile)] + (["--two-phase"] if two_phase else [])
    process = process if process is not None else FreshProcess()
    run = InfraValidation(version, percentile, process, work, timeout)
    try:
        process.start(argv)
    except RuntimeError:
        run.close()
        raise
    return run


def infra_validate(
    model_name: str,
    version: str,
    holdout: pd.DataFrame,
    expected: np.ndarray,
    budget_ms: float,
    tracking_uri: str,
    rows: int = DEFAULT_ROWS,
    timeout: float = 600.0,
    process: FreshProcess | None = None,
    percentile: float = DEFAULT_PERCENTILE,
) -> tuple[bool, str, float]:
    """Check and time the version in one go; (passed, detail, latency ms at `percentile`).

    The same as `start_infra_validation(...).measure()` with the timing right after the checks.
    """
    return start_infra_validation(model_name, version, holdout, expected, budget_ms, tracking_uri, rows, timeout,
                                  process, percentile, two_phase=False).measure()


def _read_result(work: Path, code: int, output: str) -> tuple[bool, str, float]:
    result_path = work / "result.json"
    if not result_path.exists():
        tail = output.strip().splitlines()[-5:]
        return False, f"infra validation process failed (exit {code}): {' | '.join(tail)[:800]}", float("nan")
    result = json.loads(result_path.read_text())
    return bool(result["passed"]), str(result["detail"]), float(result["latency_ms"])


@dataclass
class LatencyVerdict:
    passed: bool
    latency_ms: float  # at the percentile, from the pass that decided, run-queue wait left out
    detail: str
    retried: bool


# One timed request: (wall-clock ms, ms of it the process spent runnable but waiting for a core).
Timing = tuple[float, float]
TimePass = Callable[[int, int], Awaitable[list[Timing]]]
BUSY_SHARE = 0.05  # a pass whose requests waited this share of their wall time for a core says so in the detail


async def measure_latency(time_pass: TimePass, budget_ms: float, percentile: float = DEFAULT_PERCENTILE,
                          rows: int = DEFAULT_ROWS, warmup: int = WARMUP_ROWS) -> LatencyVerdict:
    """Compare the `percentile` of one timing pass with the budget; an over-budget pass is timed once more.

    `time_pass(warmup, rows)` sends `warmup` untimed then `rows` timed requests and returns each timed
    request's `Timing`. A request's latency is its wall time less its run-queue wait. The detail says
    how the latency was measured.
    """
    label = f"p{percentile:g}"
    first = _PassFigures(await time_pass(warmup, rows), percentile)
    how = f"{first.count} timed single-row requests after {warmup} warm-up"
    if first.latency <= budget_ms:
        return LatencyVerdict(True, first.latency, f"{label} single-row latency {first.latency:.2f} ms within the "
                                                   f"budget of {budget_ms:g} ms ({how}; p50 {first.p50:.2f} ms, max "
                                                   f"{first.max:.2f} ms{first.busy(label)}; not retried)", False)
    second = _PassFigures(await time_pass(warmup, rows), percentile)
    if second.latency <= budget_ms:
        return LatencyVerdict(True, second.latency, f"{label} single-row latency {second.latency:.2f} ms within the "
                                                    f"budget of {budget_ms:g} ms on the retry ({how}, twice; the first "
                                                    f"pass measured {label} {first.latency:.2f} ms; p50 "
                                                    f"{second.p50:.2f} ms{second.busy(label)})", True)
    return LatencyVerdict(False, second.latency, f"{label} single-row latency {second.latency:.2f} ms is over the "
                                                 f"budget of {budget_ms:g} ms on two passes (first "
                                                 f"{first.latency:.2f} ms, retried {second.latency:.2f} ms; {how} "
                                                 f"each; p50 {second.p50:.2f} ms{second.busy(label)})", True)


class _PassFigures:
    """One timing pass: the percentile, p50 and max of its latencies (run-queue wait left out), in ms."""

    def __init__(self, timings: list[Timing], percentile: float) -> None:
        t = np.asarray(timings, dtype=float).reshape(-1, 2)
        self.count = len(t)
        if not self.count:
            self.latency = self.p50 = self.max = self.wall = float("inf")
            self.waited_share = 0.0
            return
        wall, waited = t[:, 0], np.clip(t[:, 1], 0.0, t[:, 0])
        net = wall - waited
        self.latency, self.p50 = float(np.percentile(net, percentile)), float(np.percentile(net, 50))
        self.max, self.wall = float(net.max()), float(np.percentile(wall, percentile))
        self.waited_share = float(waited.sum() / wall.sum()) if wall.sum() > 0 else 0.0

    def busy(self, label: str) -> str:
        """What the machine's load added, when it added enough to mention."""
        if self.waited_share < BUSY_SHARE:
            return ""
        return (f"; the machine was busy: the requests waited for a core {self.waited_share:.0%} of their wall "
                f"time, not counted (wall-clock {label} {self.wall:.2f} ms)")


def waited_for_a_core_ms() -> float:
    """Milliseconds this process's threads have spent runnable but not running (waiting for a core), summed
    over its live threads (Linux's /proc/self/task/*/schedstat, second field); 0.0 where the kernel does not
    say, so a latency is then its wall time."""
    total = 0
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return 0.0
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/schedstat", "rb") as f:
                total += int(f.read().split()[1])
        except (OSError, IndexError, ValueError):
            continue  # the thread ended between the listing and the read
    return total / 1e6


def _child_env() -> dict[str, str]:
    repo = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, **dict.fromkeys(startup.NATIVE_THREAD_VARS, "1"), "MLOPS_REPO": repo}
    env["PYTHONPATH"] = repo + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _lower_priority() -> None:
    os.nice(10)


# ---------------------------------------------------------------------------------------------
# the fresh process


def _compare(task: str, expected: np.ndarray, labels: list[Any], proba: list[list[float]] | None,
             rows: np.ndarray) -> str | None:
    """None when the served outputs match `expected` for these holdout rows, else what differs."""
    exp = expected[rows]
    if exp.ndim == 2:
        if proba is None:
            return "the flow passed probabilities but the server returns none"
        got = np.asarray(proba, dtype=float)
        if got.shape != exp.shape:
            return f"probabilities have shape {got.shape}, expected {exp.shape}"
        bad = ~np.isclose(got, exp.astype(float), rtol=TOLERANCE, atol=TOLERANCE).all(axis=1)
    elif task == "classification" or exp.dtype.kind in "OUSb":
        got_s = np.asarray([str(v) for v in labels])
        exp_s = np.asarray([str(v.item() if hasattr(v, "item") else v) for v in exp])
        bad = got_s != exp_s
        got = got_s
        exp = exp_s
    else:
        got = np.asarray(labels, dtype=float)
        bad = ~np.isclose(got, exp.astype(float), rtol=TOLERANCE, atol=TOLERANCE)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        return (f"{int(bad.sum())} of {len(bad)} predictions differ from the flow's (first: holdout row {int(rows[i])}, "
                f"flow {_py(exp[i])!r}, served {_py(got[i])!r})")
    return None


def _py(v: Any) -> Any:
    v = v.tolist() if hasattr(v, "tolist") else v
    return v


class _Refused(Exception):
    """The server answered a timed request with an error."""


def _failed(detail: str) -> dict[str, Any]:
    return {"passed": False, "detail": detail, "latency_ms": float("nan")}


async def _run_checks(args: argparse.Namespace) -> dict[str, Any]:
    # In the fresh process only, preloaded there (startup.SERVING_STACK); the flow's process, which
    # imports this module to start that one, needs none of them.
    import httpx
    import orjson

    from mlops.core.config import ServingConfig
    from mlops.serving.app import create_app
    from mlops.serving.model import LoadError, load_served_model
    from mlops.serving.records import records_from_frame

    work = Path(args.work)
    started = time.perf_counter()
    try:
        m = load_served_model(args.model, args.version, args.tracking_uri)
    except LoadError as exc:
        return _failed(f"the server cannot load version {args.version}: {exc}")
    load_seconds = time.perf_counter() - started
    holdout = pd.read_parquet(work / "holdout.parquet")
    expected = np.load(work / "expected.npy", allow_pickle=False)
    inputs = [c for c in m.validator.names if c in holdout.columns]
    records = records_from_frame(holdout[inputs])

    app = create_app(args.model, serving=ServingConfig(), log_dir=None, environ={},
                     source=_Fixed(m))  # the served app, without its watcher thread or prediction log
    app.state.server.watcher.current = m
    transport = httpx.ASGITransport(app=app)
    headers = {"content-type": "application/json"}
    async with httpx.AsyncClient(transport=transport, base_url="http://infra-validation") as client:
        all_rows = np.arange(len(records))
        for lo in range(0, len(records), 1000):
            part = records[lo:lo + 1000]
            r = await client.post("/predict", content=orjson.dumps(part), headers=headers)
            if r.status_code != 200:
                return _failed(f"the server answered {r.status_code} to holdout rows {lo}-{lo + len(part) - 1}: "
                               f"{r.text[:300]}")
            body = r.json()
            problem = _compare(m.task, expected, body["predictions"], body.get("probabilities"), all_rows[lo:lo + len(part)])
            if problem:
                return _failed(problem)
        for row in range(min(args.rows, len(records))):
            r = await client.post("/predict", content=orjson.dumps(records[row]), headers=headers)
            if r.status_code != 200:
                return _failed(f"the server answered {r.status_code} to single-row request {row}: {r.text[:300]}")
            body = r.json()
            problem = _compare(m.task, expected, body["predictions"], body.get("probabilities"), np.array([row]))
            if problem:
                return _failed("single-row request: " + problem)
        checked = (f"version {m.version}: {len(records)} holdout rows match the flow's predictions, in batches and "
                   f"{min(args.rows, len(records))} single rows")
        if args.two_phase:  # time only when the caller is not computing beside it
            (work / "checked.json").write_text(json.dumps({"detail": checked}))
            line = await asyncio.to_thread(sys.stdin.readline)
            if line.strip() != MEASURE:
                return _failed(f"{checked}; latency not measured: the caller never asked for it")
            when = "timed on the caller's signal"
        else:
            when = "timed right after the checks"
        payloads = [orjson.dumps(records[i % len(records)]) for i in range(args.rows + WARMUP_ROWS)]

        async def time_pass(warmup: int, rows: int) -> list[Timing]:
            timings = []
            for i in range(warmup + rows):
                waited = waited_for_a_core_ms()
                t0 = time.perf_counter()
                r = await client.post("/predict", content=payloads[i % len(payloads)], headers=headers)
                elapsed = time.perf_counter() - t0
                waited = waited_for_a_core_ms() - waited
                if r.status_code != 200:
                    raise _Refused(f"the server answered {r.status_code} to a timed single-row request: {r.text[:300]}")
                if i >= warmup:
                    timings.append((elapsed * 1000.0, waited))
            return timings

        try:
            latency = await measure_latency(time_pass, args.budget_ms, args.percentile, args.rows, WARMUP_ROWS)
        except _Refused as exc:
            return _failed(f"{checked}; {exc}")
    path = m.fast.describe if m.fast is not None else m.fast_reason
    detail = f"{checked}; {latency.detail}, {when}; loaded in {load_seconds:.1f} s; scoring path: {path}"
    return {"passed": latency.passed, "detail": detail, "latency_ms": latency.latency_ms,
            "percentile": args.percentile, "retried": latency.retried}


class _Fixed:
    def __init__(self, m: Any) -> None:
        self.m = m

    def resolve(self) -> str:
        return str(self.m.version)

    def load(self, version: str) -> Any:
        return self.m


def main(argv: list[str] | None = None) -> int:
    if argv is None and sys.argv[1:] == ["--wait-for-job"]:
        startup.preload(*startup.SERVING_STACK)  # while the flow still searches
        line = sys.stdin.readline()
        if not line.strip():
            return 0  # closed without a job
        argv = json.loads(line)
    parser = argparse.ArgumentParser(prog="python -m mlops.serving.infra_validation")
    parser.add_argument("--model", required=True)
    parser.add_argument("--version", required=True)
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--work", required=True)
    parser.add_argument("--budget-ms", type=float, required=True)
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS)
    parser.add_argument("--percentile", type=float, default=DEFAULT_PERCENTILE)
    parser.add_argument("--two-phase", action="store_true", help="after the checks, wait for a 'measure' line")
    args = parser.parse_args(argv)
    from mlops.core.settings import quiet_libraries  # the fresh process's (see _run_checks)

    os.environ["MLFLOW_TRACKING_URI"] = args.tracking_uri
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    logging.basicConfig(level=logging.WARNING)
    quiet_libraries()
    result = asyncio.run(_run_checks(args))
    (Path(args.work) / "result.json").write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
