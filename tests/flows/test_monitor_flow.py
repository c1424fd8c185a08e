"""The monitoring flow under a real (temporary) Prefect server and a real MLflow store, with the bad
inputs it must survive. One champion is trained per module; each test has its own state folder."""

from __future__ import annotations

import json
import math
import re
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml

from flows.monitor import monitor, retrain
from flows.train import train
from mlops.core import rowkeys
from mlops.core.data import CHURN_START, generate_churn
from mlops.registry import versions as registry
from mlops.serving.logbatch import log_scored_frame
from tests.conftest import small_config

NAME = "churn-small"
LATER = CHURN_START + pd.Timedelta(days=181)
# drift_trigger always: these windows carry labels, and the tests are about the drift path
POLICY = {"consecutive_windows": 1, "cooldown_minutes": 0, "min_rows": 100, "run_training_locally": False,
          "dedupe_seconds": 120, "drift_trigger": "always"}
POLICY_SHARE = 0.3  # RetrainPolicyConfig.drift_share_threshold default


def _config(folder: Path, name: str = "monitor.yaml", model_name: str = NAME) -> Path:
    raw = small_config(monitoring={"policy": POLICY})
    raw["registry"] = {"model_name": model_name, "reference_rows": 1000}
    path = folder / name
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory):
    """An MLflow store with a champion (version 1) trained on undrifted data."""
    tmp = tmp_path_factory.mktemp("monitor")
    with pytest.MonkeyPatch.context() as mp:
        uri = f"sqlite:///{tmp / 'mlflow.db'}"
        mp.setenv("MLOPS_HOME", str(tmp / "train-state"))
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.setenv("MLOPS_ARTIFACT_ROOT", (tmp / "mlartifacts").as_uri())
        mlflow.set_tracking_uri(uri)
        cfg = _config(tmp)
        st = train(config_path=str(cfg), return_state=True)
        assert st.is_completed(), st.message
        yield {"tmp": tmp, "uri": uri, "config": cfg}
    mlflow.set_tracking_uri(None)


@pytest.fixture
def home(store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh state folder (log, monitor state, policy, reports) against the module's MLflow store."""
    state = tmp_path / "state"
    monkeypatch.setenv("MLOPS_HOME", str(state))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store["uri"])
    monkeypatch.setenv("MLOPS_ARTIFACT_ROOT", (store["tmp"] / "mlartifacts").as_uri())
    mlflow.set_tracking_uri(store["uri"])
    return state


def _write(tmp: Path, frame: pd.DataFrame, name: str) -> str:
    path = tmp / name
    frame.to_parquet(path, index=False)
    return str(path)


def _serve(home: Path, frame: pd.DataFrame, rows_per_file: int = 5_000) -> tuple[list[Path], pd.DataFrame]:
    """Score a frame with the champion into the prediction log, as the server would."""
    b = registry.load_bundle(NAME, registry.CHAMPION, with_reference=False)
    return log_scored_frame(frame, b.model, NAME, b.version, b.contract, home / "predictions", ["customer_id"],
                                "hash", rows_per_file=rows_per_file)


def _policy_history(home: Path) -> list[dict[str, Any]]:
    return json.loads((home / "monitor" / NAME / "policy.json").read_text())["history"]


