"""What the Prefect UI shows about a run: its name, final state, tags and artifacts (on the flow run, not a
task), the run forms' parameter schema, and the search overrides a form can set."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from prefect.utilities.schema_tools.validation import validate

from flows.backtest import backtest
from flows.monitor import monitor, retrain
from flows.promote import promote, rollback
from flows.score import score
from flows.train import train
from mlops.cli.common import _TaskDoneFilter
from tests.conftest import small_config, write_config
from tests.support.state import state_folder

NAME = "churn-small"


def _run(state: Any) -> Any:
    with get_client(sync_client=True) as client:
        return client.read_flow_run(state.state_details.flow_run_id)


def _artifacts(flow_run_id: Any) -> dict[str, Any]:
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    return {a.key: a for a in found}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory):
    """A first training (promoted), a weak one (rejected), a refused and a forced promotion of the rejected
    version, and a rollback."""
    tmp = tmp_path_factory.mktemp("outcomes")
    state = tmp / "state"
    with state_folder(state):
        cfg = write_config(tmp)
        first = train(config_path=str(cfg), reason="first data: /data/in/churn-2026-06.csv", return_state=True)
        weak = tmp / "weak.yaml"
        weak.write_text(yaml.safe_dump(small_config(models=[{"family": "logistic_regression",
                                                             "params": {"C": 0.00001}}])))
        rejected = train(config_path=str(weak), return_state=True)
        refused = promote(config_path=str(cfg), version=2, return_state=True)  # gate failed, no force
        forced = promote(config_path=str(cfg), version=2, reason="outcome test", force=True, return_state=True)
        back = rollback(config_path=str(cfg), reason="back again", return_state=True)
        yield {"tmp": tmp, "config": cfg, "first": first, "rejected": rejected, "refused": refused, "forced": forced,
               "back": back}


@pytest.mark.slow
def test_a_promoted_training_says_so_in_its_name_state_and_tags(runs) -> None:
    st = runs["first"]
    assert st.is_completed() and st.name == "Promoted"
    assert st.message == "promoted v1 (first champion)"
    run = _run(st)
    assert run.name == "train-churn-small-first-data-churn-2026-06.csv"
    assert {"model:churn-small", "version:v1", "outcome:promoted"} <= set(run.tags)
    assert st.result().version == "1"
    assert "source_path" not in run.parameters and "search" not in run.parameters  # left out, as by the form


@pytest.mark.slow
def test_a_rejected_training_is_completed_named_rejected_with_the_failing_checks(runs) -> None:
    st = runs["rejected"]
    s = st.result()
    assert st.is_completed() and st.name == "Rejected" and not s.promoted
    assert st.message.startswith("REJECTED v2: ") and s.failing_checks
    assert all(check in st.message for check in s.failing_checks)  # why, in the check names
    assert "champion unchanged: v1" in st.message and "\n" not in st.message and len(st.message) <= 300
    run = _run(st)
    assert run.name == "train-churn-small-manual"
    assert {"model:churn-small", "version:v2", "outcome:rejected"} <= set(run.tags)


@pytest.mark.slow
def test_training_artifacts_belong_to_the_flow_run(runs) -> None:
    st = runs["rejected"]
    found = _artifacts(st.state_details.flow_run_id)
    keys = {"churn-small-training-summary", "churn-small-leaderboard", "churn-small-data-profile",
            "churn-small-versions", "churn-small-mlflow-open"}
    assert keys <= set(found), sorted(found)
    assert all(found[k].task_run_id is None for k in keys)  # made in the flow's body
    summary = found["churn-small-training-summary"].data
    assert "**Outcome**: REJECTED v2" in summary and "Gate verdict: **REJECTED**" in summary
    assert "- **FAIL** **" in summary  # the verdict as a list: no table cell cut off
    assert not [line for line in summary.splitlines() if line.strip() == "."]  # no stray line without quarantine
    # MLflow runs on SQLite here: no link a browser could follow, so the artifact says how to open it
    assert "mlflow ui --backend-store-uri sqlite:///" in found["churn-small-mlflow-open"].data
    assert found["churn-small-leaderboard"].type == "table"
    assert "best_params" not in str(found["churn-small-leaderboard"].data)  # long cells stay in the summary


@pytest.mark.slow
def test_the_versions_table_shows_each_version_with_its_gate_result(runs) -> None:
    table = _artifacts(runs["rejected"].state_details.flow_run_id)["churn-small-versions"].data
    failed = runs["rejected"].result().failing_checks
    assert '"version": "v2"' in table and "REJECTED" in table and failed[0] in table
    assert '"version": "v1"' in table and "champion" in table


@pytest.mark.slow
def test_promote_and_rollback_runs_are_named_and_say_what_moved(runs) -> None:
    forced, back = runs["forced"], runs["back"]
    assert forced.is_completed() and forced.name == "Promoted"
    assert forced.message == "promoted v2 (was v1, forced over a failed gate)"
    run = _run(forced)
    assert run.name == "promote-churn-small-v2"
    assert {"model:churn-small", "version:v2", "outcome:promoted"} <= set(run.tags)
    assert "churn-small-versions" in _artifacts(run.id)
    assert back.is_completed() and back.name == "Rolled back" and back.message == "rolled back to v1 (was v2)"
    assert _run(back).name == "rollback-churn-small"
    assert "outcome:rolled-back" in _run(back).tags


@pytest.mark.slow
def test_a_refused_promotion_is_failed_tagged_and_still_shows_the_versions(runs) -> None:
    st = runs["refused"]
    assert st.is_failed() and "failed its promotion gate" in st.message
    run = _run(st)
    assert "outcome:refused" in run.tags and run.name == "promote-churn-small-v2"
    assert "churn-small-versions" in _artifacts(run.id)


@pytest.mark.slow
def test_a_retrain_with_no_labelled_rows_ends_skipped_with_its_reason_tags_and_artifact(runs) -> None:
    """What the `ops` webhook starts when no labelled rows exist: its own state, not a plain Completed the operator
    would read as "retrained"; the bridge's status text for that run says Skipped and why."""
    import time

    from mlops.webhooks.status import EventOutcome, delivery_status
    from mlops.webhooks.status import _run as status_run
    from mlops.webhooks.store import Delivery

    before = len(registry_versions())
    st = retrain(config_path=str(runs["config"]), reason="ops: retrain requested by hand", return_state=True)
    assert st.is_completed() and st.name == "Skipped" and st.type.value == "COMPLETED"
    assert st.message.startswith("retrain skipped: no labelled rows to train on") and "\n" not in st.message
    assert st.result().status == "skipped" and len(registry_versions()) == before
    run = _run(st)
    assert {"model:churn-small", "outcome:skipped"} <= set(run.tags)
    summary = _artifacts(run.id)["churn-small-retrain"]
    assert summary.task_run_id is None and "Nothing was trained" in summary.data and "no labelled rows" in summary.data
    doc = delivery_status(Delivery("ops", "d1", "e1", "mlops.retrain.requested", time.time(), time.time()),
                          EventOutcome([status_run(run.model_dump(mode="json"))]))
    assert "is Skipped: retrain skipped: no labelled rows" in doc["detail"] and "Completed" not in doc["detail"]


