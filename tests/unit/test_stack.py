"""The stack supervisor without servers: ports, the pid file, stopping by pid, the deployments files."""

from __future__ import annotations

import inspect
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from mlops import alerts, events, stack
from tests.conftest import REPO, write_config

DEPLOYMENT_FILES = [REPO / "prefect.yaml", REPO / "deployments/prefect/local.yaml",
                    REPO / "deployments/prefect/production.yaml"]


def opts(tmp_path: Path, **kw: object) -> stack.StackOptions:
    return stack.StackOptions.from_env(environ={}, state_dir=tmp_path / "state", **kw)


@pytest.fixture
def listener() -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    yield s
    s.close()


def sleeper(*extra: str) -> subprocess.Popen[bytes]:
    """A process tree in its own session, like the stack starts: a shell with two children."""
    script = "sleep 60 & sleep 60 & wait" if not extra else extra[0]
    return subprocess.Popen(["sh", "-c", script], start_new_session=True)


def record(proc: subprocess.Popen[bytes], name: str = "prefect") -> stack.ProcessRecord:
    for _ in range(50):  # let the shell start its children
        if len(stack.descendants(proc.pid)) >= 2:
            break
        time.sleep(0.02)
    return stack.ProcessRecord(name=name, pid=proc.pid, start_ticks=stack.proc_start_ticks(proc.pid),
                               cmd=["sh"], log="/dev/null")


# ---- ports ------------------------------------------------------------------------------------


