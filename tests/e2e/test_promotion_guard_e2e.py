"""Attacks on promotion against the real stack (issue 12): a gate-rejected version cannot be put into
service silently. Promote without --force is refused; the alias set on it through MLflow's REST API
is not served (the server keeps the champion it has and says why) and shows as an outside move in
`mlops status --history`; rollback refuses a gate-failed target; --force with --reason serves it and
records the override. The champion the module found is restored at the end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pandas as pd
import pytest

from tests.conftest import REPO, small_config, write_config
from tests.support.stack import Live, champion, ensure_trained, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]


@dataclass
class Guard:
    live: Live
    config: str
    original: str
    failed: str
    row: dict[str, Any]

    @property
    def serve(self) -> str:
        return str(self.live.opts.url("model-server"))

    @property
    def mlflow(self) -> str:
        return str(self.live.opts.url("mlflow"))


def mlops(live: Live, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """The `mlops` CLI against the live stack's state folder, as a user would run it (no URLs set)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI")}
    env["MLOPS_HOME"] = str(live.opts.state_dir)
    return subprocess.run([sys.executable, "-m", "mlops.cli.main", *args], cwd=REPO, env=env, text=True,
                          capture_output=True, timeout=timeout)


def set_alias_via_rest(g: Guard, alias: str, version: str) -> None:
    """What anyone who reaches MLflow can do (no auth by default): move an alias behind mlops' back."""
    r = httpx.post(f"{g.mlflow}/api/2.0/mlflow/registered-models/alias",
                   json={"name": g.live.model, "alias": alias, "version": version}, timeout=10)
    assert r.status_code == 200, r.text


def version_tags(g: Guard, version: str) -> dict[str, str]:
    r = httpx.get(f"{g.mlflow}/api/2.0/mlflow/model-versions/get", params={"name": g.live.model, "version": version},
                  timeout=10)
    return {t["key"]: t["value"] for t in r.json()["model_version"].get("tags", [])}


def alias_of(g: Guard, alias: str) -> str | None:
    r = httpx.get(f"{g.mlflow}/api/2.0/mlflow/registered-models/alias",
                  params={"name": g.live.model, "alias": alias}, timeout=10)
    return str(r.json()["model_version"]["version"]) if r.status_code == 200 else None


def predict_version(g: Guard) -> str:
    r = httpx.post(f"{g.serve}/predict", json=g.row, timeout=10)
    assert r.status_code == 200, r.text
    return str(r.json()["model_version"])


def one_line_error(res: subprocess.CompletedProcess[str]) -> str:
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, res.stdout + res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    return lines[0]


@pytest.fixture(scope="module")
def guard(live: Live) -> Iterator[Guard]:
    ensure_trained(live)
    original = champion(live)
    assert original is not None
    # a version whose gate fails: the same model trained against an impossible threshold (the small config's gate
    # otherwise, so no infra-validation process: serving a version is what this module attacks, not loading it)
    cfg = write_config(live.work, name="impossible-gate.yaml",
                       gate={**small_config()["gate"], "thresholds": {"roc_auc": 0.999}})
    res = mlops(live, "train", "--config", str(cfg), "--json")
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    summary = json.loads(res.stdout[res.stdout.index("{"):])
    assert not summary["gate_passed"] and not summary["promoted"]
    assert any("roc_auc" in r and r.startswith("FAIL") for r in summary["gate_reasons"])
    failed = str(summary["version"])
    assert champion(live) == original
    row = json.loads(pd.read_csv(live.data).drop(columns=["churned"]).head(1).to_json(orient="records"))[0]
    g = Guard(live, str(live.work / "config.yaml"), original, failed, row)
    assert wait_for(lambda: httpx.get(f"{g.serve}/ready", timeout=5).status_code == 200, timeout=60)
    yield g
    # leave the stack as found: the original champion, served
    if champion(live) != original:
        res = mlops(live, "promote", "--version", original, "--config", g.config, "--reason",
                    "restore after the promotion guard tests")
        if res.returncode != 0:
            set_alias_via_rest(g, "champion", original)
    wait_for(lambda: httpx.get(f"{g.serve}/ready", timeout=5).json().get("model_version") == original, timeout=60)


def test_promote_of_a_gate_failed_version_without_force_is_refused(guard: Guard) -> None:
    res = mlops(guard.live, "promote", "--version", guard.failed, "--config", guard.config)
    assert res.returncode != 0
    err = one_line_error(res)
    assert f"version {guard.failed} failed its promotion gate" in err and "--force" in err, err
    assert champion(guard.live) == guard.original
    assert "promotion.override" not in version_tags(guard, guard.failed)

    res = mlops(guard.live, "promote", "--version", guard.failed, "--config", guard.config, "--force")
    assert res.returncode != 0 and "--force needs --reason" in one_line_error(res)
    assert champion(guard.live) == guard.original


