"""What deploys (deployments/): the plan read from prefect.yaml for each profile, its variables as
`mlops up` sets them and `mlops deploy-env` prints them, the file as Prefect validates and renders it,
and the plan applied (work pools, `prefect deploy`, the check) against a recorded Prefect."""

from __future__ import annotations

import inspect
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from deployments.apply import apply_plan
from deployments.plan import DeploymentError, DeployPlan, deploy_variables, plan_deployments, worker_python
from mlops.cli import stack as cli_stack
from mlops.core import events
from mlops.stack import options as stack_options
from mlops.stack import supervisor as stack
from tests.conftest import REPO, write_config

PREFECT_FILE = REPO / "prefect.yaml"


class RecordedPrefect:
    """A Prefect server and CLI that record what they are asked: `pools` exist, `deploy` drops `lost`."""

    def __init__(self, pools: set[str] | None = None, lost: set[str] | None = None) -> None:
        self.pools, self.lost = set(pools or ()), set(lost or ())
        self.commands: list[tuple[list[str], dict[str, str]]] = []

    def run(self, cmd: list[str], env: dict[str, str] | None = None) -> str:
        self.commands.append((cmd, env or {}))
        if cmd[2:4] == ["work-pool", "create"]:
            self.pools.add(cmd[4])
        return ""

    def api(self, method: str, path: str, json: dict[str, Any] | None = None) -> Any:
        if method == "GET" and path.startswith("/work_pools/"):
            return {"name": path.rsplit("/", 1)[1]} if path.rsplit("/", 1)[1] in self.pools else None
        assert (method, path) == ("POST", "/deployments/filter") and json is not None
        return [{"name": n} for n in json["deployments"]["name"]["any_"] if n not in self.lost]


def rendered(variables: dict[str, str], monkeypatch: pytest.MonkeyPatch, path: Path = PREFECT_FILE) -> dict[str, Any]:
    """The deployments file as `prefect deploy` sees it with these variables in its environment."""
    from prefect.utilities.templating import apply_values

    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    return apply_values(yaml.safe_load(path.read_text()), dict(os.environ), remove_notset=False)


def deploy_env(*args: str) -> dict[str, str]:
    """The variables `mlops deploy-env` prints (as a production user would eval them)."""
    res = CliRunner().invoke(cli_stack.app, ["deploy-env", *args])
    assert res.exit_code == 0, res.output
    return dict(shlex.split(line)[1].split("=", 1) for line in res.output.splitlines())


def schedule_active(schedule: dict[str, Any]) -> bool:
    """Whether Prefect deploys this schedule active (its own conversion of the YAML entry)."""
    from prefect.cli.deploy._schedules import _schedule_config_to_deployment_schedule
    from prefect.client.schemas.actions import DeploymentScheduleCreate

    return DeploymentScheduleCreate(**_schedule_config_to_deployment_schedule(schedule)).active


