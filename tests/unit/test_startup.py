"""The start-up helpers in mlops.core.startup: what `mlops --help` loads, preloading, native thread counts,
the Prefect database template, free loopback ports."""

from __future__ import annotations

import contextlib
import gc
import importlib.util
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from mlops.core import startup

HEAVY = ("pandas", "numpy", "pyarrow", "mlflow", "prefect", "sklearn", "pydantic", "yaml", "great_expectations",
         "httpx", "socket", "urllib.request")


def test_mlops_help_answers_without_loading_a_heavy_library() -> None:
    code = ("import io, json, sys, contextlib\n"
            "sys.argv = ['mlops', '--help']\n"
            "from mlops.cli.main import main\n"
            "out = io.StringIO()\n"
            "try:\n"
            "    with contextlib.redirect_stdout(out):\n"
            "        main()\n"
            "except SystemExit as exc:\n"
            "    code = exc.code\n"
            "print(json.dumps({'code': code, 'help': out.getvalue(), 'modules': sorted(sys.modules)}))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["code"] == 0 and "Usage" in seen["help"] and "train" in seen["help"]
    loaded = [m for m in HEAVY if m in seen["modules"]]
    assert not loaded, f"`mlops --help` loaded {loaded}"


def test_promote_and_rollback_load_no_training_code() -> None:
    """A promotion or rollback moves an alias: its flow module imports neither the search nor scikit-learn."""
    code = "import json, sys\nimport flows.promote\nprint(json.dumps(sorted(sys.modules)))\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    modules = set(json.loads(done.stdout.strip().splitlines()[-1]))
    assert "prefect" in modules and "mlops.registry.versions" in modules  # the flow and the registry it moves
    loaded = sorted(m for m in modules if m in ("sklearn", "mlops.training.tuning") or m.startswith("sklearn."))
    assert not loaded, f"flows.promote loaded {loaded[:5]}"


def test_preload_imports_the_named_modules_with_the_collector_off_and_freezes_them() -> None:
    sys.modules.pop("colorsys", None)
    gc.enable()
    before = gc.get_freeze_count()
    try:
        startup.preload("colorsys")
        assert "colorsys" in sys.modules
        assert gc.isenabled() and gc.get_freeze_count() > before
        with pytest.raises(ModuleNotFoundError):
            startup.preload("mlops.no_such_module")
        assert gc.isenabled()  # a failed import leaves collection on
    finally:
        gc.unfreeze()


@pytest.mark.parametrize("name", sorted({*startup.TRAINING, *startup.MONITORING, *startup.SERVING_STACK}))
def test_every_preloaded_module_exists(name: str) -> None:
    assert importlib.util.find_spec(name) is not None, f"{name} is in a preload set but cannot be found"


def test_one_native_thread_sets_one_thread_unless_the_environment_says_otherwise(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    for var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(var, raising=False)
    startup.one_native_thread(("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"))
    assert os.environ["OMP_NUM_THREADS"] == "4"
    assert os.environ["OPENBLAS_NUM_THREADS"] == "1"
    assert "MKL_NUM_THREADS" not in os.environ
    startup.one_native_thread()
    assert os.environ["MKL_NUM_THREADS"] == "1"


def _template_here(monkeypatch: pytest.MonkeyPatch, cache: Path) -> Path:
    """A stand-in template in a cache of the test's own (the real one takes a Prefect migration to make)."""
    from importlib.metadata import version

    monkeypatch.setenv("MLOPS_CACHE_DIR", str(cache))
    template = startup.cache_dir() / f"prefect-{version('prefect')}.db"
    template.parent.mkdir(parents=True)
    with contextlib.closing(sqlite3.connect(template)) as con, con:
        con.execute("CREATE TABLE alembic_version (version_num TEXT)")
        con.execute("INSERT INTO alembic_version VALUES ('head')")
    return template


def test_a_new_sqlite_database_is_seeded_and_an_existing_one_never_touched(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    template = _template_here(monkeypatch, tmp_path / "cache")
    db = tmp_path / "state" / "prefect" / "prefect.db"
    url = startup.SQLITE_URL_PREFIX + str(db)
    assert startup.seed_prefect_database(url)
    assert db.read_bytes() == template.read_bytes() and not list(db.parent.glob(".*seeding"))
    db.write_bytes(b"the user's database")
    assert not startup.seed_prefect_database(url)
    assert db.read_bytes() == b"the user's database"


@pytest.mark.parametrize("url", ["postgresql+asyncpg://mlops@127.0.0.1:5432/prefect", "sqlite+aiosqlite:///:memory:",
                                 "sqlite+aiosqlite:///"])
def test_only_an_sqlite_file_is_seeded(url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _template_here(monkeypatch, tmp_path / "cache")
    assert startup.sqlite_path(url) is None
    assert not startup.seed_prefect_database(url)


def test_a_cache_that_cannot_hold_the_template_leaves_the_migration_to_prefect(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "not-a-folder").write_text("")
    monkeypatch.setenv("MLOPS_CACHE_DIR", str(tmp_path / "not-a-folder" / "cache"))
    db = tmp_path / "prefect.db"
    assert startup.prefect_database_template() is None
    assert not startup.seed_prefect_database(startup.SQLITE_URL_PREFIX + str(db)) and not db.exists()


# ---- free ports -------------------------------------------------------------------------------


def test_a_free_port_lies_below_the_ephemeral_range_binds_and_is_never_handed_out_twice() -> None:
    import socket

    low = startup._ephemeral_low()
    ports = [startup.free_port() for _ in range(50)]
    assert len(set(ports)) == len(ports), "one process never hands out one port twice"
    assert all(p in startup.LISTEN_PORTS and p < low for p in ports), "an outgoing connection can take none of them"
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports[-1]))  # a server can listen there
        s.listen(1)


def test_a_held_port_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen(1)
        taken = held.getsockname()[1]
        with socket.socket() as spare:  # a neighbour nobody holds
            spare.bind(("127.0.0.1", 0))
            other = spare.getsockname()[1]
        monkeypatch.setattr(startup, "LISTEN_PORTS", [taken, other])
        monkeypatch.setattr(startup, "_ephemeral_low", lambda: 65536)
        monkeypatch.setattr(startup, "_handed_out", set())
        assert startup.free_port() == other


def test_where_the_ephemeral_range_covers_the_listen_ports_the_os_picks(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "range").write_text("1024\t65535\n")
    monkeypatch.setattr(startup, "EPHEMERAL_RANGE_FILE", tmp_path / "range")
    assert startup._ephemeral_low() == 1024
    port = startup.free_port()
    assert ("127.0.0.1", port) not in startup._handed_out and 1024 <= port <= 65535
    (tmp_path / "range").write_text("")
    assert startup._ephemeral_low() == startup.LISTEN_PORTS.stop, "unreadable: every usual range starts above"


def test_where_the_ephemeral_range_starts_inside_the_listen_ports_only_the_ports_below_it_are_tried(
        monkeypatch: pytest.MonkeyPatch) -> None:
    low = startup.LISTEN_PORTS.start + 40
    monkeypatch.setattr(startup, "_ephemeral_low", lambda: low)
    monkeypatch.setattr(startup, "_handed_out", set())
    ports = [startup.free_port() for _ in range(10)]
    assert all(startup.LISTEN_PORTS.start <= p < low for p in ports), ports
