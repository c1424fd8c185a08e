"""Forging a gate verdict against a real MLflow tracking server on loopback: whoever can write to MLflow but
has no gate key cannot get a rejected version served. A `gate.passed=true` written over a rejected verdict,
a verdict whose seal was removed, and model files replaced after the gate are all refused by the model
server (which keeps serving its champion and says why) and called out by `mlops status`; a version the
gate passed and sealed is still served."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from mlops.core.startup import wait_until
from mlops.serving.records import records_from_frame
from tests.conftest import REPO
from tests.support.loopback import mlflow_server
from tests.support.model_server import ServerProcess, churn_frame, fit_pipeline, register_model, server_process

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

NAME = "churn-sealed"


@dataclass
class Forge:
    tracking: str
    state: Path
    server: ServerProcess
    row: bytes
    fits: dict[str, Any]


def _fit(C: float) -> tuple[Any, Any, Any]:
    return fit_pipeline(churn_frame(800, seed=5), "churned", family="logistic_regression", params={"C": C},
                        id_column="customer_id", timestamp_column="event_time")


@pytest.fixture(scope="module")
def forge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Forge]:
    """v1 champion (sealed pass), v2 rejected by its gate (sealed fail), v3 and v4 sealed passes; a model
    server serving the champion, polling every half second."""
    import mlflow

    from mlops.registry.verdict import seal_verdict

    work = tmp_path_factory.mktemp("gate-seal")
    state = work / "state"
    state.mkdir()
    with mlflow_server(work) as url, pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLOPS_HOME", str(state))
        mp.setenv("MLFLOW_TRACKING_URI", url)
        mp.setenv("MLOPS_ARTIFACT_ROOT", "mlflow-artifacts:/")
        mp.delenv("MLOPS_GATE_KEY", raising=False)
        mlflow.set_tracking_uri(url)
        fits = {}
        for v, C in (("1", 1.0), ("2", 0.001), ("3", 0.3), ("4", 0.1)):
            pipe, contract, frame = _fit(C)
            assert register_model(NAME, pipe, contract, frame, promote=v == "1") == v
            fits[v] = pipe
        from mlops.registry import versions as registry

        registry.client().set_model_version_tag(NAME, "2", "gate.failures", "threshold roc_auc 0.55 < 0.65")
        seal_verdict(NAME, "2", passed=False)  # what the training flow records for a rejected version
        row = orjson.dumps(records_from_frame(frame.drop(columns=["churned"]).head(1))[0])
        env = {"MLOPS_HOME": str(state), "MLFLOW_TRACKING_URI": url}
        with server_process(NAME, work, ["--poll-seconds", "0.5", "--no-prediction-log"], env=env) as server:
            yield Forge(url, state, server, row, fits)
        mlflow.set_tracking_uri(None)


def model_info(f: Forge) -> dict[str, Any]:
    return httpx.get(f"{f.server.url}/model", timeout=10).json()


def predicted_by(f: Forge) -> str:
    r = httpx.post(f"{f.server.url}/predict", content=f.row, headers={"content-type": "application/json"}, timeout=10)
    assert r.status_code == 200, r.text
    return str(r.json()["model_version"])


def refused_for(f: Forge, version: str, words: str) -> str:
    """Wait until the server refuses `version` with a reason holding `words`; returns the reason."""
    def refused() -> str | None:
        watch = model_info(f)["watch"]
        reason = (watch.get("refused") or {}).get("reason") if (watch.get("refused") or {}).get("version") == version \
            else watch.get("last_error")
        return reason if reason and words in reason and f"version {version}" in reason else None

    wait_until(refused, 60, f"version {version} was never refused for '{words}'", interval=0.2,
               detail=lambda: str(model_info(f)["watch"]))
    return str(refused())


def status(f: Forge) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "MLOPS_GATE_KEY")}
    env.update(MLOPS_HOME=str(f.state), MLFLOW_TRACKING_URI=f.tracking)
    res = subprocess.run([sys.executable, "-m", "mlops.cli.main", "status", "--model", NAME, "--history"], cwd=REPO,
                         env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout


def test_a_forged_pass_on_a_rejected_version_is_refused_and_status_says_so(forge: Forge) -> None:
    from mlflow import MlflowClient

    wait_until(lambda: model_info(forge).get("version") == "1", 60, "v1 was not served")
    c = MlflowClient(forge.tracking)
    c.set_model_version_tag(NAME, "2", "gate.passed", "true")  # the forgery: one tag write through MLflow's API
    c.set_registered_model_alias(NAME, "champion", "2")
    reason = refused_for(forge, "2", "signature is invalid")
    assert predicted_by(forge) == "1" and model_info(forge)["version"] == "1"
    assert "version 2 not served: version 2's gate verdict signature is invalid" in forge.server.log.read_text()
    out = status(forge)
    assert "NOT SERVED: version 2's gate verdict signature is invalid" in out, out
    v2 = next(line for line in out.splitlines() if line.strip().startswith("v2 "))
    assert "gate verdict signature INVALID" in v2 and "passed" not in v2, out
    assert reason.startswith("version 2's gate verdict signature is invalid")
    from mlops.core.errors import RegistryError
    from mlops.registry import versions as registry

    with pytest.raises(RegistryError, match="the champion is not served: version 2's gate verdict signature"):
        registry.load_champion(NAME, to_serve=True)  # batch scoring (`mlops score`, the score flow) refuses it too

    # the seal removed as well: a verdict nobody sealed
    c.delete_model_version_tag(NAME, "2", "gate.signature")
    refused_for(forge, "2", "is not signed")
    assert predicted_by(forge) == "1"
    out = status(forge)
    assert "NOT SERVED: version 2's gate verdict is not signed" in out, out
    c.set_registered_model_alias(NAME, "champion", "1")


def test_model_files_replaced_after_the_gate_are_not_served(forge: Forge) -> None:
    """v3's seal is intact but its model file now holds the rejected v2's bytes, uploaded through MLflow."""
    import mlflow.artifacts
    from mlflow import MlflowClient

    from mlops.registry import versions as registry

    c = MlflowClient(forge.tracking)
    with tempfile.TemporaryDirectory() as tmp:
        rejected = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{NAME}/2", dst_path=tmp))
        swap = Path(tmp) / "swap"
        swap.mkdir()
        skops = [p for p in rejected.iterdir() if p.suffix == ".skops"]
        assert skops, list(rejected.iterdir())
        (swap / skops[0].name).write_bytes(skops[0].read_bytes())
        mv = c.get_model_version(NAME, "3")
        c.log_model_artifacts(mv.model_id or str(mv.source).removeprefix("models:/"), str(swap))
    registry.promote(NAME, "3", by="test", reason="its gate passed")  # the tags still check out
    refused_for(forge, "3", "differ from the ones its gate verdict sealed")
    assert predicted_by(forge) == "1" and model_info(forge)["version"] == "1"
    registry.rollback(NAME, by="test", reason="back to v1")


def test_a_version_the_gate_passed_and_sealed_is_served(forge: Forge) -> None:
    from mlops.registry import versions as registry

    registry.promote(NAME, "4", by="test", reason="its gate passed")
    wait_until(lambda: model_info(forge).get("version") == "4", 90, "v4 was not served",
               detail=lambda: str(model_info(forge)["watch"]))
    assert predicted_by(forge) == "4"
    bundle = registry.load_champion(NAME, to_serve=True)
    assert bundle is not None and bundle.version == "4"
    assert model_info(forge)["self_check"].get("reproduces_training_predictions") is True
    out = status(forge)
    assert "champion  v4" in out and "NOT SERVED" not in out.split("Versions")[0], out
    v4 = next(line for line in out.splitlines() if line.strip().startswith("v4 "))
    assert "gate passed" in v4, out
