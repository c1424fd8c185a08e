"""The state folder holds stores, logs, keys and the prediction log: it is its owner's only (issue 21: it was
755 and its databases and logs 644)."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from mlops.core.settings import SERVER_FOLDER, configure_environment, get_settings, private_dir, private_file


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_state_folder_and_its_stores_are_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = tmp_path / "fresh" / ".mlops"
    for name in ("MLOPS_HOME", "MLFLOW_TRACKING_URI", "PREFECT_HOME"):  # configure_environment sets them
        monkeypatch.setenv(name, "placeholder")
        monkeypatch.delenv(name)
    monkeypatch.setenv("MLOPS_HOME", str(state))
    configure_environment(get_settings())
    assert mode(state) == 0o700 and mode(state / "prefect") == 0o700
    assert mode(state / "mlflow.db") == 0o600

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{state / 'mlflow.db'}")
    try:
        mlflow.MlflowClient().search_experiments(max_results=1)  # MLflow builds its store in the file
    finally:
        mlflow.set_tracking_uri(None)
    assert (state / "mlflow.db").stat().st_size > 0 and mode(state / "mlflow.db") == 0o600


def test_an_open_state_folder_is_tightened(tmp_path: Path) -> None:
    folder, db = tmp_path / "open", tmp_path / "open" / "x.db"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    db.write_text("")
    db.chmod(0o644)
    private_dir(folder)
    private_file(db)
    assert mode(folder) == 0o700 and mode(db) == 0o600


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a folder to another user")
def test_a_state_folder_holding_the_postgres_cluster_keeps_letting_its_user_through(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The production profile's PostgreSQL runs as its own user from state/postgres: a process that prepares
    its environment (the model server, the bridge, started beside it) must not shut that user out of the state
    folder, nor open it to listing; without the cluster the folder is tightened to 700 as before."""
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o755)
    monkeypatch.setenv("MLOPS_HOME", str(state))
    for name in ("MLFLOW_TRACKING_URI", "PREFECT_HOME"):
        monkeypatch.delenv(name, raising=False)
    configure_environment(get_settings())
    assert mode(state) == 0o700

    state.chmod(0o711)
    (state / SERVER_FOLDER).mkdir(mode=0o700)
    os.chown(state / SERVER_FOLDER, 65534, 65534)  # nobody: a user that is not us
    configure_environment(get_settings())
    assert mode(state) == 0o711
    state.chmod(0o755)  # read for others is still taken away
    configure_environment(get_settings())
    assert mode(state) == 0o711
    state.chmod(0o700)  # and traversal is kept, never added
    configure_environment(get_settings())
    assert mode(state) == 0o700


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a folder to another user")
def test_the_first_gate_key_leaves_the_postgres_user_a_way_through_the_state_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first training on the production profile writes the gate key into the state folder; writing it
    tightened the folder to 700, and PostgreSQL's checkpointer, reopening global/pg_control by its full path
    minutes later, could not and the server stopped (a migration after it hung on MLflow's 503s)."""
    from mlops.registry.verdict import KEY_FILE, gate_key

    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o711)
    (state / SERVER_FOLDER).mkdir(mode=0o700)
    os.chown(state / SERVER_FOLDER, 65534, 65534)
    monkeypatch.setenv("MLOPS_HOME", str(state))
    monkeypatch.delenv("MLOPS_GATE_KEY", raising=False)
    assert gate_key(create=True) and (state / KEY_FILE).is_file()
    assert mode(state) == 0o711 and mode(state / KEY_FILE) == 0o600


def test_the_bridge_store_and_the_stack_logs_are_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlops.stack import options as stack_options
    from mlops.stack import supervisor
    from mlops.webhooks.store import DeliveryStore

    store = DeliveryStore(tmp_path / "bridge" / "deliveries.sqlite3")
    store.close()
    assert mode(tmp_path / "bridge" / "deliveries.sqlite3") == 0o600

    seen: dict[str, Any] = {}

    class FakePopen:
        pid = 0

        def __init__(self, cmd: list[str], **kw: Any) -> None:
            seen.update(kw)

    monkeypatch.setattr(supervisor.subprocess, "Popen", FakePopen)
    monkeypatch.setattr(supervisor, "write_state", lambda state: None)
    sup = supervisor.Supervisor(stack_options.StackOptions.from_env(environ={}, state_dir=tmp_path / "state"))
    monkeypatch.setattr(sup, "_watchers", type("W", (), {"submit": staticmethod(lambda *a, **k: None),
                                                         "shutdown": staticmethod(lambda **k: None)})())
    sup.start("mlflow", ["true"], {}, lambda: True)
    sup.close()
    assert seen["umask"] == 0o077  # what the servers create (databases, artifacts) is private
    assert mode(sup.log_path("mlflow")) == 0o600