def test_mlops_up_deploys_the_one_file_with_its_config_and_leaves_out_missing_flows(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = tmp_path / "project"
    (project / "flows").mkdir(parents=True)
    for name in ("train.py", "promote.py", "monitor.py"):
        (project / "flows" / name).write_text("")
    cfg = write_config(tmp_path, monitoring={"schedule_cron": "5 * * * *"})
    o = stack_options.StackOptions.from_env(environ={}, state_dir=tmp_path / "state", project_dir=project,
                                            config_path=cfg, prefect_file=PREFECT_FILE, schedules=False)
    o.state_dir.mkdir()  # `mlops up` has made it by the time it deploys
    said: list[str] = []
    sup, prefect = stack.Supervisor(o, said.append), RecordedPrefect()
    monkeypatch.setattr(sup, "run_step", lambda name, cmd, env, timeout: prefect.run(cmd, env))
    monkeypatch.setattr(sup, "api", prefect.api)
    try:
        sup.deploy("5 * * * *")
    finally:
        sup.close()
    assert said == ["  skipped deployment score (flows/score.py not found)"]
    (pool_cmd, _), (deploy_cmd, env) = prefect.commands
    assert pool_cmd[1:] == ["--no-prompt", "work-pool", "create", "mlops-local", "--type", "process"]
    assert deploy_cmd[1:5] == ["--no-prompt", "deploy", "--prefect-file", str(PREFECT_FILE)]
    assert deploy_cmd[5::2] == ["--name"] * 5
    assert deploy_cmd[6::2] == sup.state.deployments == ["train", "retrain", "monitor", "promote", "rollback"]
    assert sup.state.work_pool == "mlops-local"
    raw = rendered({k: v for k, v in env.items() if k.startswith("MLOPS_")}, monkeypatch)
    assert raw["pull"][0]["prefect.deployments.steps.set_working_directory"]["directory"] == str(project)
    deps = {d["name"]: d for d in raw["deployments"]}
    assert {d["work_pool"]["name"] for d in deps.values()} == {"mlops-local"}
    # each run is the engine started by the worker with the stack's own interpreter (no workspace supervisor)
    assert {d["work_pool"]["job_variables"]["command"] for d in deps.values()} == {f"{sys.executable} -m prefect.engine"}
    assert all("local" in d["tags"] for d in deps.values())
    assert deps["train"]["parameters"]["config_path"] == str(cfg)
    assert deps["promote"]["parameters"]["config_path"] == str(cfg)
    assert deps["rollback"]["parameters"]["config_path"] == str(cfg)
    monitor = deps["monitor"]["schedules"][0]
    assert (monitor["cron"], monitor["timezone"]) == ("5 * * * *", "UTC") and schedule_active(monitor) is False
    # event templates survive rendering untouched
    assert deps["train"]["triggers"][0]["parameters"]["source_path"] == (
        "{{ (event.payload.path if event.payload.path is string else '') }}")
    assert "{{ $" not in json.dumps(raw)


def test_a_plan_applied_twice_creates_its_pool_once_and_names_a_deployment_the_server_lacks(tmp_path: Path) -> None:
    variables = deploy_variables(tmp_path / "c.yaml", "0 * * * *", REPO, "production")
    plan = plan_deployments(PREFECT_FILE, REPO, variables, {})
    assert plan.work_pools == ["mlops-production"] and len(plan.names) == 6 and not plan.skipped
    prefect = RecordedPrefect(pools={"mlops-production"})
    apply_plan(plan, "prefect", prefect.run, prefect.api, tmp_path / "deploy.log")
    assert [cmd[2] for cmd, _ in prefect.commands] == ["deploy"]  # the pool was there: not made again
    prefect = RecordedPrefect(lost={"score", "monitor"})
    with pytest.raises(DeploymentError, match=r"did not create deployment\(s\) monitor, score; see .*deploy\.log"):
        apply_plan(plan, "prefect", prefect.run, prefect.api, tmp_path / "deploy.log")
    assert prefect.pools == {"mlops-production"}
    empty = DeployPlan(PREFECT_FILE, [], ["train (flows/train.py not found)"], ["mlops-local"], variables)
    with pytest.raises(DeploymentError, match="no deployment in .*prefect.yaml has its flow file"):
        apply_plan(empty, "prefect", prefect.run, prefect.api, tmp_path / "deploy.log")


def test_production_renders_the_same_file_from_its_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = write_config(tmp_path, monitoring={"schedule_cron": "0 * * * *"})
    variables = deploy_env("--config", str(cfg), "--project-dir", "/opt/mlops/current")
    assert variables["MLOPS_DEPLOY_PROFILE"] == "production" and variables["MLOPS_MONITOR_CRON"] == "0 * * * *"
    raw = rendered(variables, monkeypatch)
    assert raw["pull"][0]["prefect.deployments.steps.set_working_directory"]["directory"] == "/opt/mlops/current"
    deps = {d["name"]: d for d in raw["deployments"]}
    assert {d["work_pool"]["name"] for d in deps.values()} == {"mlops-production"}
    # the hosts' interpreter: this checkout's, moved under the project folder the hosts run
    python = Path("/opt/mlops/current") / Path(sys.executable).relative_to(REPO)
    assert {d["work_pool"]["job_variables"]["command"] for d in deps.values()} == {f"{python} -m prefect.engine"}
    assert all(d["tags"][-1] == "production" for d in deps.values())
    assert {d["parameters"]["config_path"] for d in deps.values()} == {str(cfg)}
    assert deps["monitor"]["schedules"][0]["cron"] == "0 * * * *" and schedule_active(deps["monitor"]["schedules"][0])
    assert "{{ $" not in json.dumps(raw)
    # nothing environment-specific is written into the file itself
    text = PREFECT_FILE.read_text()
    assert "churn-classifier" not in text and "model_name" not in text and "mlops-local" not in text


def test_a_variable_nobody_sets_is_named_before_deploying(tmp_path: Path) -> None:
    bad = tmp_path / "prefect.yaml"
    bad.write_text(PREFECT_FILE.read_text().replace("timezone: UTC", 'timezone: "{{ $MLOPS_NOT_SET_ANYWHERE }}"'))
    variables = deploy_variables("c.yaml", "0 * * * *", REPO)
    with pytest.raises(DeploymentError, match=r"\$MLOPS_NOT_SET_ANYWHERE, which is not set"):
        plan_deployments(bad, REPO, variables, {})
    assert "monitor" in plan_deployments(bad, REPO, variables, {"MLOPS_NOT_SET_ANYWHERE": "UTC"}).names
    # `mlops up` says it as a stack error (one sentence from the CLI), before running anything
    o = stack_options.StackOptions.from_env(environ={}, state_dir=tmp_path / "state", prefect_file=bad)
    sup = stack.Supervisor(o)
    try:
        with pytest.raises(stack.StackError, match=r"\$MLOPS_NOT_SET_ANYWHERE, which is not set"):
            sup.deploy("0 * * * *")
    finally:
        sup.close()
    with pytest.raises(DeploymentError, match="deployment profile 'Prod' is not a valid name"):
        deploy_variables("c.yaml", "0 * * * *", "/p", "Prod")
    res = CliRunner().invoke(cli_stack.app, ["deploy-env", "--config", str(write_config(tmp_path)), "--profile", "Prod"])
    assert res.exit_code == 2 and "deployment profile 'Prod' is not a valid name" in res.output
    assert "Traceback" not in res.output


@pytest.mark.parametrize("profile", ["local", "production"])
def test_the_deployments_file_is_valid_for_prefect_and_matches_the_flows(
        profile: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.cli.deploy._models import PrefectYamlModel
    from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger

    PrefectYamlModel.model_validate(yaml.safe_load(PREFECT_FILE.read_text()))  # as written, placeholders and all
    cfg = write_config(tmp_path)
    raw = rendered(deploy_variables(cfg, "*/30 * * * *", REPO, profile), monkeypatch)
    model = PrefectYamlModel.model_validate(raw)
    deps = {d.name: d for d in model.deployments}
    assert set(deps) == {"train", "retrain", "monitor", "score", "promote", "rollback"}
    pools = {d.work_pool.name for d in deps.values()}
    assert pools == {f"mlops-{profile}"}
    for name, dep in deps.items():
        assert dep.enforce_parameter_schema is True, name
        module, func = dep.entrypoint.split(":")
        fn = _flow_function(module, func)
        accepted = set(inspect.signature(fn).parameters)
        assert set(dep.parameters) <= accepted, (name, dep.parameters)
        assert "config_path" in dep.parameters, name  # every flow takes the use-case config
        for spec in dep.triggers or []:
            trig = DeploymentEventTrigger.model_validate(spec)
            assert trig.enabled and set(trig.parameters or {}) <= accepted, (name, spec)
    # files are trained on in turn, never cancelled; retrain runs once per burst
    for name, strategy in (("train", "ENQUEUE"), ("retrain", "CANCEL_NEW")):
        limit = deps[name].concurrency_limit
        assert (limit.limit, limit.collision_strategy) == (1, strategy)
    assert {e for t in deps["train"].triggers for e in t["expect"]} == {events.DATA_ARRIVED}
    assert {e for t in deps["retrain"].triggers for e in t["expect"]} == {events.RETRAIN_REQUESTED}
    assert deps["score"].triggers[0]["match"] == {"prefect.resource.id": "mlops.scoring.*"}
    assert deps["monitor"].schedules and not deps["promote"].triggers and not deps["rollback"].schedules


def test_the_monitor_cron_comes_from_the_config_only(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = yaml.safe_load((REPO / "configs/default.yaml").read_text())
    cron = cfg["monitoring"]["schedule_cron"]
    raw = yaml.safe_load(PREFECT_FILE.read_text())
    monitor = next(d for d in raw["deployments"] if d["name"] == "monitor")
    assert monitor["schedules"][0]["cron"] == "{{ $MLOPS_MONITOR_CRON }}"  # no cron of its own
    assert deploy_env("--config", str(REPO / "configs/default.yaml"))["MLOPS_MONITOR_CRON"] == cron
    assert f'"{cron}" for configs/default.yaml' in PREFECT_FILE.read_text()  # the documented default is right


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
    for bad in ({"path": None}, {}, {"path": ""}, {"path": 123}, {"path": ["/a.csv"]}):  # the flow refuses ""
        got = _render(data, {"event": "mlops.data.arrived", "resource": {"prefect.resource.id": "mlops.dataset.x"},
                             "payload": {**bad, "reason": "r"}})
        assert got == {"source_path": "", "reason": "r"}, bad
    retrain = deps["retrain"]["triggers"][0]["parameters"]
    monitor_event = {"event": "mlops.retrain.requested", "resource": {"prefect.resource.id": "mlops.model.churn"},
                     "payload": {"training_file": "/s/train.parquet", "triggers": ["drift 2 windows", "quality"]}}
    assert _render(retrain, monitor_event) == {"source_path": "/s/train.parquet",
                                               "reason": "retrain requested: drift 2 windows; quality"}
    ops_event = {"event": "mlops.retrain.requested", "resource": {"prefect.resource.id": "mlops.dataset.churn"},
                 "payload": {"reason": "schema fix deployed", "requested_by": "alice"}}
    assert _render(retrain, ops_event) == {"source_path": None, "reason": "schema fix deployed"}


def test_the_hosts_interpreter_can_be_named_and_one_outside_the_checkout_is_kept(tmp_path: Path,
                                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = write_config(tmp_path)
    named = deploy_env("--config", str(cfg), "--project-dir", "/srv/mlops", "--python", "/srv/py 3.11/bin/python")
    raw = rendered(named, monkeypatch)
    command = {d["work_pool"]["job_variables"]["command"] for d in raw["deployments"]}
    assert command == {"'/srv/py 3.11/bin/python' -m prefect.engine"}  # one word of the command line, as Prefect splits it
    assert shlex.split(command.pop())[0] == "/srv/py 3.11/bin/python"
    assert worker_python("/srv/mlops", tmp_path / "elsewhere") == Path(sys.executable)
