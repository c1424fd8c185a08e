"""The data contract evolves with each training: ranges and categories re-inferred from the rows kept,
the user's rules holding, the change recorded; values outside the observed range are drift, not bad data."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from mlops.core.config import PipelineConfig, parse_config
from mlops.core.contract import (
    ContractDiff,
    DataContract,
    checking_contract,
    diff_contracts,
    evolve_contract,
    infer_contract,
    rule_text,
)
from mlops.core.errors import DataError
from mlops.core.generate import generate_demand
from mlops.core.profile import profile_batch
from mlops.core.validation import QUARANTINE_REASON_COLUMN, validate_batch, validate_training_batch
from mlops.monitoring import windows as mon
from mlops.monitoring.drift import compute_drift
from tests.conftest import REPO

USER_RULE = "temperature between -45..50"


def demand_config(**overrides: Any) -> PipelineConfig:
    """configs/demand.yaml (its user rules: temperature -45..50, humidity 0..100, ...) with overrides."""
    raw = yaml.safe_load((REPO / "configs" / "demand.yaml").read_text(encoding="utf-8"))
    return parse_config(raw | overrides)


@pytest.fixture(scope="module")
def cfg() -> PipelineConfig:
    return demand_config()


@pytest.fixture(scope="module")
def seasons() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two winter months and two summer months of hourly demand, each with one logger error (-99.9 degrees)."""
    df = generate_demand(24 * 240, seed=7, missing=0.0)
    winter = df[df["timestamp"] < "2023-03-01"].reset_index(drop=True)
    summer = df[(df["timestamp"] >= "2023-06-15") & (df["timestamp"] < "2023-08-15")].reset_index(drop=True)
    winter.loc[10, "temperature"] = -99.9
    summer.loc[20, "temperature"] = -99.9
    return winter, summer


@pytest.fixture(scope="module")
def champion(seasons, cfg) -> DataContract:
    """The contract of a first training on winter data."""
    return validate_training_batch(seasons[0], None, cfg).contract


def test_first_contract_comes_from_the_kept_rows_and_says_so(champion: DataContract, seasons, cfg) -> None:
    t = champion.by_name["temperature"]
    winter = seasons[0]
    assert t.min is not None and t.max is not None
    assert t.min > -45 and t.max < 25  # the -99.9 error code was quarantined, so it shaped no range
    assert t.max >= winter["temperature"].drop(index=10).max()
    assert USER_RULE in [rule_text(e) for e in champion.expectations] and champion.declared == {}
    assert champion.changes is not None and champion.changes.first
    assert champion.changes.summary().startswith("first contract: 8 columns")


def test_the_summer_retrain_keeps_in_season_rows_and_quarantines_the_error_code(champion, seasons, cfg) -> None:
    summer = seasons[1]
    hot = summer["temperature"] > champion.by_name["temperature"].max
    assert hot.sum() > 100  # most of the summer is hotter than anything the winter contract saw
    batch = validate_training_batch(summer, champion, cfg)
    q = batch.outcome.quarantined
    assert list(q["temperature"]) == [-99.9]  # only the row breaking the user's rule
    assert "expect_column_values_to_be_between(temperature, min_value=-45" in q[QUARANTINE_REASON_COLUMN].iloc[0]
    assert len(batch.outcome.good) == len(summer) - 1
    assert batch.outcome.outside_observed["temperature"] == int(hot.sum())
    assert batch.outcome.summary()["outside_observed"]["temperature"] == int(hot.sum())

    new = batch.contract.by_name["temperature"]
    assert new.min is not None and new.max is not None
    assert new.max >= summer["temperature"].max() and new.min > -45  # covers summer, not the error code
    assert USER_RULE in [rule_text(e) for e in batch.contract.expectations]  # the user's rule still holds
    assert [c.name for c in batch.contract.columns] == [c.name for c in champion.columns]
    assert {c.name: (c.role, c.kind) for c in batch.contract.columns} == {
        c.name: (c.role, c.kind) for c in champion.columns}
    # and a later batch breaking the rule is still quarantined against the new contract
    again = validate_training_batch(summer, batch.contract, cfg)
    assert list(again.outcome.quarantined["temperature"]) == [-99.9]


def test_the_diff_says_what_moved_in_a_line_and_is_json(champion, seasons, cfg) -> None:
    good = validate_training_batch(seasons[1], champion, cfg).outcome.good
    new, diff = evolve_contract(champion, good, cfg, profile_batch(good, cfg))
    assert new.changes == diff and not diff.first and diff.rows == len(good)
    t = diff.ranges["temperature"]
    assert t["from"][1] < t["to"][1] and t["change"] in {"widened", "shifted"}
    assert diff.categories["weather"] == {"added": [], "removed": ["snow"]}  # no snow in summer
    assert not (diff.added or diff.removed or diff.kinds or diff.roles or diff.rules_added or diff.rules_removed)
    line = diff.summary()
    assert "\n" not in line and "temperature range" in line and "weather -categories (snow)" in line
    doc = json.loads(diff.to_json())
    assert doc["summary"] == line and ContractDiff.from_dict(doc) == diff
    back = DataContract.from_json(new.to_json())
    assert back == new and isinstance(back.changes, ContractDiff)
    # a contract saved before contracts evolved still loads
    old = json.loads(new.to_json())
    del old["changes"], old["declared"]
    assert DataContract.from_json(json.dumps(old)).changes is None