def _events(name: str, resource: str, expected: int, timeout: float = 20.0) -> list[Any]:
    """Events of this name and resource on the test server (delivery is asynchronous)."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    flt = EventFilter(event=EventNameFilter(name=[name]), resource=EventResourceFilter(id=[resource]))
    deadline = time.monotonic() + timeout
    while True:
        with get_client(sync_client=True) as client:
            found = client.read_events(flt, limit=50).events
        if len(found) >= expected or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def _artifact_keys(flow_run_id: str) -> set[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[uuid.UUID(flow_run_id)])))
    return {a.key for a in arts if a.key}


def test_no_champion_is_a_clear_message_and_triggers_nothing(home: Path, tmp_path: Path) -> None:
    cfg = _config(tmp_path, model_name="never-trained")
    r = monitor(config_path=str(cfg), current_path=_write(tmp_path, generate_churn(300, seed=5), "x.parquet"))
    assert r.status == "no_champion" and not r.retrain and r.decision is None
    assert "no champion for model 'never-trained'" in r.message and "mlops train" in r.message
    assert not (home / "monitor").exists() and not (home / "monitor_state.json").exists()


def test_undrifted_data_gives_no_trigger(store, home: Path, tmp_path: Path) -> None:
    calm = generate_churn(2000, seed=21, start=LATER)
    r = monitor(config_path=str(store["config"]), current_path=_write(tmp_path, calm, "calm.parquet"))
    assert r.status == "checked" and r.quality.passed
    assert r.drift.drift_share < POLICY_SHARE and not r.drift.dataset_drift
    assert not r.retrain and r.decision.verdict == "hold" and r.events.retrain_event_id is None
    assert r.events.drift_event_id is None
    assert r.live_quality.status == "ok" and not r.live_quality.degraded  # the target came with the file
    assert r.live_quality.compared_with == "slices"  # gate.slices: region against the holdout's regions
    assert r.seen_in_training_share == 0.0 and r.seen_in_training.seen_rows == 0  # fresh rows
    mv = registry.get_version_by_alias(NAME, registry.CHAMPION)
    assert mv.tags["monitoring.last_run_id"] == r.mlflow_run_id and mv.tags["monitoring.last_verdict"] == "hold"
    run = mlflow.MlflowClient().get_run(r.mlflow_run_id)
    assert run.data.tags["model_name"] == NAME and run.data.tags["model_version"] == str(mv.version)


def test_drifted_log_window_triggers_with_report_event_and_training_file(store, home: Path, tmp_path: Path) -> None:
    drifted = generate_churn(3000, seed=31, drift=0.8, start=LATER)
    files, ids = _serve(home, drifted, rows_per_file=1000)
    labels = tmp_path / "labels.csv"
    ids.assign(churned=drifted["churned"].to_numpy()).to_csv(labels, index=False)

    r = monitor(config_path=str(store["config"]), labels_path=str(labels))
    assert r.status == "checked" and r.window.rows == 3000 and r.window.files == len(files) == 3
    assert r.retrain and r.decision.verdict == "retrain"
    assert r.drift.dataset_drift and r.events.drift_event_id
    assert {"monthly_charges", "usage_gb", "support_calls", "region"} <= set(r.drift.drifted_columns)
    assert r.drift.prediction.drifted
    report = Path(r.report_path)
    assert report.is_file() and report.parent == home / "reports" / NAME
    html = report.read_text()
    assert html.lstrip().lower().startswith("<!doctype html") and "monthly_charges" in html
    assert r.live_quality.joined_by == "request_id" and r.live_quality.labelled_rows >= 2900

    files_logged = {a.path for a in mlflow.MlflowClient().list_artifacts(r.mlflow_run_id, "report")}
    assert files_logged == {f"report/{report.name}"}
    keys = _artifact_keys(r.monitor_flow_run_id)
    assert {f"{NAME}-drift-summary", f"{NAME}-drift-report", f"{NAME}-monitor-decision"} <= keys

    tf = r.training_file
    train_frame = pd.read_parquet(tf.path)
    # train_on auto (the default) writes all known history, the champion's rows plus the new ones; training chooses the window
    assert tf.train_on == "auto" and len(train_frame) == tf.rows > 3000
    assert train_frame["customer_id"].is_unique and "churned" in train_frame.columns
    labelled = r.live_quality.labelled_rows
    assert int(train_frame[rowkeys.NEW_ROW_COLUMN].sum()) == tf.new_rows == labelled  # only these may be held out
    assert "no duplicate rows" in tf.detail
    assert r.training.status == "requested"  # run_training_locally is off: the event hands over

    events = _events("mlops.retrain.requested", f"mlops.model.{NAME}", 1)
    mine = [e for e in events if str(e.id) == r.events.retrain_event_id]
    assert mine and mine[0].payload["reasons"] and mine[0].payload["training_file"] == tf.path
    assert mine[0].payload["model_version"] == r.model_version

    again = monitor(config_path=str(store["config"]), labels_path=str(labels))
    assert again.status == "empty" and again.window.rows == 0  # no row checked twice


def test_empty_window_gives_no_decision_and_is_recorded(store, home: Path) -> None:
    r = monitor(config_path=str(store["config"]))
    assert r.status == "empty" and not r.retrain and r.drift is None
    assert r.decision.verdict == "no_decision"
    history = _policy_history(home)
    assert history[-1]["verdict"] == "no_decision" and history[-1]["rows"] == 0
    windows = json.loads((home / "monitor_state.json").read_text())["models"][NAME]["windows"]
    assert windows[-1]["status"] == "empty"


def _missing_column(df: pd.DataFrame) -> pd.DataFrame:
    return df.drop(columns=["usage_gb"])


def _changed_type(df: pd.DataFrame) -> pd.DataFrame:
    return df.assign(tenure_months=df["tenure_months"].map(lambda v: f"{v} months"))


def _null_burst(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    out.loc[out.index[: len(out) // 2], "monthly_charges"] = np.nan
    return out


@pytest.mark.parametrize("breakage, expected", [
    (_missing_column, "missing column(s) ['usage_gb']"),
    (_changed_type, "type change: column 'tenure_months'"),
    (_null_burst, "null burst: column 'monthly_charges'"),
])
def test_quality_failure_is_reported_with_no_drift_verdict_and_no_retrain(store, home: Path, tmp_path: Path,
                                                                          breakage, expected: str) -> None:
    drifted = generate_churn(1500, seed=41, drift=0.8, start=LATER)  # drifted too: quality must still win
    r = monitor(config_path=str(store["config"]), current_path=_write(tmp_path, breakage(drifted), "bad.parquet"))
    assert r.status == "quality_failed" and not r.quality.passed
    assert any(expected in f for f in r.quality.failures), r.quality.failures
    assert r.drift is None and r.report_path is None and not r.retrain
    assert r.decision.verdict == "no_decision" and "data-quality failure" in r.decision.reasons[-1]
    assert not list(home.glob("reports/**/*.html"))
    run = mlflow.MlflowClient().get_run(r.mlflow_run_id)
    assert run.data.tags["monitor.quality_passed"] == "false"


def test_corrupt_log_file_is_skipped_and_reported_and_the_rest_checked(store, home: Path) -> None:
    files, _ = _serve(home, generate_churn(1200, seed=51, start=LATER), rows_per_file=600)
    broken = files[0].parent / "part-broken-0001.parquet"
    broken.write_bytes(files[0].read_bytes()[:300])  # a truncated copy
    r = monitor(config_path=str(store["config"]))
    assert r.status == "checked" and r.window.rows == 1200 and r.window.files == 3
    assert r.corrupt_files == [broken.relative_to(home / "predictions").as_posix()]
    assert r.drift is not None and not r.retrain
    again = monitor(config_path=str(store["config"]))
    assert again.status == "empty" and again.corrupt_files == []  # reported once, not re-read


def _run_concurrently(n: int, fn: Any, **kwargs: Any) -> list[Any]:
    results: list[Any] = [None] * n
    errors: list[BaseException] = []
    barrier = threading.Barrier(n)

    def worker(i: int) -> None:
        try:
            barrier.wait()
            results[i] = fn(**kwargs)
        except BaseException as exc:  # noqa: BLE001 - surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return results


def test_two_monitor_runs_at_once_trigger_once(store, home: Path, tmp_path: Path) -> None:
    drifted = _write(tmp_path, generate_churn(1500, seed=61, drift=0.8, start=LATER), "drifted.parquet")
    results = _run_concurrently(2, monitor, config_path=str(store["config"]), current_path=drifted)
    assert all(r.status == "checked" and r.drift.drift_share >= POLICY_SHARE for r in results)
    assert sorted(r.retrain for r in results) == [False, True]
    held = next(r for r in results if not r.retrain)
    assert any("already requested" in b for b in held.decision.blocks)
    assert [h["retrain"] for h in _policy_history(home)].count(True) == 1


def test_two_monitor_runs_at_once_split_the_log_without_checking_a_row_twice(store, home: Path) -> None:
    _serve(home, generate_churn(2000, seed=71, start=LATER), rows_per_file=250)
    results = _run_concurrently(2, monitor, config_path=str(store["config"]))
    assert sum(r.window.rows for r in results) == 2000
    state = json.loads((home / "monitor_state.json").read_text())["models"][NAME]
    assert len(state["checked"]) == 8 and not state["claims"]


@pytest.mark.slow
def test_event_storm_starts_one_training(store, home: Path, tmp_path: Path) -> None:
    cfg = _config(tmp_path, name="storm.yaml", model_name="churn-storm")
    data = _write(tmp_path, generate_churn(2000, seed=81), "storm.parquet")
    results = _run_concurrently(10, retrain, config_path=str(cfg), source_path=data, reason="storm")
    statuses = sorted(r.status for r in results)
    assert statuses == ["refused"] * 9 + ["trained"], statuses
    assert len(registry.client().search_model_versions("name='churn-storm'")) == 1
    later = retrain(config_path=str(cfg), source_path=data, reason="one more, within the dedupe window")
    assert later.status == "refused"
    state = json.loads((home / "monitor" / "churn-storm" / "policy.json").read_text())
    assert state["in_flight"] is None and state["last_training_start_at"]


def test_the_retrain_guards_read_the_given_clock_and_a_retrain_without_rows_frees_the_slot(
        store, home: Path, tmp_path: Path) -> None:
    from mlops.monitoring.policy import PolicyStore, record_training_finished, should_start_training

    cfg = _config(tmp_path, name="clock.yaml")
    data_time = LATER.tz_localize("UTC").to_pydatetime()
    policy = PolicyStore(home / "monitor" / NAME / "policy.json")
    assert should_start_training(policy, data_time, 120)  # a training that started at data time
    record_training_finished(policy, data_time + pd.Timedelta(seconds=10), succeeded=True)
    soon = retrain(config_path=str(cfg), reason="60 s later in data time", at=data_time + pd.Timedelta(seconds=60))
    assert soon.status == "refused"  # within dedupe_seconds (120) of data time, whatever the wall clock says
    later = data_time + pd.Timedelta(seconds=300)
    first = retrain(config_path=str(cfg), reason="no labelled rows kept", at=later)
    assert first.status == "skipped" and "no labelled rows" in first.detail
    state = json.loads((home / "monitor" / NAME / "policy.json").read_text())
    assert state["in_flight"] is None and state["last_training_start_at"] == data_time.isoformat()
    again = retrain(config_path=str(cfg), reason="a real request right after", at=later + pd.Timedelta(seconds=1))
    assert again.status == "skipped"  # not "refused": the empty retrain left no start behind


@pytest.mark.slow
def test_a_training_slot_held_by_a_run_that_has_ended_is_freed_and_a_live_hold_is_named(
        store, home: Path, tmp_path: Path) -> None:
    """A worker killed mid-training never releases the slot; the next request asks Prefect about the holder."""
    from prefect import flow as prefect_flow

    from mlops.monitoring.policy import PolicyStore, should_start_training

    @prefect_flow(name="killed-training")
    def killed() -> None:
        return None

    ended = str(killed(return_state=True).state_details.flow_run_id)
    cfg = _config(tmp_path, name="slot.yaml", model_name="churn-slot")
    policy = PolicyStore(home / "monitor" / "churn-slot" / "policy.json")
    unknown = str(uuid.uuid4())  # Prefect cannot say: the lock is kept until it expires
    assert should_start_training(policy, pd.Timestamp.now(tz="UTC").to_pydatetime(), 0, run_id=unknown)
    held = retrain(config_path=str(cfg), reason="while a training may still run")
    assert held.status == "refused" and f"flow run {unknown}" in held.detail
    policy.path.unlink()
    assert should_start_training(policy, pd.Timestamp.now(tz="UTC").to_pydatetime(), 0, run_id=ended)
    freed = retrain(config_path=str(cfg), reason="the holder has ended")
    assert freed.status == "trained", freed.detail  # not refused: the slot was free (no champion yet: config data)


@pytest.mark.slow
def test_a_rejected_retrain_keeps_its_labelled_rows_for_the_next_one(store, home: Path, tmp_path: Path) -> None:
    from mlops.monitoring.retraining import LabelledStore, training_rows

    name = "churn-reject"
    assert train(config_path=str(_config(tmp_path, name="reject.yaml", model_name=name)), return_state=True).is_completed()
    strict = small_config(monitoring={"policy": POLICY})
    strict["registry"] = {"model_name": name, "reference_rows": 1000}
    strict["gate"]["thresholds"] = {"roc_auc": 0.999}  # no challenger passes
    (tmp_path / "strict.yaml").write_text(yaml.safe_dump(strict))
    contract = registry.load_bundle(name, registry.CHAMPION, with_reference=False).contract
    kept = LabelledStore(home / "monitor" / name / "labelled")
    kept.save("w1", training_rows(generate_churn(800, seed=97, drift=0.3, start=LATER), contract))
    out = retrain(config_path=str(tmp_path / "strict.yaml"), reason="gate rejects")
    assert out.status == "trained" and out.summary is not None and not out.summary["promoted"]
    assert [f.name for f in kept.files()] == ["labelled-w1.parquet"]  # still there for the next retrain
    assert registry.load_bundle(name, registry.CHAMPION, with_reference=False).version == "1"


def test_a_window_that_repeats_training_rows_reports_a_share_near_one(store, home: Path, tmp_path: Path) -> None:
    # the champion's data (config: 3000 generated rows, seed 3), oldest first: its time split trained on these
    seen = generate_churn(3000, seed=3, corrupt=0.004).head(2000)
    r = monitor(config_path=str(store["config"]), current_path=_write(tmp_path, seen, "seen.parquet"))
    assert r.status == "checked" and r.seen_in_training_share > 0.95, r.seen_in_training
    run = mlflow.MlflowClient().get_run(r.mlflow_run_id)
    assert float(run.data.tags["monitor.seen_in_training_share"]) == pytest.approx(r.seen_in_training_share, abs=1e-4)
    assert run.data.metrics["seen_in_training_share"] == pytest.approx(r.seen_in_training_share)
    deadline = time.monotonic() + 20
    while True:  # delivery is asynchronous, and earlier tests sent decisions too
        events = _events("mlops.monitor.decision", f"mlops.model.{NAME}", 1)
        mine = [e for e in events if str(e.id) == r.events.decision_event_id]
        if mine or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert mine and mine[0].payload["seen_in_training_share"] == pytest.approx(r.seen_in_training_share)


@pytest.mark.slow
def test_a_retrain_holds_out_only_rows_the_champion_never_saw(store, home: Path, tmp_path: Path) -> None:
    """A retraining file from the monitor: the flow strips the marker before validation and holds out
    only the marked rows, saying so in the lineage."""
    from mlops.core.config import load_config
    from mlops.core.data import load_source
    from mlops.monitoring.retraining import build_training_frame, training_rows, write_training_file

    cfg = _config(tmp_path, name="fair.yaml", model_name="churn-fair")
    assert train(config_path=str(cfg), return_state=True).is_completed()
    contract = registry.load_bundle("churn-fair", registry.CHAMPION, with_reference=False).contract
    new = training_rows(generate_churn(1500, seed=91, drift=0.3, start=LATER), contract)
    resent = load_source(load_config(cfg)).head(300)  # rows the champion already has, sent again
    labelled = pd.concat([new, resent], ignore_index=True)
    frame, what = build_training_frame("original_plus_new", load_source(load_config(cfg)), labelled, labelled,
                                       contract, 100_000)
    assert "300 duplicate row(s) dropped (same customer_id)" in what
    path = write_training_file(frame, tmp_path / "training", "fair")
    summary = train(config_path=str(cfg), source_path=str(path), reason="fair holdout test")
    mv = registry.client().get_model_version("churn-fair", summary.version)
    run = mlflow.MlflowClient().get_run(mv.run_id)
    held = int(run.data.params["rows_holdout"])
    found = re.search(r"the newest ([\d,]+) of ([\d,]+) new rows \(by event_time\)", summary.lineage["holdout"])
    assert found, summary.lineage["holdout"]
    n_new = int(found[2].replace(",", ""))
    assert 1400 <= n_new <= 1500  # the new rows that passed validation
    assert int(found[1].replace(",", "")) == held == math.ceil(0.2 * n_new)  # test_size of the new rows
    assert "never trained on" in run.data.tags["lineage.holdout"]
    assert rowkeys.NEW_ROW_COLUMN not in {c.name for c in registry.load_contract(mv.run_id).columns}
    # a retrain on under twice the rows its champion's configuration was tuned on refits it, with no search
    first = registry.client().get_model_version("churn-fair", "1").tags
    assert first["lineage.configuration"] == "tuned"
    assert mv.tags["lineage.configuration"] == "reused from v1", mv.tags
    assert mv.tags["lineage.tuned_rows"] == first["lineage.tuned_rows"]
    assert [row["trials"] for row in summary.leaderboard] == [0]


def test_the_result_is_typed_and_drift_is_computed_once(store, home: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The flow returns a MonitorResult with typed parts; the Evidently report reuses the engine's verdict."""
    import tasks.drift
    from mlops.monitoring import report as drift_report
    from mlops.monitoring.drift import compute_drift
    from mlops.monitoring.policy import Decision
    from mlops.monitoring.result import DriftSummary, EventIds, MonitorResult, SeenInTraining, WindowInfo

    calls: list[int] = []

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return compute_drift(*args, **kwargs)

    monkeypatch.setattr(tasks.drift, "compute_drift", counted)
    monkeypatch.setattr(drift_report, "compute_drift", counted)
    drifted = generate_churn(1500, seed=111, drift=0.8, start=LATER)
    r = monitor(config_path=str(store["config"]), current_path=_write(tmp_path, drifted, "typed.parquet"))

    assert len(calls) == 1  # the verdict, once; the HTML report was built from it
    assert isinstance(r, MonitorResult) and r.status == "checked" and r.model_name == NAME
    assert isinstance(r.window, WindowInfo) and r.window.rows == 1500 and r.window.source.endswith("typed.parquet")
    assert isinstance(r.drift, DriftSummary) and r.drift.dataset_drift and r.drift.evidently_agreement is not None
    assert r.report_path and Path(r.report_path).is_file()
    assert isinstance(r.seen_in_training, SeenInTraining) and r.seen_in_training.rows == 1500
    assert isinstance(r.decision, Decision) and r.decision.verdict == "retrain" and r.retrain
    assert isinstance(r.events, EventIds) and r.events.decision_event_id and r.events.retrain_event_id
    assert r.training_file is not None and r.training is not None and r.training.status == "requested"
    assert r.quality is not None and r.quality.good is None and r.live_quality is not None
    assert r.live_quality.labelled is None  # a result holds no frames

    out = json.loads(json.dumps(r.to_dict()))
    assert set(out) == {"status", "message", "model_name", "model_version", "window", "corrupt_files", "quality",
                        "drift", "report_path", "seen_in_training", "seen_in_training_share", "live_quality",
                        "decision", "retrain", "events", "training_file", "training", "mlflow_run_id",
                        "monitor_flow_run_id", "config_path"}
    assert out["drift"]["drift_share"] == r.drift.drift_share and out["decision"]["verdict"] == "retrain"
    assert out["events"]["retrain_event_id"] == r.events.retrain_event_id and out["training_file"]["path"]


