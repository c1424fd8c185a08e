"""Infra validation: before the alias moves, prove the registered version serves what the flow saw.

In a fresh Python process (nothing cached from training), the version is loaded by the model
server's own loader (`deployments.model_server.model.load_served_model`: artifact, contract, fast
path, self-check) and put behind the server's own ASGI app; the holdout is sent to `POST /predict`
as JSON records, as a client would. The predictions must equal the ones computed in the flow
(class labels exactly; probabilities and regression values within 1e-9, because BLAS may sum a
batch and a single row in different orders), and the p99 latency of single-row requests, timed at
the client, must be under the budget.

    passed, detail, p99_ms = infra_validate(name, version, X_holdout, model.predict(X_holdout),
                                            cfg.gate.latency_budget_ms, settings.tracking_uri)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

TOLERANCE = 1e-9
DEFAULT_ROWS = 200
MAX_HOLDOUT_ROWS = 5000


class FreshProcess:
    """The fresh Python process infra validation runs in, started ahead of time.

    It imports the serving stack (model server, MLflow, scikit-learn, skops) and then waits on stdin
    for its one job, so a flow can start it when tuning begins and the imports cost nothing on the
    critical path. It loads nothing from training: the model comes from the registry, by the
    server's loader, once the job names the version. It runs at lower CPU priority so the tuning
    workers keep the cores. `close()` ends it if it never got a job.
    """

    def __init__(self) -> None:
        env = _child_env()
        self.proc: subprocess.Popen[str] | None = subprocess.Popen(
            [sys.executable, "-m", "mlops.infra_validation", "--wait-for-job"], env=env, cwd=env["MLOPS_REPO"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            preexec_fn=_lower_priority,
        )

    def run(self, argv: list[str], timeout: float) -> tuple[int, str]:
        """Hand the process its job; (exit code, captured output)."""
        proc, self.proc = self.proc, None
        if proc is None:
            raise RuntimeError("this process already ran its job")
        try:
            out, err = proc.communicate(json.dumps(argv) + "\n", timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise
        except BrokenPipeError:  # it died while importing
            out, err = proc.communicate()
        return proc.returncode, (err or "") + (out or "")

    def close(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.communicate()


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
) -> tuple[bool, str, float]:
    """Serve `model_name` version `version` in a fresh process and check it; (passed, detail, p99 ms).

    `holdout` holds the input columns (extra columns such as the target are ignored); `expected` is
    what the flow's pipeline returned for it: `predict` (labels or values, shape (n,)) or, for a
    classifier, `predict_proba` (shape (n, classes)). At most 5,000 holdout rows are compared;
    `rows` single-row requests (cycling through the holdout) are timed. `process` is a
    `FreshProcess` started earlier; without one, a new process is started here.
    """
    expected = np.asarray(expected)
    if len(holdout) == 0:
        return False, "infra validation needs holdout rows", float("nan")
    if len(expected) != len(holdout):
        return False, f"expected has {len(expected)} rows but the holdout has {len(holdout)}", float("nan")
    n = min(len(holdout), MAX_HOLDOUT_ROWS)
    with tempfile.TemporaryDirectory(prefix="mlops-infra-") as tmp:
        work = Path(tmp)
        holdout.head(n).reset_index(drop=True).to_parquet(work / "holdout.parquet", index=False)
        exp = expected[:n]
        if exp.dtype.kind == "O":
            exp = exp.astype(str)
        np.save(work / "expected.npy", exp, allow_pickle=False)
        argv = ["--model", model_name, "--version", str(version), "--tracking-uri", tracking_uri,
                "--work", str(work), "--budget-ms", str(budget_ms), "--rows", str(rows)]
        try:
            if process is not None:
                code, output = process.run(argv, timeout)
            else:
                env = _child_env()
                proc = subprocess.run([sys.executable, "-m", "mlops.infra_validation", *argv], env=env,
                                      cwd=env["MLOPS_REPO"], capture_output=True, text=True, timeout=timeout)
                code, output = proc.returncode, proc.stderr + proc.stdout
        except subprocess.TimeoutExpired:
            return False, f"infra validation did not finish within {timeout:.0f} s", float("nan")
        result_path = work / "result.json"
        if not result_path.exists():
            tail = output.strip().splitlines()[-5:]
            return False, f"infra validation process failed (exit {code}): {' | '.join(tail)[:800]}", float("nan")
        result = json.loads(result_path.read_text())
    return bool(result["passed"]), str(result["detail"]), float(result["p99_ms"])


def _child_env() -> dict[str, str]:
    repo = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "MLOPS_REPO": repo}
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


async def _run_checks(args: argparse.Namespace) -> dict[str, Any]:
    import httpx
    import orjson

    from deployments.model_server.app import create_app
    from deployments.model_server.model import LoadError, load_served_model
    from deployments.model_server.records import records_from_frame
    from mlops.config import ServingConfig

    work = Path(args.work)
    started = time.perf_counter()
    try:
        m = load_served_model(args.model, args.version, args.tracking_uri)
    except LoadError as exc:
        return {"passed": False, "detail": f"the server cannot load version {args.version}: {exc}", "p99_ms": float("nan")}
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
                return {"passed": False, "p99_ms": float("nan"),
                        "detail": f"the server answered {r.status_code} to holdout rows {lo}-{lo + len(part) - 1}: "
                                  f"{r.text[:300]}"}
            body = r.json()
            problem = _compare(m.task, expected, body["predictions"], body.get("probabilities"), all_rows[lo:lo + len(part)])
            if problem:
                return {"passed": False, "detail": problem, "p99_ms": float("nan")}
        timings = []
        warmup = min(20, args.rows)
        for i in range(warmup + args.rows):
            row = i % len(records)
            payload = orjson.dumps(records[row])
            t0 = time.perf_counter()
            r = await client.post("/predict", content=payload, headers=headers)
            elapsed = time.perf_counter() - t0
            if r.status_code != 200:
                return {"passed": False, "p99_ms": float("nan"),
                        "detail": f"the server answered {r.status_code} to single-row request {row}: {r.text[:300]}"}
            body = r.json()
            problem = _compare(m.task, expected, body["predictions"], body.get("probabilities"), np.array([row]))
            if problem:
                return {"passed": False, "detail": "single-row request: " + problem, "p99_ms": float("nan")}
            if i >= warmup:
                timings.append(elapsed * 1000.0)
    p50, p99 = (float(np.percentile(timings, q)) for q in (50, 99))
    path = m.fast.describe if m.fast is not None else m.fast_reason
    summary = (f"version {m.version}: {len(records)} holdout rows match the flow's predictions; "
               f"{len(timings)} single-row requests p50 {p50:.2f} ms, p99 {p99:.2f} ms (budget {args.budget_ms:g} ms); "
               f"loaded in {load_seconds:.1f} s; scoring path: {path}")
    if p99 > args.budget_ms:
        return {"passed": False, "detail": f"p99 single-row latency {p99:.2f} ms is over the budget of "
                                           f"{args.budget_ms:g} ms ({summary})", "p99_ms": p99}
    return {"passed": True, "detail": summary, "p99_ms": p99}


def _import_serving_stack() -> None:
    import gc

    gc.disable()  # nothing to collect while importing; the imported heap is then frozen
    import httpx  # noqa: F401
    import mlflow.sklearn  # noqa: F401
    import orjson  # noqa: F401
    import skops.io  # noqa: F401

    from deployments.model_server.app import create_app  # noqa: F401
    from deployments.model_server.model import load_served_model  # noqa: F401

    gc.freeze()
    gc.enable()


class _Fixed:
    def __init__(self, m: Any) -> None:
        self.m = m

    def resolve(self) -> str:
        return str(self.m.version)

    def load(self, version: str) -> Any:
        return self.m


def main(argv: list[str] | None = None) -> int:
    import asyncio
    import logging

    if argv is None and sys.argv[1:] == ["--wait-for-job"]:
        _import_serving_stack()
        line = sys.stdin.readline()
        if not line.strip():
            return 0  # closed without a job
        argv = json.loads(line)
    parser = argparse.ArgumentParser(prog="python -m mlops.infra_validation")
    parser.add_argument("--model", required=True)
    parser.add_argument("--version", required=True)
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--work", required=True)
    parser.add_argument("--budget-ms", type=float, required=True)
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS)
    args = parser.parse_args(argv)
    from mlops.settings import quiet_libraries

    os.environ["MLFLOW_TRACKING_URI"] = args.tracking_uri
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    logging.basicConfig(level=logging.WARNING)
    quiet_libraries()
    result = asyncio.run(_run_checks(args))
    (Path(args.work) / "result.json").write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
