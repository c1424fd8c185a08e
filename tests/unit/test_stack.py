"""The stack supervisor without servers: ports, starting and stopping processes by pid and creation
time (psutil, no /proc), the pid file, secrets and alerts (what it deploys: test_deployments.py)."""

from __future__ import annotations

import inspect
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import psutil
import pytest
from typer.testing import CliRunner

from mlops.cli import stack as cli_stack
from mlops.core import events
from mlops.core.settings import get_settings
from mlops.core.startup import free_port, poll
from mlops.stack import alerts
from mlops.stack import options as stack_options
from mlops.stack import processes as stack_processes
from mlops.stack import supervisor as stack
from tests.conftest import REPO

PREFECT_FILE = REPO / "prefect.yaml"


def opts(tmp_path: Path, **kw: object) -> stack_options.StackOptions:
    return stack_options.StackOptions.from_env(environ={}, state_dir=tmp_path / "state", **kw)


@pytest.fixture
def listener() -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    yield s
    s.close()


def wait_for(cond: Any, timeout: float = 5.0) -> Any:
    return poll(cond, timeout, interval=0.02)


def family_of(pid: int) -> list[int]:
    return [p.pid for p in psutil.Process(pid).children(recursive=True)]


def gone(pid: int) -> bool:
    """Not running any more (a zombie waiting for its parent counts as gone)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def sleeper(script: str = "sleep 60 & sleep 60 & wait") -> subprocess.Popen[bytes]:
    """A process tree in its own session, like the stack starts: a shell with two children."""
    return subprocess.Popen(["sh", "-c", script], start_new_session=True)


def record(proc: subprocess.Popen[bytes], name: str = "prefect") -> stack_processes.ProcessRecord:
    assert wait_for(lambda: len(family_of(proc.pid)) >= 2), "the shell did not start its children"
    return stack_processes.ProcessRecord(name=name, pid=proc.pid, create_time=psutil.Process(proc.pid).create_time(),
                                         cmd=["sh"], log="/dev/null")


def write_state(state_dir: Path, **processes: stack_processes.ProcessRecord) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    stack_processes.write_state(stack_processes.StackState(state_dir=str(state_dir), started_at="t",
                                                           processes=processes))


def kill(*procs: subprocess.Popen[bytes]) -> None:
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


# ---- ports ------------------------------------------------------------------------------------


def test_a_taken_port_is_named_with_the_option_that_moves_it(tmp_path: Path, listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    o = opts(tmp_path, prefect_port=port)
    with pytest.raises(stack.StackError) as err:
        stack_options.check_ports(o)
    msg = str(err.value)
    assert f"port {port} on 127.0.0.1 (Prefect server) is already taken" in msg
    assert "--prefect-port" in msg and "MLOPS_PREFECT_PORT" in msg


def test_up_refuses_a_taken_port_before_starting_anything(tmp_path: Path, listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    res = CliRunner().invoke(cli_stack.app, ["up", "--state-dir", str(tmp_path / "state"), "--webhook-port", str(port),
                                             "--prefect-port", str(free_port()), "--mlflow-port", str(free_port()),
                                             "--serve-port", str(free_port())])
    assert res.exit_code == 2, res.output
    assert f"port {port} on 127.0.0.1 (webhook bridge) is already taken" in res.output
    assert "--webhook-port or MLOPS_WEBHOOK_PORT" in res.output
    assert not (tmp_path / "state" / "stack.json").exists()
    assert not (tmp_path / "state" / "logs").exists()


def test_free_ports_pass(tmp_path: Path) -> None:
    stack_options.check_ports(opts(tmp_path, prefect_port=free_port(), mlflow_port=free_port(),
                                   serve_port=free_port(), webhook_port=free_port()))


# ---- options ----------------------------------------------------------------------------------


def test_options_from_environment_and_overrides(tmp_path: Path) -> None:
    env = {"MLOPS_HOME": str(tmp_path / "h"), "MLOPS_PREFECT_PORT": "4999", "MLOPS_WEBHOOK_PORT": "4998",
           "MLOPS_ALERT_WEBHOOK_URL": "http://127.0.0.1:9/a", "MLOPS_MLFLOW_BASIC_AUTH": "1"}
    o = stack_options.StackOptions.from_env(environ=env, webhook_port=5001)
    assert o.state_dir == (tmp_path / "h").resolve()
    assert (o.prefect_port, o.webhook_port, o.mlflow_port, o.serve_port) == (4999, 5001, 5000, 8000)
    assert o.api_url == "http://127.0.0.1:4999/api" and o.alert_url == "http://127.0.0.1:9/a"
    assert o.mlflow_basic_auth and o.host == "127.0.0.1"
    assert o.config_path == REPO / "configs/default.yaml" and o.prefect_file == PREFECT_FILE


def test_a_bad_port_variable_is_one_sentence() -> None:
    with pytest.raises(stack.StackError, match="MLOPS_MLFLOW_PORT='five' is not a port number"):
        stack_options.StackOptions.from_env(environ={"MLOPS_MLFLOW_PORT": "five"})


def test_auth_settings_reach_the_clients(tmp_path: Path) -> None:
    o = stack_options.StackOptions.from_env(environ={"PREFECT_SERVER_API_AUTH_STRING": "admin:pw",
                                                     "PREFECT_API_URL": "http://elsewhere:1/api"}, state_dir=tmp_path)
    env = stack_options.base_env(o)
    assert env["PREFECT_API_AUTH_STRING"] == "admin:pw" and env["PREFECT_API_URL"] == o.api_url
    assert env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    assert stack_options.prefect_auth_header(env)["Authorization"].startswith("Basic ")
    with pytest.raises(stack.StackError, match="MLFLOW_TRACKING_USERNAME or MLFLOW_TRACKING_PASSWORD"):
        stack_options.base_env(stack_options.StackOptions.from_env(environ={}, state_dir=tmp_path,
                                                                   mlflow_basic_auth=True))


# ---- starting, stopping, the pid file ---------------------------------------------------------


def test_start_records_the_process_and_waits_for_its_health_check(tmp_path: Path) -> None:
    o = opts(tmp_path, timeout=20.0)
    ready = tmp_path / "ready"
    sup = stack.Supervisor(o)
    try:
        script = f"import pathlib, time; time.sleep(0.3); pathlib.Path({str(ready)!r}).touch(); time.sleep(60)"
        seconds = sup.start("model-server", [sys.executable, "-c", script], dict(sup.env), ready.exists).result()
        assert 0.2 < seconds < 20
        rec = stack_processes.read_state(o.state_dir).processes["model-server"]
        proc = psutil.Process(rec.pid)
        assert rec.alive() and abs(rec.create_time - proc.create_time()) < 0.01
        assert os.getsid(rec.pid) == rec.pid, "each stack process runs in its own session"
        assert rec.url == o.url("model-server") and Path(rec.log) == o.logs_dir / "model-server.log"
        assert stack.down(o.state_dir, grace=5) == ["model-server"]
        assert wait_for(lambda: gone(rec.pid)) and not stack_processes.pid_file(o.state_dir).exists()
    finally:
        sup.close()
        stack.down(o.state_dir, grace=1)


def test_a_process_that_dies_while_starting_fails_with_its_log(tmp_path: Path) -> None:
    o = opts(tmp_path, timeout=20.0)
    sup = stack.Supervisor(o)
    try:
        died = sup.start("mlflow", [sys.executable, "-c", "print('cannot open the store'); raise SystemExit(3)"],
                         dict(sup.env), lambda: False)
        with pytest.raises(stack.StackError, match=r"the MLflow server exited while starting(.|\n)*cannot open the store"):
            died.result()
        rec = stack_processes.read_state(o.state_dir).processes["mlflow"]
        assert not rec.alive()
        said: list[str] = []
        assert stack.down(o.state_dir, said.append) == []
        assert "stale" in said[-1] and not stack_processes.pid_file(o.state_dir).exists()
    finally:
        sup.close()


def test_a_process_that_never_answers_times_out_naming_it(tmp_path: Path) -> None:
    o = opts(tmp_path, timeout=0.5)
    sup = stack.Supervisor(o)
    try:
        slow = sup.start("webhook-bridge", [sys.executable, "-c", "import time; time.sleep(60)"], dict(sup.env),
                         lambda: False)
        with pytest.raises(stack.StackError, match="the webhook bridge was not healthy within 0 s"):
            slow.result()
    finally:
        sup.close()
        assert stack.down(o.state_dir, grace=5) == ["webhook-bridge"]


def test_down_with_nothing_running_says_so(tmp_path: Path) -> None:
    said: list[str] = []
    assert stack.down(tmp_path / "state", said.append) == []
    assert "nothing to stop" in said[0]
    res = CliRunner().invoke(cli_stack.app, ["down", "--state-dir", str(tmp_path / "state")])
    assert res.exit_code == 0 and "nothing to stop" in res.output
    res = CliRunner().invoke(cli_stack.app, ["stack-status", "--state-dir", str(tmp_path / "state")])
    assert res.exit_code == 1 and "not running" in res.output


def test_up_refuses_to_start_twice(tmp_path: Path) -> None:
    proc = sleeper()
    try:
        o = opts(tmp_path)
        write_state(o.state_dir, prefect=record(proc))
        with pytest.raises(stack.StackError, match=r"already running .*prefect \d+.*mlops down"):
            stack.up(o)
        assert proc.poll() is None  # refused, and nothing of the running stack was touched
        assert stack_processes.read_state(o.state_dir) is not None
    finally:
        kill(proc)


def test_a_stale_pid_file_is_cleared_and_a_reused_pid_is_not_ours(tmp_path: Path) -> None:
    proc = sleeper()
    try:
        rec = record(proc)
        assert rec.alive()
        stranger = replace(rec, create_time=rec.create_time + 60)
        assert not stranger.alive()  # same pid, another creation time: a different process
        state_dir = tmp_path / "state"
        write_state(state_dir, prefect=stranger)
        said: list[str] = []
        assert stack.down(state_dir, said.append) == []
        assert proc.poll() is None, "down must not signal a process it did not start"
        assert not stack_processes.pid_file(state_dir).exists() and "stale" in said[-1]
    finally:
        kill(proc)


def test_a_pid_file_from_before_psutil_is_still_read(tmp_path: Path) -> None:
    proc = sleeper()
    try:
        rec = record(proc)
        ticks_per_second = os.sysconf("SC_CLK_TCK")
        ticks = round((rec.create_time - psutil.boot_time()) * ticks_per_second)
        old = {"name": "prefect", "pid": proc.pid, "start_ticks": ticks, "cmd": ["sh"], "log": "l", "url": None,
               "started_at": "t"}
        state_dir = tmp_path / "state"
        state_dir.mkdir()
        for start_ticks, ours in ((ticks, True), (ticks + 60 * ticks_per_second, False), (None, True)):
            raw = {"state_dir": str(state_dir), "started_at": "t", "processes": {"prefect": {**old,
                                                                                             "start_ticks": start_ticks}}}
            stack_processes.pid_file(state_dir).write_text(json.dumps(raw))
            assert set(stack_processes.read_state(state_dir).running()) == ({"prefect"} if ours else set())
        assert stack.down(state_dir, grace=5) == ["prefect"]
        proc.wait(timeout=5)
    finally:
        kill(proc)


def test_down_stops_each_recorded_process_tree_and_forgets_it(tmp_path: Path) -> None:
    a, b = sleeper(), sleeper("sleep 60 & setsid sleep 61 & wait")  # b has a child in its own session
    bystander = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        ra, rb = record(a, "prefect"), record(b, "worker")
        family = [a.pid, b.pid, *family_of(a.pid), *family_of(b.pid)]
        assert len(family) == 6
        state_dir = tmp_path / "state"
        write_state(state_dir, prefect=ra, worker=rb)
        assert set(stack_processes.read_state(state_dir).running()) == {"prefect", "worker"}
        assert stack.down(state_dir, grace=5) == ["worker", "prefect"]
        for p in (a, b):
            p.wait(timeout=5)
        assert wait_for(lambda: all(gone(p) for p in family))
        assert bystander.poll() is None
        assert not stack_processes.pid_file(state_dir).exists()
    finally:
        kill(a, b, bystander)


def test_a_zombie_counts_as_stopped() -> None:
    proc = subprocess.Popen(["true"])
    rec = stack_processes.ProcessRecord(name="x", pid=proc.pid, create_time=psutil.Process(proc.pid).create_time(),
                                        cmd=[], log="")
    assert wait_for(lambda: psutil.Process(proc.pid).status() == psutil.STATUS_ZOMBIE)
    assert not rec.alive() and not stack_processes.is_flow_process(proc.pid)
    proc.wait()
    assert not rec.alive()  # and gone altogether


def test_a_flow_process_is_told_from_another_program() -> None:
    other = subprocess.Popen(["sleep", "60"])
    flow = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "prefect-flow-run"])
    try:
        assert wait_for(lambda: psutil.Process(flow.pid).cmdline()[-1:] == ["prefect-flow-run"])
        assert stack_processes.is_flow_process(flow.pid) and not stack_processes.is_flow_process(other.pid)
    finally:
        for p in (other, flow):
            p.kill()
            p.wait()
    assert not stack_processes.is_flow_process(flow.pid)


def test_the_stack_reads_processes_through_psutil_only() -> None:
    for module in (stack, stack_options, stack_processes):
        # a literal path under /proc (a module path such as "mlops/stack/processes.py" is fine)
        assert not re.search(r"""["']/proc(/|["'])""", inspect.getsource(module)), module.__name__


def test_state_round_trips_through_the_pid_file(tmp_path: Path) -> None:
    rec = stack_processes.ProcessRecord(name="prefect", pid=1234, create_time=1.7e9, cmd=["prefect", "server"],
                                        log="l", url="http://127.0.0.1:4200", started_at="now")
    st = stack_processes.StackState(state_dir=str(tmp_path), started_at="now", urls={"prefect": rec.url or ""},
                                    processes={"prefect": rec}, work_pool="mlops-local", deployments=["train"])
    stack_processes.write_state(st)
    assert stack_processes.read_state(tmp_path) == st
    stack_processes.pid_file(tmp_path).write_text("{not json")
    with pytest.raises(stack.StackError, match="is not valid"):
        stack_processes.read_state(tmp_path)


def test_logs_names_are_checked(tmp_path: Path) -> None:
    assert stack.log_file(tmp_path, "worker") == tmp_path.resolve() / "logs" / "worker.log"
    with pytest.raises(stack.StackError, match="no log named 'nope'"):
        stack.log_file(tmp_path, "nope")


def test_webhook_secrets_are_generated_once_private_and_the_environment_wins(tmp_path: Path) -> None:
    o = opts(tmp_path)
    first = stack_options.load_webhook_secrets(o)
    assert set(first) == {"MLOPS_WEBHOOK_DATA_VENDOR_SECRET", "MLOPS_WEBHOOK_LABELS_SECRET", "MLOPS_WEBHOOK_OPS_SECRET"}
    path = o.state_dir / stack_options.SECRETS_FILE
    assert path.stat().st_mode & 0o777 == 0o600
    assert stack_options.load_webhook_secrets(o) == first
    mine = stack_options.StackOptions.from_env(environ={"MLOPS_WEBHOOK_OPS_SECRET": "s3cret"}, state_dir=o.state_dir)
    assert stack_options.load_webhook_secrets(mine)["MLOPS_WEBHOOK_OPS_SECRET"] == "s3cret"


# ---- alerts -----------------------------------------------------------------------------------


def test_each_alert_kind_has_one_automation_on_the_flows_event_names() -> None:
    expected = {events.DRIFT_DETECTED, events.GATE_REJECTED, events.MODEL_PROMOTED, events.MODEL_ROLLED_BACK,
                "prefect.flow-run.*"}  # keyed on the state type (tests/unit/test_automations.py)
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


def test_secrets_stay_off_command_lines_and_out_of_reprs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = "postgresql://mlflow:db-Pw-9@db.internal:5432/mlflow"
    hook = "https://hooks.example.com/services/T0/B0/tok-123"
    o = stack_options.StackOptions.from_env(environ={"MLOPS_MLFLOW_BACKEND_STORE_URI": store,
                                                     "MLOPS_ALERT_WEBHOOK_URL": hook}, state_dir=tmp_path)
    assert "db-Pw-9" not in repr(o.settings) and "tok-123" not in repr(o.settings)
    started: dict[str, tuple[list[str], dict[str, str]]] = {}
    sup = stack.Supervisor(o)
    monkeypatch.setattr(sup, "start", lambda name, cmd, env, probe: started.setdefault(name, (cmd, env)))
    monkeypatch.setattr(sup, "run_step", lambda name, cmd, env, timeout: started.setdefault(name, (cmd, env)) and "")
    sup.launch_mlflow()
    sup.configure_automations()
    sup.close()
    cmd, env = started["mlflow"]
    assert store not in shlex.join(cmd) and env["MLFLOW_BACKEND_STORE_URI"] == store
    cmd, env = started["automations"]
    assert hook not in shlex.join(cmd) and env["MLOPS_ALERT_WEBHOOK_URL"] == hook
    assert alerts._where(hook) == "https://hooks.example.com/..."


def test_a_bad_variable_is_one_sentence_and_a_secret_never_shows() -> None:
    with pytest.raises(stack.StackError, match=r"MLOPS_MLFLOW_WORKERS='0' is not valid"):
        stack_options.StackOptions.from_env(environ={"MLOPS_MLFLOW_WORKERS": "0"})
    settings = get_settings({"MLOPS_SERVING_TOKEN": "s3cret", "MLOPS_HOME": "~/somewhere"})
    assert "s3cret" not in repr(settings) and settings.serving_token.get_secret_value() == "s3cret"
    assert settings.state_dir == Path("~/somewhere").expanduser().resolve()
    assert get_settings({"MLOPS_HOME": ""}).state_dir == Path(".mlops").resolve()