@pytest.mark.slow
def test_a_monitor_yes_without_labelled_rows_requests_no_retrain(runs, tmp_path) -> None:
    """The policy says retrain (drift) but the window carries no labels and none were kept: no
    mlops.retrain.requested goes out, and the run says the retrain was skipped and why."""
    import pandas as pd

    from mlops.core.data import CHURN_START, generate_churn

    policy = {"consecutive_windows": 1, "cooldown_minutes": 0, "min_rows": 100, "drift_trigger": "always",
              "run_training_locally": False}
    cfg = write_config(tmp_path, "policy.yaml", monitoring={"policy": policy})
    window = generate_churn(1500, seed=131, drift=0.8, start=CHURN_START + pd.Timedelta(days=181))
    path = tmp_path / "unlabelled.parquet"
    window.drop(columns=["churned"]).to_parquet(path, index=False)
    st = monitor(config_path=str(cfg), current_path=str(path), html_report=False, return_state=True)
    r = st.result()
    assert r.retrain and r.training is not None and r.training.status == "skipped"
    assert "no labelled rows" in r.training.detail
    assert r.events.decision_event_id and r.events.retrain_event_id is None
    assert st.is_completed() and st.name == "Retrain skipped" and "retrain skipped" in st.message
    assert "outcome:retrain-skipped" in _run(st).tags
    assert r.event_payload()["retrain"] is False


