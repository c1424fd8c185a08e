"""End to end through the `mlops` command on the default data: what a user runs, checked by outcome."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.conftest import REPO

MLOPS = str(Path(sys.executable).parent / "mlops")
pytestmark = pytest.mark.e2e


def run(args: list[str], state: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, MLOPS_HOME=str(state), MLOPS_ARTIFACT_ROOT=(state / "mlartifacts").as_uri())
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("PREFECT_API_URL", None)
    return subprocess.run([MLOPS, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def test_default_data_trains_a_champion_then_rejects_a_worse_challenger(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = run(["train", "--config", "configs/default.yaml", "--json"], state)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "Traceback" not in first.stderr and "telemetry" not in first.stderr.lower()
    import json

    s = json.loads(first.stdout)
    assert s["promoted"] and s["champion_version"] in ("1", 1)
    q = pd.read_csv(s["quarantine_file"])
    assert len(q) == s["data"]["rows_quarantined"] > 0
    assert q["_quarantine_reasons"].str.contains("expect_column_values_to_be_between").all()
    assert any(r.startswith("PASS threshold roc_auc") for r in s["gate_reasons"])

    weak = yaml.safe_load((REPO / "configs" / "default.yaml").read_text())
    weak["models"] = [{"family": "logistic_regression", "params": {"C": 0.00001}}]
    weak_path = tmp_path / "weak.yaml"
    weak_path.write_text(yaml.safe_dump(weak))
    second = run(["train", "--config", str(weak_path)], state)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "REJECTED" in second.stdout and "Champion   unchanged: version 1" in second.stdout

    status = run(["status", "--config", "configs/default.yaml", "--json"], state)
    st = json.loads(status.stdout)
    assert str(st["champion"]["version"]) == "1" and st["versions"] == 2
    assert "Candidates logistic_regression" in second.stdout  # the leaderboard of a rejected run is shown

    history = run(["status", "--config", "configs/default.yaml", "--history"], state)
    lines = history.stdout.splitlines()
    rejected = next(i for i, ln in enumerate(lines) if ln.strip().startswith("v2 "))
    assert "gate REJECTED" in lines[rejected] and lines[rejected + 1].strip().startswith("- ")
    assert "[champion]" in next(ln for ln in lines if ln.strip().startswith("v1 "))
    assert "champion: none -> v1" in history.stdout and "vNone" not in history.stdout
    _serve_and_predict(state)


def _serve_and_predict(state: Path) -> None:
    """`mlops serve` answers with the champion on a free loopback port."""
    import time

    import httpx

    from mlops.core.data import generate_churn
    from mlops.core.startup import free_port

    port = free_port()
    env = dict(os.environ, MLOPS_HOME=str(state), MLOPS_ARTIFACT_ROOT=(state / "mlartifacts").as_uri())
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.Popen([MLOPS, "serve", "--port", str(port), "--workers", "1"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        row = generate_churn(1, seed=5).drop(columns=["churned"]).iloc[0]
        record = {k: (v.isoformat() if hasattr(v, "isoformat") else (None if pd.isna(v) else v)) for k, v in row.items()}
        record = {k: (v.item() if hasattr(v, "item") else v) for k, v in record.items()}
        res = httpx.post(f"{url}/predict", json=record, timeout=10)
        assert res.status_code == 200, res.text
        assert str(res.json()["model_version"]) == "1" and len(res.json()["predictions"]) == 1
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_config_typo_fails_before_any_work(tmp_path: Path) -> None:
    raw = yaml.safe_load((REPO / "configs" / "default.yaml").read_text())
    raw["registy"] = raw.pop("registry")
    bad = tmp_path / "typo.yaml"
    bad.write_text(yaml.safe_dump(raw))
    res = run(["train", "--config", str(bad)], tmp_path / "state")
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0 and "registy" in res.stderr and "unknown key" in res.stderr
    assert not (tmp_path / "state").exists()  # nothing started


def test_bad_data_gives_one_line_and_non_zero_exit(tmp_path: Path) -> None:
    bad = tmp_path / "state" / "inbox" / "bad.csv"  # the state folder's inbox is a data root
    bad.parent.mkdir(parents=True)
    bad.write_text("a;b;churned\n1;2;0\n")
    res = run(["train", "--config", "configs/default.yaml", "--data", str(bad)], tmp_path / "state")
    assert res.returncode == 3
    assert res.stderr.strip().splitlines()[-1].startswith("error: ") and "delimited" in res.stderr
    assert "Traceback" not in res.stderr
    # issue 21: an error inside the run reached the console four times (task failure, task state, flow failure,
    # flow state) before the command's own line; the console holds that line only, the run's logs the rest
    assert (res.stdout + res.stderr).count("delimited") == 1, res.stderr[-3000:]


def test_help_is_fast_and_lists_commands(tmp_path: Path) -> None:
    res = run(["--help"], tmp_path)
    assert res.returncode == 0
    for cmd in ("train", "promote", "rollback", "status"):
        assert cmd in res.stdout


def test_a_missing_or_refused_data_path_is_said_once_before_any_run_starts(tmp_path: Path) -> None:
    """Issue 21: the error reached the console four times (task failure, task state, flow failure, flow state)
    before the command's own `error:` line. A path that loading would not find or would refuse is now said in
    that one line before the command starts Prefect or touches the state folder."""
    state = tmp_path / "state"
    missing = state / "inbox" / "nope.csv"
    for path, says in [(missing, f"{missing}: data file not found"), (Path("/etc/passwd"), "inside a data root")]:
        res = run(["train", "--config", "configs/default.yaml", "--data", str(path)], state, timeout=300)
        assert res.returncode == 3, res.stderr[-3000:]
        assert (res.stdout + res.stderr).count(says) == 1 and res.stderr.startswith("error: ")
        assert "Traceback" not in res.stderr
    assert not state.exists()  # no Prefect server, no MLflow store, no run