def test_the_users_rules_bound_what_was_observed(cfg) -> None:
    df = generate_demand(24 * 30, seed=3, missing=0.0)
    loose = demand_config(validation={"range_margin": 5.0, "expectations": [
        {"type": "between", "column": "temperature", "min": -45, "max": 50},
        {"type": "in_set", "column": "weather", "values": ["clear", "cloudy", "rain", "fog"]}]})
    c = infer_contract(df, "demand", "regression", loose.validation, timestamp_column="timestamp")
    t = c.by_name["temperature"]
    assert (t.min, t.max) == (-45.0, 50.0)  # a 500% margin would pass the user's bounds
    assert "snow" not in (c.by_name["weather"].allowed or [])


def test_structure_is_kept_where_the_data_agrees_and_changes_are_recorded(cfg) -> None:
    base = pd.DataFrame({"timestamp": pd.date_range("2024-01-01", periods=60, freq="h"),
                         "count": np.arange(60) % 7, "colour": ["red", "blue", "green"] * 20,
                         "old": np.arange(60) % 5, "demand": np.linspace(500, 900, 60)})
    small = demand_config(validation={"expectations": []})
    first, _ = evolve_contract(None, base, small, profile_batch(base, small))
    assert first.by_name["count"].kind == "integer"
    later = base.drop(columns=["old"]).assign(count=(np.arange(60) % 7) + 0.5, extra=np.arange(60) * 1.5,
                                              colour=["red", "blue", "purple"] * 20)
    ruled = demand_config(validation={"expectations": [{"type": "between", "column": "extra", "min": 0}]})
    new, diff = evolve_contract(first, later, ruled, profile_batch(later, ruled))
    assert diff.added == ["extra"] and diff.removed == ["old"]
    assert diff.kinds == {"count": ["integer", "numeric"]}  # it holds fractions now
    assert diff.categories["colour"] == {"added": ["purple"], "removed": ["green"]}
    assert diff.rules_added == ["extra between 0..?"] and new.by_name["extra"].role == "feature"
    # a type the user now declares wins over the previous contract
    declared = demand_config(validation={"expectations": []}, columns={"count": "categorical"})
    _, diff = evolve_contract(first, base, declared, profile_batch(base, declared))
    assert diff.kinds == {"count": ["integer", "categorical"]}
    assert diff_contracts(first, first).summary().startswith("unchanged")


def test_a_training_batch_missing_a_column_the_champion_needs_is_structural(champion, seasons, cfg) -> None:
    batch = seasons[1].drop(columns=["tariff"])
    checking = checking_contract(champion, batch, cfg, profile_batch(batch, cfg))
    assert "tariff" in checking.by_name
    with pytest.raises(DataError, match=r"\['tariff'\] required by the data contract are missing"):
        validate_training_batch(seasons[1].drop(columns=["tariff"]), champion, cfg)
    with pytest.raises(DataError, match="config expectation on column 'humidity': no such column"):
        validate_training_batch(seasons[1].drop(columns=["humidity"]), champion, cfg)


def test_a_validation_profiles_the_batch_once_and_evolves_the_contract_once(champion, seasons, cfg,
                                                                            monkeypatch) -> None:
    import mlops.core.contract as contract_module
    import mlops.core.profile as profile_module
    import mlops.core.validation as validation_module

    calls = {"profile": 0, "evolve": 0}

    def counting(name: str, fn: Any) -> Any:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            calls[name] += 1
            return fn(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(profile_module, "profile_frame", counting("profile", profile_module.profile_frame))
    monkeypatch.setattr(contract_module, "profile_frame", counting("profile", contract_module.profile_frame))
    evolve = counting("evolve", contract_module.evolve_contract)
    for module in (contract_module, validation_module):  # reached from either
        monkeypatch.setattr(module, "evolve_contract", evolve)
    batch = validate_training_batch(seasons[1], champion, cfg)
    assert calls == {"profile": 1, "evolve": 1} and batch.contract.changes is not None
    calls.update(profile=0, evolve=0)
    validate_training_batch(seasons[1], champion, cfg, profile_batch(seasons[1], cfg))
    assert calls == {"profile": 1, "evolve": 1}  # the caller's profile, none made inside


def test_the_quarantine_mode_of_validate_batch_is_unchanged(champion, seasons) -> None:
    """Callers that ask for it (batch scoring with ranges enforced) still quarantine out-of-range rows."""
    out = validate_batch(seasons[1], champion)
    assert (out.quarantined[QUARANTINE_REASON_COLUMN].str.contains("temperature")).sum() > 100
    assert out.outside_observed == {}


# ---------------------------------------------------------------------------------------------
# monitoring


def test_a_summer_window_passes_quality_against_a_winter_champion_and_drift_sees_it(champion, seasons, cfg) -> None:
    winter, summer = seasons
    window = summer.drop(columns=["demand"])
    report = mon.check_quality(window, champion, cfg.validation.max_quarantine_fraction)
    assert report.passed, report.failures
    assert report.rows_quarantined == 1  # the -99.9 reading breaks the user's rule
    assert report.outside_observed["temperature"] > 100 and report.outside_observed_fraction > 0.05
    assert report.to_dict()["outside_observed"]["temperature"] == report.outside_observed["temperature"]
    assert any("outside the champion's training range" in n for n in report.notes)
    assert report.good is not None and report.good["temperature"].max() == summer["temperature"].max()

    numeric, categorical = mon.drift_columns(champion)
    reference = winter.drop(index=10)
    drift = compute_drift(reference, report.good, numeric, categorical, cfg.monitoring)
    assert "temperature" in drift.drifted_columns


def test_user_rule_violations_still_fail_a_window(champion, seasons, cfg) -> None:
    window = seasons[1].drop(columns=["demand"])
    window.loc[window.index[:200], "temperature"] = -99.9
    report = mon.check_quality(window, champion, cfg.validation.max_quarantine_fraction)
    assert not report.passed and "break the contract" in report.failures[0]
    assert "temperature, min_value=-45" in report.failures[0]