@pytest.mark.slow
def test_a_monitor_yes_with_labelled_rows_retrains_here_in_a_run_named_by_its_outcome(runs, tmp_path) -> None:
    """run_training_locally (the default): the monitor starts the retrain flow itself; that run ends in the
    training's own state (Promoted, Rejected ...), and the monitor's result says what became of it."""
    import pandas as pd
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    from mlops.core.data import CHURN_START, generate_churn

    policy = {"consecutive_windows": 1, "cooldown_minutes": 0, "min_rows": 100, "drift_trigger": "always",
              "run_training_locally": True, "dedupe_seconds": 0}
    cfg = write_config(tmp_path, "local.yaml", monitoring={"policy": policy})
    window = generate_churn(1500, seed=141, drift=0.8, start=CHURN_START + pd.Timedelta(days=181))
    path = tmp_path / "labelled.parquet"
    window.to_parquet(path, index=False)
    r = monitor(config_path=str(cfg), current_path=str(path), html_report=False)
    assert r.retrain_requested and r.events.retrain_event_id
    assert r.training is not None and r.training.status == "trained" and r.training.summary, r.training
    with get_client(sync_client=True) as client:
        found = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            name=FlowRunFilterName(like_="retrain-churn-small-drift-monitor")))
    assert len(found) == 1
    state = found[0].state
    expected = "Promoted" if r.training.summary["promoted"] else "Rejected"
    assert state.type.value == "COMPLETED" and state.name == expected and state.message.startswith("retrained: ")
    assert f"outcome:{expected.lower()}" in found[0].tags


def registry_versions() -> list[str]:
    from mlops.registry import versions as registry

    return [str(mv.version) for mv in registry.client().search_model_versions(f"name='{NAME}'")]


@pytest.mark.slow
def test_search_overrides_apply_for_one_run(runs) -> None:
    st = train(config_path=str(runs["config"]), reason="overrides",
               search={"n_trials": 1, "families": ["logistic_regression"]}, return_state=True)
    s = st.result()
    assert [(r["family"], r["trials"]) for r in s.leaderboard] == [("logistic_regression", 1)]
    bad = train(config_path=str(runs["config"]), search={"families": ["ridge"]}, return_state=True)
    assert bad.is_failed() and "ridge is not among the config's model families" in bad.message
    assert "outcome:failed" in _run(bad).tags


@pytest.mark.slow
def test_a_spent_time_budget_still_fits_each_family_once(runs) -> None:
    st = train(config_path=str(runs["config"]), search={"time_budget": 0.01}, return_state=True)
    board = st.result().leaderboard  # one trial at a time (n_jobs 1): each family's first, then the budget is spent
    assert sorted((r["family"], r["trials"]) for r in board) == [("hist_gradient_boosting", 1),
                                                                   ("logistic_regression", 1)]