def test_a_taken_port_is_named_with_the_option_that_moves_it(tmp_path: Path, listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    o = opts(tmp_path, prefect_port=port)
    with pytest.raises(stack.StackError) as err:
        stack.check_ports(o)
    msg = str(err.value)
    assert f"port {port} on 127.0.0.1 (Prefect server) is already taken" in msg
    assert "--prefect-port" in msg and "MLOPS_PREFECT_PORT" in msg


def test_up_refuses_a_taken_port_before_starting_anything(tmp_path: Path, listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    from mlops.cli_stack import app

    res = CliRunner().invoke(app, ["up", "--state-dir", str(tmp_path / "state"), "--webhook-port", str(port),
                                   "--prefect-port", str(_free_port()), "--mlflow-port", str(_free_port()),
                                   "--serve-port", str(_free_port())])
    assert res.exit_code == 2, res.output
    assert f"port {port} on 127.0.0.1 (webhook bridge) is already taken" in res.output
    assert "--webhook-port or MLOPS_WEBHOOK_PORT" in res.output
    assert not (tmp_path / "state" / "stack.json").exists()
    assert not (tmp_path / "state" / "logs").exists()


def test_free_ports_pass(tmp_path: Path) -> None:
    stack.check_ports(opts(tmp_path, prefect_port=_free_port(), mlflow_port=_free_port(), serve_port=_free_port(),
                           webhook_port=_free_port()))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---- options ----------------------------------------------------------------------------------


def test_options_from_environment_and_overrides(tmp_path: Path) -> None:
    env = {"MLOPS_HOME": str(tmp_path / "h"), "MLOPS_PREFECT_PORT": "4999", "MLOPS_WEBHOOK_PORT": "4998",
           "MLOPS_ALERT_WEBHOOK_URL": "http://127.0.0.1:9/a", "MLOPS_MLFLOW_BASIC_AUTH": "1"}
    o = stack.StackOptions.from_env(environ=env, webhook_port=5001)
    assert o.state_dir == (tmp_path / "h").resolve()
    assert (o.prefect_port, o.webhook_port, o.mlflow_port, o.serve_port) == (4999, 5001, 5000, 8000)
    assert o.api_url == "http://127.0.0.1:4999/api" and o.alert_url == "http://127.0.0.1:9/a"
    assert o.mlflow_basic_auth and o.host == "127.0.0.1"
    assert o.config_path == REPO / "configs/default.yaml" and o.prefect_file == REPO / "deployments/prefect/local.yaml"


def test_a_bad_port_variable_is_one_sentence() -> None:
    with pytest.raises(stack.StackError, match="MLOPS_MLFLOW_PORT='five' is not a port number"):
        stack.StackOptions.from_env(environ={"MLOPS_MLFLOW_PORT": "five"})


def test_auth_settings_reach_the_clients(tmp_path: Path) -> None:
    o = stack.StackOptions.from_env(environ={"PREFECT_SERVER_API_AUTH_STRING": "admin:pw",
                                             "PREFECT_API_URL": "http://elsewhere:1/api"}, state_dir=tmp_path)
    env = stack.base_env(o)
    assert env["PREFECT_API_AUTH_STRING"] == "admin:pw" and env["PREFECT_API_URL"] == o.api_url
    assert env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    assert stack.prefect_auth_header(env)["Authorization"].startswith("Basic ")
    with pytest.raises(stack.StackError, match="MLFLOW_TRACKING_USERNAME or MLFLOW_TRACKING_PASSWORD"):
        stack.base_env(stack.StackOptions.from_env(environ={}, state_dir=tmp_path, mlflow_basic_auth=True))


# ---- pid file and stopping --------------------------------------------------------------------


def test_down_with_nothing_running_says_so(tmp_path: Path) -> None:
    said: list[str] = []
    assert stack.down(tmp_path / "state", said.append) == []
    assert "nothing to stop" in said[0]
    from mlops.cli_stack import app

    res = CliRunner().invoke(app, ["down", "--state-dir", str(tmp_path / "state")])
    assert res.exit_code == 0 and "nothing to stop" in res.output
    res = CliRunner().invoke(app, ["stack-status", "--state-dir", str(tmp_path / "state")])
    assert res.exit_code == 1 and "not running" in res.output


def test_up_refuses_to_start_twice(tmp_path: Path) -> None:
    proc = sleeper()
    try:
        o = opts(tmp_path)
        o.state_dir.mkdir(parents=True)
        st = stack.StackState(state_dir=str(o.state_dir), started_at="t", processes={"prefect": record(proc)})
        stack.write_state(st)
        with pytest.raises(stack.StackError, match=r"already running .*prefect \d+.*mlops down"):
            stack.up(o)
        assert proc.poll() is None  # refused, and nothing of the running stack was touched
        assert stack.read_state(o.state_dir) is not None
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_a_stale_pid_file_is_cleared_and_a_reused_pid_is_not_ours(tmp_path: Path) -> None:
    proc = sleeper()
    try:
        rec = record(proc)
        assert rec.alive()
        stranger = stack.ProcessRecord(**{**rec.__dict__, "start_ticks": (rec.start_ticks or 0) + 1})
        assert not stranger.alive()  # same pid, another start time: a different process
        state_dir = tmp_path / "state"
        state_dir.mkdir()
        stack.write_state(stack.StackState(state_dir=str(state_dir), started_at="t",
                                           processes={"prefect": stranger}))
        said: list[str] = []
        assert stack.down(state_dir, said.append) == []
        assert proc.poll() is None, "down must not signal a process it did not start"
        assert not stack.pid_file(state_dir).exists() and "stale" in said[-1]
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_down_stops_each_recorded_process_tree_and_forgets_it(tmp_path: Path) -> None:
    a, b = sleeper(), sleeper("sleep 60 & setsid sleep 61 & wait")  # b has a child in its own session
    bystander = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        ra, rb = record(a, "prefect"), record(b, "worker")
        family = [a.pid, b.pid, *stack.descendants(a.pid), *stack.descendants(b.pid)]
        assert len(family) == 6
        state_dir = tmp_path / "state"
        state_dir.mkdir()
        stack.write_state(stack.StackState(state_dir=str(state_dir), started_at="t",
                                           processes={"prefect": ra, "worker": rb}))
        assert set(stack.read_state(state_dir).running()) == {"prefect", "worker"}
        assert stack.down(state_dir, grace=5) == ["worker", "prefect"]
        for p in (a, b):
            p.wait(timeout=5)
        time.sleep(0.1)
        assert all(stack.proc_stat(p) is None or stack.proc_stat(p)[0] == "Z" for p in family)
        assert bystander.poll() is None
        assert not stack.pid_file(state_dir).exists()
    finally:
        for p in (a, b, bystander):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def test_a_zombie_counts_as_stopped(tmp_path: Path) -> None:
    proc = subprocess.Popen(["true"])
    rec = stack.ProcessRecord(name="x", pid=proc.pid, start_ticks=stack.proc_start_ticks(proc.pid), cmd=[], log="")
    deadline = time.monotonic() + 5
    while (stack.proc_stat(proc.pid) or ("Z",))[0] != "Z" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not rec.alive()
    proc.wait()


def test_state_round_trips_through_the_pid_file(tmp_path: Path) -> None:
    rec = stack.ProcessRecord(name="prefect", pid=1234, start_ticks=99, cmd=["prefect", "server"], log="l",
                              url="http://127.0.0.1:4200", started_at="now")
    st = stack.StackState(state_dir=str(tmp_path), started_at="now", urls={"prefect": rec.url or ""},
                          processes={"prefect": rec}, work_pool="mlops-local", deployments=["train"])
    stack.write_state(st)
    assert stack.read_state(tmp_path) == st
    stack.pid_file(tmp_path).write_text("{not json")
    with pytest.raises(stack.StackError, match="is not valid"):
        stack.read_state(tmp_path)


def test_logs_names_are_checked(tmp_path: Path) -> None:
    assert stack.log_file(tmp_path, "worker") == tmp_path.resolve() / "logs" / "worker.log"
    with pytest.raises(stack.StackError, match="no log named 'nope'"):
        stack.log_file(tmp_path, "nope")


def test_webhook_secrets_are_generated_once_private_and_the_environment_wins(tmp_path: Path) -> None:
    o = opts(tmp_path)
    first = stack.load_webhook_secrets(o)
    assert set(first) == {"MLOPS_WEBHOOK_DATA_VENDOR_SECRET", "MLOPS_WEBHOOK_LABELS_SECRET", "MLOPS_WEBHOOK_OPS_SECRET"}
    path = o.state_dir / stack.SECRETS_FILE
    assert path.stat().st_mode & 0o777 == 0o600
    assert stack.load_webhook_secrets(o) == first
    mine = stack.StackOptions.from_env(environ={"MLOPS_WEBHOOK_OPS_SECRET": "s3cret"}, state_dir=o.state_dir)
    assert stack.load_webhook_secrets(mine)["MLOPS_WEBHOOK_OPS_SECRET"] == "s3cret"


# ---- deployments files ------------------------------------------------------------------------


def test_rendering_fills_in_the_config_and_leaves_out_missing_flows(tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "flows").mkdir(parents=True)
    for name in ("train.py", "promote.py", "monitor.py"):
        (project / "flows" / name).write_text("")
    cfg = write_config(tmp_path)
    o = stack.StackOptions.from_env(environ={}, state_dir=tmp_path / "state", project_dir=project,
                                    config_path=cfg, prefect_file=REPO / "deployments/prefect/local.yaml",
                                    schedules=False)
    r = stack.render_deployments(o, "churn-small", "5 * * * *")
    assert r.names == ["train", "retrain", "monitor", "promote", "rollback"]
    assert r.skipped == ["score (flows/score.py not found)"] and r.work_pools == ["mlops-local"]
    raw = yaml.safe_load(r.path.read_text())
    deps = {d["name"]: d for d in raw["deployments"]}
    assert deps["train"]["parameters"]["config_path"] == str(cfg)
    assert deps["promote"]["parameters"]["model_name"] == "churn-small"
    assert deps["monitor"]["schedules"][0] == {"cron": "5 * * * *", "timezone": "UTC", "active": False}
    # event templates survive rendering untouched
    assert deps["train"]["triggers"][0]["parameters"]["source_path"] == "{{ event.payload.path }}"


def test_production_file_needs_its_variables(tmp_path: Path) -> None:
    prod = REPO / "deployments/prefect/production.yaml"
    o = stack.StackOptions.from_env(environ={}, state_dir=tmp_path, prefect_file=prod)
    r = stack.render_deployments(o, "churn-classifier", "0 * * * *")
    text = r.path.read_text()
    assert "{{ $" not in text and f"directory: {REPO}" in text
    bad = tmp_path / "bad.yaml"
    bad.write_text(prod.read_text().replace("timezone: UTC", 'timezone: "{{ $MLOPS_NOT_SET_ANYWHERE }}"'))
    with pytest.raises(stack.StackError, match=r"\$MLOPS_NOT_SET_ANYWHERE, which is not set"):
        stack.render_deployments(replace_file(o, bad), "m", None)


def replace_file(o: stack.StackOptions, path: Path) -> stack.StackOptions:
    from dataclasses import replace

    return replace(o, prefect_file=path)


@pytest.mark.parametrize("path", DEPLOYMENT_FILES, ids=lambda p: p.name)
def test_deployment_files_are_valid_for_prefect_and_match_the_flows(path: Path) -> None:
    from prefect.cli.deploy._models import PrefectYamlModel
    from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger

    raw = yaml.safe_load(path.read_text())
    model = PrefectYamlModel.model_validate(raw)
    deps = {d.name: d for d in model.deployments}
    assert set(deps) == {"train", "retrain", "monitor", "score", "promote", "rollback"}
    pools = {d.work_pool.name for d in deps.values()}
    assert len(pools) == 1
    for name, dep in deps.items():
        assert dep.enforce_parameter_schema is True, name
        module, func = dep.entrypoint.split(":")
        fn = _flow_function(module, func)
        accepted = set(inspect.signature(fn).parameters)
        assert set(dep.parameters) <= accepted, (name, dep.parameters)
        for spec in dep.triggers or []:
            trig = DeploymentEventTrigger.model_validate(spec)
            assert trig.enabled and set(trig.parameters or {}) <= accepted, (name, spec)
    for name in ("train", "retrain"):
        limit = deps[name].concurrency_limit
        assert (limit.limit, limit.collision_strategy) == (1, "CANCEL_NEW")
    assert {e for t in deps["train"].triggers for e in t["expect"]} == {events.DATA_ARRIVED}
    assert {e for t in deps["retrain"].triggers for e in t["expect"]} == {events.RETRAIN_REQUESTED}
    assert deps["score"].triggers[0]["match"] == {"prefect.resource.id": "mlops.scoring.*"}
    assert deps["monitor"].schedules and not deps["promote"].triggers and not deps["rollback"].schedules


def test_root_monitor_cron_matches_the_default_config() -> None:
    cfg = yaml.safe_load((REPO / "configs/default.yaml").read_text())
    for path in DEPLOYMENT_FILES[:2]:
        dep = next(d for d in yaml.safe_load(path.read_text())["deployments"] if d["name"] == "monitor")
        assert dep["schedules"][0]["cron"] == cfg["monitoring"]["schedule_cron"]


def _flow_function(module: str, func: str) -> object:
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"_stack_test_{Path(module).stem}", REPO / module)
    assert spec is not None and (REPO / module).exists(), f"{module} is named in prefect.yaml but missing"
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return getattr(getattr(mod, func), "fn", getattr(mod, func))


def _render(params: dict[str, object], event: dict[str, object]) -> dict[str, object]:
    """Render trigger parameters the way Prefect's RunDeployment action does."""
    import copy
    from uuid import uuid4

    from prefect.server.events.actions import RunDeployment
    from prefect.server.events.schemas.events import ReceivedEvent
    from prefect.utilities.schema_tools.hydration import HydrationContext, hydrate

    params = copy.deepcopy(params)
    RunDeployment._upgrade_v1_templates(params)
    ev = ReceivedEvent.model_validate({"id": str(uuid4()), "occurred": "2026-01-01T00:00:00Z", **event})
    return hydrate(params, HydrationContext(render_jinja=True, jinja_context={"event": ev}, raise_on_error=True))


def test_trigger_templates_give_typed_parameters() -> None:
    deps = {d["name"]: d for d in yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]}
    data = deps["train"]["triggers"][0]["parameters"]
    got = _render(data, {"event": "mlops.data.arrived", "resource": {"prefect.resource.id": "mlops.dataset.churn"},
                         "payload": {"path": "/data/new.csv", "reason": "new file landed"}})
    assert got == {"source_path": "/data/new.csv", "reason": "new file landed"}
    got = _render(data, {"event": "mlops.data.arrived", "resource": {"prefect.resource.id": "mlops.dataset.churn"},
                         "payload": {"path": "/data/new.csv"}})
    assert got == {"source_path": "/data/new.csv", "reason": "new data: /data/new.csv"}
    retrain = deps["retrain"]["triggers"][0]["parameters"]
    monitor_event = {"event": "mlops.retrain.requested", "resource": {"prefect.resource.id": "mlops.model.churn"},
                     "payload": {"training_file": "/s/train.parquet", "triggers": ["drift 2 windows", "quality"]}}
    assert _render(retrain, monitor_event) == {"source_path": "/s/train.parquet",
                                               "reason": "retrain requested: drift 2 windows; quality"}
    ops_event = {"event": "mlops.retrain.requested", "resource": {"prefect.resource.id": "mlops.dataset.churn"},
                 "payload": {"reason": "schema fix deployed", "requested_by": "alice"}}
    assert _render(retrain, ops_event) == {"source_path": None, "reason": "schema fix deployed"}


# ---- alerts -----------------------------------------------------------------------------------


def test_each_alert_kind_has_one_automation_on_the_flows_event_names() -> None:
    expected = {events.DRIFT_DETECTED, events.GATE_REJECTED, events.MODEL_PROMOTED, events.MODEL_ROLLED_BACK,
                "prefect.flow-run.Failed", "prefect.flow-run.Crashed"}
    assert {e for a in alerts.ALERTS for e in a.expect} == expected
    from uuid import uuid4

    from prefect.server.events.actions import SendNotification

    for alert in alerts.ALERTS:
        auto = alerts._automation(alert, uuid4())
        assert auto.name.startswith(alerts.PREFIX) and auto.trigger.threshold == 1
        action = auto.actions[0]
        SendNotification.model_validate(action.model_dump())  # the server's template check
        assert "{{ event.id }}" in action.body
    crash = alerts.crash_detection_automation()
    assert crash.trigger.posture == "Proactive" and crash.trigger.within.total_seconds() >= 3 * 180