def test_the_alias_set_through_mlflows_rest_api_is_not_served_and_shows_as_an_outside_move(guard: Guard) -> None:
    set_alias_via_rest(guard, "champion", guard.failed)

    def refused() -> dict[str, Any] | None:
        watch = httpx.get(f"{guard.serve}/model", timeout=5).json()["watch"]
        return watch if (watch.get("refused") or {}).get("version") == guard.failed else None

    watch = wait_for(refused, timeout=30)
    assert watch, httpx.get(f"{guard.serve}/model", timeout=5).text
    assert "failed its promotion gate" in watch["refused"]["reason"]
    for _ in range(5):  # well past the 1 s poll: still the champion it had
        assert predict_version(guard) == guard.original
    ready = httpx.get(f"{guard.serve}/ready", timeout=5)
    assert ready.status_code == 200 and ready.json()["status"] == "degraded", ready.text
    assert f"v{guard.failed}" in ready.json()["reason"]
    metrics = httpx.get(f"{guard.serve}/metrics", timeout=5).text
    assert f"mlops_model_refused_version {guard.failed}" in metrics
    assert 'mlops_model_reloads_total{outcome="refused"} 1' in metrics
    log = (guard.live.opts.logs_dir / "model-server.log").read_text(errors="replace")
    assert f"version {guard.failed} not served" in log and f"still serving v{guard.original}" in log

    res = mlops(guard.live, "status", "--config", guard.config, "--history")
    assert res.returncode == 0, res.stdout + res.stderr
    outside = [ln for ln in res.stdout.splitlines() if "OUTSIDE MLOPS" in ln]
    assert len(outside) == 1 and f"champion: v{guard.original} -> v{guard.failed}" in outside[0], res.stdout
    assert "NOT SERVED" in res.stdout
    again = mlops(guard.live, "status", "--config", guard.config, "--history")
    assert again.stdout.count("OUTSIDE MLOPS") == 1  # recorded once

    # back to the champion that serves; the rejected version does not become `previous`
    res = mlops(guard.live, "promote", "--version", guard.original, "--config", guard.config, "--reason",
                "undo the outside move")
    assert res.returncode == 0, res.stdout + res.stderr
    assert champion(guard.live) == guard.original and alias_of(guard, "previous") != guard.failed
    assert wait_for(lambda: httpx.get(f"{guard.serve}/ready", timeout=5).json()["status"] == "ok", timeout=30)


def test_rollback_refuses_a_gate_failed_target(guard: Guard) -> None:
    before = alias_of(guard, "previous")
    set_alias_via_rest(guard, "previous", guard.failed)
    try:
        res = mlops(guard.live, "rollback", "--config", guard.config)
        assert res.returncode != 0
        err = one_line_error(res)
        assert "cannot roll back" in err and f"version {guard.failed} failed its promotion gate" in err, err
        assert champion(guard.live) == guard.original
    finally:
        if before:
            set_alias_via_rest(guard, "previous", before)
        else:
            httpx.delete(f"{guard.mlflow}/api/2.0/mlflow/registered-models/alias",
                         params={"name": guard.live.model, "alias": "previous"}, timeout=10)


def test_promote_with_force_and_reason_serves_it_and_records_the_override(guard: Guard) -> None:
    reason = "e2e: accepted by hand after review"
    res = mlops(guard.live, "promote", "--version", guard.failed, "--config", guard.config, "--force", "--reason",
                reason)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "forced over a failed gate" in res.stdout
    assert champion(guard.live) == guard.failed
    override = json.loads(version_tags(guard, guard.failed)["promotion.override"])
    assert override["reason"] == reason
    assert wait_for(lambda: predict_version(guard) == guard.failed, timeout=30)
    assert httpx.get(f"{guard.serve}/ready", timeout=5).json()["status"] == "ok"

    res = mlops(guard.live, "status", "--config", guard.config, "--history", "--json")
    history = json.loads(res.stdout[res.stdout.index("{"):])["history"]
    last = [h for h in history if h["alias"] == "champion"][-1]
    assert last["to_version"] == guard.failed and last["forced"] is True and last["reason"] == reason

    # and back: `previous` is the original champion, which passed its gate
    res = mlops(guard.live, "rollback", "--config", guard.config, "--reason", "e2e: restore")
    assert res.returncode == 0, res.stdout + res.stderr
    assert champion(guard.live) == guard.original