def test_every_form_parameter_has_a_description_and_no_null_switch() -> None:
    for fl in (train, promote, rollback, backtest, monitor, retrain, score):
        props = fl.parameters.model_dump_for_openapi()["properties"]
        for name, prop in props.items():
            assert prop.get("description"), (fl.name, name)
            assert "anyOf" not in prop, (fl.name, name)  # no str/None toggle in the form
            assert prop.get("default", "") is not None, (fl.name, name)  # no null the form would fill in and reject
    for fl, optional in ((train, {"source_path", "search"}), (backtest, {"data_path"}),
                         (monitor, {"current_path", "labels_path", "at"}), (retrain, {"source_path", "at"}),
                         (score, {"output_dir", "predictions_path"})):
        props = fl.parameters.model_dump_for_openapi()["properties"]
        assert all("default" not in props[name] for name in optional), fl.name  # left empty, the form sends nothing
    assert monitor.parameters.model_dump_for_openapi()["properties"]["at"]["format"] == "date-time"
    # the retrain trigger renders an event without a training file as null: the enforced schema takes it
    assert validate({"source_path": None, "reason": "ops"}, retrain.parameters.model_dump_for_openapi(),
                    raise_on_error=True) == []
    props = train.parameters.model_dump_for_openapi()["properties"]
    assert "configs/default.yaml" in props["config_path"]["enum"]
    assert "configs/webhooks.yaml" not in props["config_path"]["enum"]  # webhook mappings are not pipelines
    assert props["source_path"]["type"] == "string"
    search = props["search"]
    assert search["type"] == "object" and set(search["properties"]) == {"n_trials", "families", "time_budget"}
    assert all(p.get("description") and "anyOf" not in p and "default" not in p for p in search["properties"].values())


def test_the_deployed_config_is_among_the_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.forms import config_choices

    monkeypatch.setenv("MLOPS_CONFIG", "/etc/mlops/churn.yaml")
    assert config_choices()[-1] == "/etc/mlops/churn.yaml"


def test_the_form_lists_each_config_once_and_only_the_deployed_configs_families(
        monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """`mlops up` deploys with the config's absolute path: the form lists that file once (spelled as deployed, the
    form's default) and offers only the model families that config has."""
    from prefect.utilities.callables import parameter_schema

    from flows.forms import PROJECT_DIR

    def form() -> dict[str, Any]:
        return parameter_schema(train).model_dump_for_openapi()["properties"]

    default = PROJECT_DIR / "configs" / "default.yaml"
    monkeypatch.setenv("MLOPS_CONFIG", str(default))
    props = form()
    choices = props["config_path"]["enum"]
    files = [(p if p.startswith("/") else str(PROJECT_DIR / p)) for p in choices]
    assert len(set(files)) == len(files) and str(default) in choices and "configs/default.yaml" not in choices
    listed = [m["family"] for m in yaml.safe_load(default.read_text())["models"]]
    assert props["search"]["properties"]["families"]["items"]["enum"] == listed
    own = write_config(tmp_path)  # a config outside the project: listed last, its own families offered
    monkeypatch.setenv("MLOPS_CONFIG", str(own))
    props = form()
    assert props["config_path"]["enum"][-1] == str(own) and props["config_path"]["enum"].count(str(own)) == 1
    assert props["search"]["properties"]["families"]["items"]["enum"] == ["logistic_regression",
                                                                          "hist_gradient_boosting"]


def test_the_cli_console_leaves_out_finished_task_lines_only() -> None:
    f = _TaskDoneFilter()

    def rec(name: str, msg: str) -> logging.LogRecord:
        return logging.LogRecord(name, logging.INFO, __file__, 1, msg, None, None)

    assert not f.filter(rec("prefect.task_runs", "Finished in state Completed()"))
    assert f.filter(rec("prefect.task_runs", "Finished in state Failed('boom')"))
    assert f.filter(rec("prefect.task_runs", "logistic_regression: best cv score 0.8"))
    assert f.filter(rec("prefect.flow_runs", "Finished in state Completed()"))
