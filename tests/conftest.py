"""Shared fixtures: every test gets its own state folder and MLflow store; nothing leaves the machine."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlops.core.settings import TELEMETRY_OFF
from tests.support.scopes import check_stack_users
from tests.support.tiers import tier_problems

for _name, _value in {**TELEMETRY_OFF, "MLFLOW_LOGGING_LEVEL": "WARNING"}.items():
    os.environ.setdefault(_name, _value)

REPO = Path(__file__).resolve().parent.parent


def pytest_configure(config: pytest.Config) -> None:
    """A SIGTERM (a CI timeout) ends the run like Ctrl-C, so every fixture's finalizer stops what it started."""
    from tests.support.sigterm import install

    install()


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`make test-slow` runs `--dist loadscope`: each module on one worker, and every module that uses the shared
    live stack on the same one (tests/support/scopes.py), so one stack starts. Other modes: xdist's own."""
    if config.getoption("dist") != "loadscope":
        return None
    from tests.support.scopes import shared_stack_scheduling

    return shared_stack_scheduling(config, log)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Before `-m` deselects anything: every collected test is in exactly one tier (tests/support/tiers.py)."""
    problems = tier_problems((item.nodeid, {mark.name for mark in item.iter_markers()}) for item in items)
    if problems:
        raise pytest.UsageError("tests outside the Makefile's tiers (mark them e2e, process or slow, or "
                                "leave them unmarked for the fast tier):\n  " + "\n  ".join(problems))
    if strays := check_stack_users(items):
        raise pytest.UsageError("tests that use the live stack from a module tests/support/scopes.py did not find "
                                "(give the test or its fixture a `live` parameter):\n  " + "\n  ".join(strays))


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh MLOPS_HOME with its own SQLite MLflow store."""
    import mlflow

    state = tmp_path / "state"
    state.mkdir()
    uri = f"sqlite:///{state / 'mlflow.db'}"
    monkeypatch.setenv("MLOPS_HOME", str(state))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLOPS_ARTIFACT_ROOT", (state / "mlartifacts").as_uri())
    mlflow.set_tracking_uri(uri)
    yield state
    mlflow.set_tracking_uri(None)


def small_config(**overrides: Any) -> dict[str, Any]:
    """A fast churn config: a few thousand generated rows, two tiny searches."""
    cfg: dict[str, Any] = {
        "name": "churn-small",
        "task": "classification",
        "source": {"kind": "generated", "rows": 3000, "seed": 3, "corrupt": 0.004},
        "target": "churned",
        "id_column": "customer_id",
        "timestamp_column": "event_time",
        "validation": {"expectations": [{"type": "between", "column": "age", "min": 16, "max": 110},
                                        {"type": "between", "column": "monthly_charges", "min": 0, "max": 500}]},
        "models": [
            {"family": "logistic_regression", "search_space": {"C": {"type": "loguniform", "low": 0.01, "high": 10}}},
            {"family": "hist_gradient_boosting", "params": {"max_iter": 50},
             "search_space": {"learning_rate": {"type": "loguniform", "low": 0.05, "high": 0.3}}},
        ],
        "search": {"n_trials": 2, "cv_folds": 2, "seed": 1, "n_jobs": 1},
        # infra validation (a fresh process loads and serves each registered version) costs a process start per
        # training; it runs where it is the subject (tests/unit/test_model_server_infra.py, the test_families
        # modules) and in the stacks as users run them (INFRA_VALIDATED below, configs/default.yaml's CLI test)
        "gate": {"thresholds": {"roc_auc": 0.65}, "bootstrap_samples": 200, "noninferiority_margin": 0.01,
                 "slices": [{"column": "region", "min_rows": 50}], "slice_tolerance": 0.15, "infra_validation": False},
        "registry": {"model_name": "churn-small", "reference_rows": 500},
    }
    for key, value in overrides.items():
        cfg[key] = value
    return cfg


INFRA_VALIDATED = {**small_config()["gate"], "infra_validation": True}  # small_config's gate, as users run it


def write_config(folder: Path, name: str = "config.yaml", **overrides: Any) -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(small_config(**overrides)))
    return path


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    return write_config(tmp_path)
