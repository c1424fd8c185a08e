"""The contract evolves through the real flows: a winter champion, a summer window the monitor calls drift
(not a quality failure), and a summer retrain whose registered contract covers summer, keeps the user's
rule and carries its diff."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml

from flows.monitor import monitor
from flows.train import train
from mlops.core.generate import generate_demand
from mlops.registry import versions as registry
from tests.conftest import REPO

pytestmark = pytest.mark.slow

NAME = "demand-evolution"


def _config(folder: Path, source: Path) -> Path:
    """configs/demand.yaml (user rule: temperature -45..50), on a file, with a small search and no infra check."""
    raw = yaml.safe_load((REPO / "configs" / "demand.yaml").read_text(encoding="utf-8"))
    raw["source"] = {"kind": "file", "path": str(source)}
    raw["models"] = [{"family": "hist_gradient_boosting", "params": {"max_iter": 40},
                      "search_space": {"learning_rate": {"type": "loguniform", "low": 0.05, "high": 0.3}}}]
    raw["search"] = {"strategy": "random", "n_trials": 1, "cv_folds": 2, "n_jobs": 1, "seed": 1}
    raw["gate"] = {"primary_metric": "rmse", "thresholds": {"rmse": 1000.0}, "bootstrap_samples": 200,
                   "infra_validation": False}
    raw["registry"] = {"model_name": NAME, "reference_rows": 1000}
    raw["monitoring"] = {"min_labelled_rows": 50, "policy": {"cooldown_minutes": 0, "min_rows": 100,
                                                             "run_training_locally": False}}
    path = folder / "demand.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def seasons(tmp_path_factory: pytest.TempPathFactory):
    """A state folder with a champion trained on two winter months, and a summer file with one error code."""
    tmp = tmp_path_factory.mktemp("evolution")
    df = generate_demand(24 * 240, seed=11, missing=0.0)
    winter = df[df["timestamp"] < "2023-03-01"].reset_index(drop=True)
    summer = df[(df["timestamp"] >= "2023-06-15") & (df["timestamp"] < "2023-08-15")].reset_index(drop=True)
    summer.loc[30, "temperature"] = -99.9  # a logger error code: breaks the user's rule
    winter.to_parquet(tmp / "winter.parquet", index=False)
    summer.to_parquet(tmp / "summer.parquet", index=False)
    with pytest.MonkeyPatch.context() as mp:
        uri = f"sqlite:///{tmp / 'mlflow.db'}"
        mp.setenv("MLOPS_HOME", str(tmp / "state"))
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.setenv("MLOPS_ARTIFACT_ROOT", (tmp / "mlartifacts").as_uri())
        mlflow.set_tracking_uri(uri)
        cfg = _config(tmp, tmp / "winter.parquet")
        first = train(config_path=str(cfg), return_state=True)
        assert first.is_completed(), first.message
        assert first.result().promoted
        yield {"tmp": tmp, "config": cfg, "winter": winter, "summer": summer}
    mlflow.set_tracking_uri(None)


def test_a_summer_window_is_drift_not_a_quality_failure(seasons) -> None:
    champion = registry.load_bundle(NAME, registry.CHAMPION, with_reference=False)
    hottest_seen = champion.contract.by_name["temperature"].max
    summer = seasons["summer"]
    assert (summer["temperature"] > hottest_seen).sum() > 100
    current = seasons["tmp"] / "summer_inputs.parquet"
    summer.drop(columns=["demand"]).to_parquet(current, index=False)
    r = monitor(config_path=str(seasons["config"]), current_path=str(current))
    assert r.status == "checked" and r.quality.passed, r.quality.failures
    assert r.quality.rows_quarantined == 1 and r.quality.outside_observed["temperature"] > 100
    assert r.drift is not None and "temperature" in r.drift.drifted_columns


def test_a_summer_retrain_registers_a_contract_that_covers_summer_with_its_diff(seasons) -> None:
    st = train(config_path=str(seasons["config"]), source_path=str(seasons["tmp"] / "summer.parquet"),
               reason="summer", return_state=True)
    assert st.is_completed(), st.message
    result = st.result()
    assert result.version == "2" and result.data["rows_quarantined"] == 1
    quarantined = pd.read_csv(result.quarantine_file)
    assert list(quarantined["temperature"]) == [-99.9]
    assert result.data["outside_observed"]["temperature"] > 100

    bundle = registry.load_bundle(NAME, "2", with_reference=False)
    t = bundle.contract.by_name["temperature"]
    summer = seasons["summer"].drop(index=30)
    assert t.min is not None and t.max is not None
    assert t.min <= summer["temperature"].min() and t.max >= summer["temperature"].max() and t.min > -45
    rules = [e for e in bundle.contract.expectations if e["column"] == "temperature"]
    assert rules == [{"type": "between", "column": "temperature", "min": -45.0, "max": 50.0}]

    version = registry.client().get_model_version(NAME, "2")
    assert "temperature range" in version.tags["contract.diff"]
    path = mlflow.artifacts.download_artifacts(run_id=version.run_id, artifact_path="contract/contract_diff.json",
                                               dst_path=str(seasons["tmp"] / "diff"))
    diff = json.loads(Path(path).read_text(encoding="utf-8"))
    assert not diff["first"] and diff["ranges"]["temperature"]["to"][1] > diff["ranges"]["temperature"]["from"][1]
    assert diff["summary"] == version.tags["contract.diff"]
    first = registry.client().get_model_version(NAME, "1")
    assert first.tags["contract.diff"].startswith("first contract")
