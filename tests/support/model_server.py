"""Helpers for tests and benchmarks: register a small model version, run the server on loopback."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from mlops.core.startup import WaitTimeout, http_ok, wait_until
from tests.support.loopback import free_port, wait_started

__all__ = ["churn_frame", "fit_pipeline", "free_port", "isolated_state", "register_model", "server_process",
           "stub_version", "wait_ready"]

REPO = Path(__file__).resolve().parents[2]


def churn_frame(rows: int = 2000, seed: int = 3, drift: float = 0.0) -> pd.DataFrame:
    """Generated churn rows cast to the contract kinds, as training sees them."""
    from mlops.core.data import generate_churn

    return generate_churn(rows, seed=seed, drift=drift)


def fit_pipeline(df: pd.DataFrame, target: str, task: str = "classification", family: str = "hist_gradient_boosting",
                 params: dict[str, Any] | None = None, id_column: str | None = None,
                 timestamp_column: str | None = None, seed: int = 0,
                 date_parts: list[str] | None = None) -> tuple[Any, Any, pd.DataFrame]:
    """(pipeline, contract, coerced training frame) the way the training flow builds them (`date_parts`: the
    features' date parts, the default's if None)."""
    from sklearn.pipeline import Pipeline

    from mlops.core.config import FeatureConfig, ValidationConfig
    from mlops.core.contract import coerce_to_contract, infer_contract
    from mlops.core.features import build_preprocessor
    from mlops.training.tuning import make_estimator

    contract = infer_contract(df, target, task, ValidationConfig(), id_column, timestamp_column)
    frame = coerce_to_contract(df, contract).frame
    X, y = frame.drop(columns=[target]), frame[target]
    features = FeatureConfig() if date_parts is None else FeatureConfig(date_parts=date_parts)
    pipe = Pipeline([("features", build_preprocessor(contract, features)),
                     ("model", make_estimator(family, task, dict(params or {}), seed))])
    pipe.fit(X, y)
    return pipe, contract, frame


def register_model(name: str, pipeline: Any, contract: Any, frame: pd.DataFrame, promote: bool = True,
                   reference_rows: int = 300) -> str:
    """Log and register a fitted pipeline with its contract and reference sample (the registry's
    conventions) and a sealed passing gate verdict, optionally promote it to champion; returns the version.
    Uses the current MLflow store."""
    import mlflow
    import numpy as np

    from mlops.core.settings import get_settings
    from mlops.registry import versions as registry
    from mlops.registry.tracking import log_model_version, log_run_artifacts
    from mlops.registry.verdict import seal_verdict

    target = contract.target
    registry.ensure_experiment(f"{name}-tests", get_settings().artifact_root)
    X = frame.drop(columns=[target])
    ref = frame.sample(n=min(reference_rows, len(frame)), random_state=0).reset_index(drop=True)
    Xr = ref.drop(columns=[target])
    ref["prediction"] = np.asarray(pipeline.predict(Xr))
    if contract.task == "classification":
        proba = pipeline.predict_proba(Xr)
        if proba.shape[1] == 2:
            ref["prediction_proba"] = proba[:, 1]
    with tempfile.TemporaryDirectory() as tmp:
        ref_path = Path(tmp) / "reference.parquet"
        ref.to_parquet(ref_path, index=False)
        with mlflow.start_run(run_name=f"register-{name}") as run:
            run_id = run.info.run_id
        version = log_model_version(run_id, pipeline, name, X.head(50), pipeline.predict(X.head(50)),
                                    optional_columns=contract.optional_inputs)
        log_run_artifacts(run_id, [("reference", ref_path)], {"contract/contract.json": contract.to_json()})
    seal_verdict(name, version, passed=True)  # as the training flow's gate does, with the state folder's key
    if promote:
        registry.promote(name, version, by="tests", reason="test fixture")
    return version


def stub_version(name: str, folder: Path, passed: bool | None, tags: dict[str, str] | None = None) -> str:
    """A version whose "model" is a small folder of bytes (for tests of tags, aliases and seals, not serving),
    its gate verdict sealed as the training flow seals it (`passed` None: no verdict); returns the version."""
    from mlops.registry import versions as registry
    from mlops.registry.verdict import seal_verdict

    c = registry.client()
    try:
        c.get_registered_model(name)
    except Exception:  # noqa: BLE001 - not there yet
        c.create_registered_model(name)
    n = len(c.search_model_versions(f"name='{name}'")) + 1
    files = folder / f"{name}-files-{n}"
    files.mkdir(parents=True)
    (files / "MLmodel").write_text(f"flavors: {{}}\nrun_id: stub-{n}\n")
    (files / "model.bin").write_bytes(n.to_bytes(2, "big") * 8)
    version = str(c.create_model_version(name, source=files.as_uri(), tags=tags or {}).version)
    if passed is not None:
        seal_verdict(name, version, passed)
    return version


@dataclass
class ServerProcess:
    url: str
    process: subprocess.Popen[bytes]
    log: Path


def wait_ready(url: str, timeout: float = 90.0, proc: subprocess.Popen[bytes] | None = None,
               log: Path | None = None, workers: int = 1) -> None:
    """Until `/ready` answers 200 and, with several workers, every worker has published that its model
    is loaded (one worker can be ready while another still loads)."""
    import httpx

    def loaded() -> bool:
        if not http_ok(f"{url}/ready"):
            return False
        if workers <= 1:
            return True
        text = httpx.get(f"{url}/metrics", timeout=2.0).text
        ready = [ln for ln in text.splitlines() if ln.startswith("mlops_model_ready{worker=") and ln.endswith(" 1")]
        return len(ready) >= workers

    if proc is None:
        try:
            wait_until(loaded, timeout, f"server at {url} was not ready", interval=0.2, ignore=(httpx.HTTPError,))
        except WaitTimeout as exc:
            raise TimeoutError(str(exc)) from None
        return
    wait_started(loaded, proc, f"the server at {url}", timeout, log)


@contextmanager
def server_process(model: str, work: Path, extra_args: list[str] | None = None, env: dict[str, str] | None = None,
                   port: int | None = None, ready: bool = True, timeout: float = 90.0,
                   workers: int = 1) -> Iterator[ServerProcess]:
    """`python -m mlops.serving` on a free loopback port, stopped (SIGTERM) on exit."""
    port = port or free_port()
    log = work / f"model-server-{port}.log"
    full_env = {**os.environ, **(env or {})}
    cmd = [sys.executable, "-m", "mlops.serving", "--model", model, "--host", "127.0.0.1",
           "--port", str(port), "--log-level", "warning", *(extra_args or [])]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=full_env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        if ready:
            wait_ready(url, timeout, proc, log, workers)
        yield ServerProcess(url, proc, log)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


@contextmanager
def isolated_state(folder: Path) -> Iterator[Path]:
    """MLOPS_HOME, an MLflow SQLite store and artifact root under `folder` for the duration."""
    import mlflow

    state = folder / "state"
    state.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{state / 'mlflow.db'}"
    new = {"MLOPS_HOME": str(state), "MLFLOW_TRACKING_URI": uri, "MLOPS_ARTIFACT_ROOT": (state / "mlartifacts").as_uri()}
    old = {k: os.environ.get(k) for k in new}
    os.environ.update(new)
    mlflow.set_tracking_uri(uri)
    try:
        yield state
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        mlflow.set_tracking_uri(None)
