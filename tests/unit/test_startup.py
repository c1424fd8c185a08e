"""The start-up speed tricks in mlops.core.startup: what `mlops --help` loads, preloading, native thread counts."""

from __future__ import annotations

import gc
import importlib.util
import json
import os
import subprocess
import sys

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