def test_without_the_html_report_the_verdict_is_the_same(store, home: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    drifted = generate_churn(1500, seed=121, drift=0.8, start=LATER)
    path = _write(tmp_path, drifted, "window.parquet")
    with_report = monitor(config_path=str(store["config"]), current_path=path)
    other = tmp_path / "other-state"
    monkeypatch.setenv("MLOPS_HOME", str(other))  # the same first look at this window, from a new state folder
    without = monitor(config_path=str(store["config"]), current_path=path, html_report=False)

    assert with_report.report_path and Path(with_report.report_path).is_file()
    assert without.report_path is None and not list(other.glob("reports/**/*.html"))
    assert without.drift.scores == with_report.drift.scores and without.drift.drift_share == with_report.drift.drift_share
    assert without.drift.evidently_agreement is None and "not asked for" in without.drift.report_error
    assert without.drift.dataset_drift and without.decision.verdict == with_report.decision.verdict
    assert without.decision.reasons == with_report.decision.reasons
    assert without.live_quality.reason == with_report.live_quality.reason
    keys = _artifact_keys(without.monitor_flow_run_id)
    assert f"{NAME}-drift-summary" in keys and f"{NAME}-monitor-decision" in keys


def test_a_monitor_run_tells_its_verdict_in_name_state_tags_and_flow_run_artifacts(store, home: Path,
                                                                                    tmp_path: Path) -> None:
    """In the Prefect UI: `monitor-<model>-<window>`, a state saying the verdict, model/version/outcome tags, and
    the drift artifacts on the flow run; MLflow runs on SQLite here, so the report artifact says how to open it."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    drifted = generate_churn(1500, seed=131, drift=0.8, start=LATER)
    st = monitor(config_path=str(store["config"]), current_path=_write(tmp_path, drifted, "Drifted Window.parquet"),
                 return_state=True)
    r = st.result()
    assert st.is_completed() and st.name == "Retrain requested" and r.retrain
    assert st.message == f"checked v{r.model_version}: drift {r.drift.drift_share:.2f}, retrain requested"
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(st.state_details.flow_run_id)
        arts = {a.key: a for a in client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id])))}
    assert run.name == f"monitor-{NAME}-drifted-window.parquet"
    assert {f"model:{NAME}", f"version:v{r.model_version}", "outcome:retrain"} <= set(run.tags)

    keys = {f"{NAME}-drift-summary", f"{NAME}-drift-report", f"{NAME}-monitor-decision"}
    assert keys <= set(arts) and all(arts[k].task_run_id is None for k in keys)  # on the flow run
    report = Path(r.report_path)
    note = arts[f"{NAME}-drift-report"].data
    assert arts[f"{NAME}-drift-report"].type == "markdown" and "file://" not in note
    assert f"report/{report.name}" in note and f"mlflow ui --backend-store-uri {store['uri']}" in note
    assert r.mlflow_run_id in note and str(report) in note
    summary = arts[f"{NAME}-drift-summary"].data
    assert f"`drift_share_threshold` {POLICY_SHARE:g} (this share is at or above it" in summary
    assert "Informational: Evidently's dataset-drift verdict at `monitoring.drift_share` 0.5" in summary

    window_id = report.stem.split(f"-v{r.model_version}-", 1)[1]
    html = report.read_text(encoding="utf-8")
    assert f"<title>Drift report: {NAME} v{r.model_version}, window {window_id}</title>" in html
    assert html.lstrip().lower().startswith("<!doctype html")
    logged = mlflow.MlflowClient().download_artifacts(r.mlflow_run_id, f"report/{report.name}", str(tmp_path))
    assert "<title>Drift report:" in Path(logged).read_text(encoding="utf-8")  # the page MLflow shows



def test_a_retrain_run_is_named_after_its_model_and_reason(store, home: Path, tmp_path: Path) -> None:
    from prefect.client.orchestration import get_client

    from mlops.monitoring.policy import PolicyStore, should_start_training

    cfg = _config(tmp_path, name="named.yaml", model_name="churn-named")
    policy = PolicyStore(home / "monitor" / "churn-named" / "policy.json")
    assert should_start_training(policy, pd.Timestamp.now(tz="UTC").to_pydatetime(), 0, run_id=str(uuid.uuid4()))
    held = retrain(config_path=str(cfg), reason="drift monitor: share 0.42 >= 0.3", return_state=True)
    assert held.result().status == "refused"  # the slot is held: nothing trains
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(held.state_details.flow_run_id).name == \
            "retrain-churn-named-drift-monitor-share-0.42-0.3"
