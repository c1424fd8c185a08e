"""The production profile's options and processes: its own PostgreSQL (found, initialised, started,
stopped), Prefect and MLflow on it by environment (never a password on a command line), two workers,
and external back ends by URL instead of the local ones."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deployments.plan import deploy_variables, plan_deployments
from mlops.stack import options as stack_options
from mlops.stack import supervisor as stack
from mlops.stack.postgres import PASSWORD_FILE, SYSTEM_USER, LocalPostgres, find_bin_dir
from mlops.stack.processes import ProcessRecord, live_process, stop_postgres
from tests.support.loopback import free_port
from tests.support.postgres import require_postgresql


def opts(tmp_path: Path, environ: dict[str, str] | None = None, **kw: Any) -> stack_options.StackOptions:
    return stack_options.StackOptions.from_env(environ=environ or {}, state_dir=tmp_path / "state", **kw)


def captured(sup: stack.Supervisor, monkeypatch: pytest.MonkeyPatch) -> dict[str, tuple[list[str], dict[str, str]]]:
    started: dict[str, tuple[list[str], dict[str, str]]] = {}
    monkeypatch.setattr(sup, "start", lambda name, cmd, env, probe, **kw: started.setdefault(name, (cmd, env)))
    monkeypatch.setattr(sup, "recover_orphaned_runs", lambda: [])
    return started


def test_the_local_profile_is_unchanged_and_production_adds_postgres_and_a_second_worker(tmp_path: Path) -> None:
    local = opts(tmp_path)
    assert local.profile == "local" and local.processes == stack_options.COMPONENTS and not local.needs_postgres
    prod = opts(tmp_path, profile="production")
    assert prod.processes == ("postgres", "prefect", "mlflow", "worker", "worker-2", "model-server", "webhook-bridge")
    assert opts(tmp_path, profile="production", workers=3).worker_names == ("worker", "worker-2", "worker-3")
    env = {"MLOPS_STACK_PROFILE": "production", "MLOPS_PG_PORT": "6543"}
    assert (opts(tmp_path, env).profile, opts(tmp_path, env).pg_port) == ("production", 6543)
    with pytest.raises(stack_options.StackError, match="unknown profile 'prod'; choose local or production"):
        opts(tmp_path, profile="prod")
    with pytest.raises(stack_options.StackError, match="MLOPS_PG_PORT='x' is not a whole number"):
        opts(tmp_path, {"MLOPS_PG_PORT": "x"})
    recorded = stack_options.StackOptions.from_record(tmp_path / "state", prod.record(), environ={})
    assert (recorded.profile, recorded.pg_port, recorded.processes) == ("production", prod.pg_port, prod.processes)


def test_prefect_and_mlflow_get_their_databases_by_environment_and_the_deployments_their_pool(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    o = opts(tmp_path, profile="production", pg_port=6111)
    sup = stack.Supervisor(o)
    sup.state.work_pool = "mlops-production"
    started = captured(sup, monkeypatch)
    for launch in ("launch_prefect", "launch_mlflow"):
        getattr(sup, launch)()
    sup.launch_worker("worker")
    sup.launch_worker("worker-2")
    sup.close()
    password = (o.state_dir / PASSWORD_FILE).read_text().strip()
    assert (o.state_dir / PASSWORD_FILE).stat().st_mode & 0o777 == 0o600 and len(password) == 64
    prefect_cmd, prefect_env = started["prefect"]
    assert prefect_env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] == \
        f"postgresql+asyncpg://mlops:{password}@127.0.0.1:6111/prefect"
    assert "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_FLUSH_INTERVAL" not in prefect_env  # a SQLite-only workaround
    # a run queued behind the training's concurrency slot asks again after 3 s, not Prefect's 30 s
    assert prefect_env["PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS"] == "3"
    # the worker lets a queued run rest between proposals (each rejected one is a write), and the server's
    # automations retry a busy database for minutes before a webhook's run-deployment action fails
    for worker in ("worker", "worker-2"):
        assert float(started[worker][1]["PREFECT_WORKER_PREFETCH_SECONDS"]) < \
            float(prefect_env["PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS"])
    assert prefect_env["PREFECT_CLIENT_MAX_RETRIES"] == "7"
    mlflow_cmd, mlflow_env = started["mlflow"]
    assert mlflow_env["MLFLOW_BACKEND_STORE_URI"] == f"postgresql://mlops:{password}@127.0.0.1:6111/mlflow"
    assert "--serve-artifacts" in mlflow_cmd and mlflow_cmd[mlflow_cmd.index("--default-artifact-root") + 1] == \
        "mlflow-artifacts:/"
    assert mlflow_cmd[mlflow_cmd.index("--artifacts-destination") + 1] == str(o.state_dir / "mlartifacts")
    names = [cmd[cmd.index("--name") + 1] for cmd, _ in (started["worker"], started["worker-2"])]
    assert names[1] == names[0] + "-2" and all(started[w][0][started[w][0].index("--pool") + 1] == "mlops-production"
                                               for w in ("worker", "worker-2"))
    for cmd, env in started.values():
        assert password not in " ".join(cmd)
        assert env["MLOPS_ARTIFACT_ROOT"] == "mlflow-artifacts:/"
    variables = deploy_variables(o.config_path, "0 * * * *", o.project_dir, o.profile)
    plan = plan_deployments(o.prefect_file, o.project_dir, variables, o.environ)
    assert plan.work_pools == ["mlops-production"] and plan.variables["MLOPS_DEPLOY_PROFILE"] == "production"


def test_external_back_ends_by_url_replace_the_local_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"PREFECT_SERVER_DATABASE_CONNECTION_URL": "postgresql+asyncpg://p:secret-1@db.internal:5432/prefect",
           "MLOPS_MLFLOW_BACKEND_STORE_URI": "postgresql://m:secret-2@db.internal:5432/mlflow"}
    o = opts(tmp_path, env, profile="production")
    assert not o.needs_postgres and "postgres" not in o.processes
    sup = stack.Supervisor(o)
    started = captured(sup, monkeypatch)
    sup.launch_prefect()
    sup.launch_mlflow()
    sup.close()
    assert started["prefect"][1]["PREFECT_SERVER_DATABASE_CONNECTION_URL"].endswith("@db.internal:5432/prefect")
    assert started["prefect"][1]["PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS"] == "3"
    assert started["mlflow"][1]["MLFLOW_BACKEND_STORE_URI"].endswith("@db.internal:5432/mlflow")
    assert not (o.state_dir / PASSWORD_FILE).exists()

    remote = opts(tmp_path, {**env, "MLOPS_MLFLOW_TRACKING_URL": "https://mlflow.internal/"}, profile="production")
    assert "mlflow" not in remote.processes and remote.mlflow_url == "https://mlflow.internal"
    assert stack_options.base_env(remote)["MLFLOW_TRACKING_URI"] == "https://mlflow.internal"
    # only the production profile reads it: the local stack keeps its own MLflow
    local = opts(tmp_path, {"MLOPS_MLFLOW_TRACKING_URL": "https://mlflow.internal/"})
    assert "mlflow" in local.processes and local.mlflow_url == local.url("mlflow")


def test_missing_postgresql_is_one_sentence_naming_the_package(tmp_path: Path) -> None:
    with pytest.raises(stack_options.StackError, match=r"\(initdb, postgres\) were not found in MLOPS_PG_BIN="
                                                       r".*apt-get install -y postgresql"):
        find_bin_dir({"MLOPS_PG_BIN": str(tmp_path)})


@pytest.fixture
def open_folder() -> Iterator[Path]:
    """A folder the server's system user may enter (pytest's own temporary root is private to root)."""
    folder = Path(tempfile.mkdtemp(prefix="mlops-pg-test-"))
    folder.chmod(0o711)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.process
def test_the_cluster_is_made_once_served_on_loopback_with_its_databases_and_stopped_cleanly(
        open_folder: Path) -> None:
    require_postgresql()
    o = opts(open_folder, profile="production", pg_port=free_port(), timeout=60.0)
    sup = stack.Supervisor(o)
    assert sup.pg is not None
    try:
        sup.launch_postgres().result()
        sup.create_databases()
        rec = sup.state.processes["postgres"]
        assert rec.url == f"postgresql://127.0.0.1:{o.pg_port}" and "password" not in " ".join(rec.cmd)
        proc = live_process(rec.pid, rec.create_time)
        assert proc is not None and proc.username() == (SYSTEM_USER if os.geteuid() == 0 else proc.username())
        with sup.pg.connect() as conn:
            names = {r[0] for r in conn.execute("SELECT datname FROM pg_database")}
            assert {"prefect", "mlflow"} <= names
            assert conn.execute("SHOW listen_addresses").fetchone()[0] == "127.0.0.1"
        assert (sup.pg.data_dir.stat().st_mode & 0o777) == 0o700
        assert sup.pg.initialise() is False and sup.pg.ensure_databases() == []  # made once
        import psycopg

        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(host="127.0.0.1", port=o.pg_port, user="mlops", password="wrong", dbname="postgres")
    finally:
        sup.close()
        rec = sup.state.processes.get("postgres")
        if rec is not None:
            assert stop_postgres(rec, grace=30.0)
    assert "database system is shut down" in Path(rec.log).read_text()


@pytest.mark.process
@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs PostgreSQL as another user")
def test_a_state_folder_the_server_user_cannot_reach_is_one_sentence(tmp_path: Path) -> None:
    require_postgresql()
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    os.chmod(private, 0o700)
    pg = LocalPostgres(private / "state", free_port())
    with pytest.raises(stack_options.StackError, match=f"runs as the system user {SYSTEM_USER}.*cannot reach"):
        pg.initialise()


def test_stop_postgres_on_a_gone_process_says_so() -> None:
    rec = ProcessRecord(name="postgres", pid=2**22 - 3, create_time=1.0, cmd=[], log="/dev/null")
    assert stop_postgres(rec, grace=0.1) is False


def test_a_worker_limit_is_passed_to_every_worker_and_none_by_default(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    for environ, expected in (({}, None), ({"MLOPS_WORKER_LIMIT": "5"}, "5")):
        sup = stack.Supervisor(opts(tmp_path, environ, profile="production"))
        sup.state.work_pool = "mlops-production"
        started = captured(sup, monkeypatch)
        sup.launch_worker("worker")
        sup.launch_worker("worker-2")
        sup.close()
        for name in ("worker", "worker-2"):
            cmd = started[name][0]
            assert (cmd[cmd.index("--limit") + 1] if "--limit" in cmd else None) == expected, cmd
    with pytest.raises(stack_options.StackError, match="MLOPS_WORKER_LIMIT='0' is not valid"):
        opts(tmp_path, {"MLOPS_WORKER_LIMIT": "0"})
