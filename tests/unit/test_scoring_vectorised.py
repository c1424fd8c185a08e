"""Batch scoring's column-by-column contract check and compiled model (mlops.serving.batchcheck) against the
path they replace (Great Expectations' suite, then Pipeline.predict and predict_proba): on messy generated
chunks both give the same flags, reasons, quarantine, coerced rows and predictions, in both modes."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
import pytest

import mlops.serving.chunks as chunks
from mlops.core.data import generate_churn
from mlops.serving.batchcheck import Scorer, check_chunk, plan_rules
from mlops.serving.chunks import ChunkResult, score_chunk, scoring_contract
from tests.support.model_server import churn_frame, fit_pipeline

RULES = [{"type": "between", "column": "monthly_charges", "min": 0, "max": 500},
         {"type": "between", "column": "age", "min": 16},
         {"type": "in_set", "column": "plan", "values": ["basic", "standard", "premium"]},
         {"type": "not_null", "column": "region"},
         {"type": "unique", "column": "customer_id"}]  # not a scoring rule: left out by scoring_contract


@pytest.fixture(scope="module")
def model() -> dict[str, Any]:
    pipe, contract, _ = fit_pipeline(churn_frame(1500, seed=12), "churned", params={"max_iter": 20},
                                     id_column="customer_id", timestamp_column="event_time")
    return {"pipe": pipe, "contract": replace(contract, expectations=RULES)}


def messy_chunk(seed: int, rows: int = 3000) -> pd.DataFrame:
    """Generated rows as a file delivers them: numbers as text, blanks, '?', fractions in integer columns,
    unknown and missing categories, unreadable dates, infinities, out-of-range values."""
    rng = np.random.default_rng(seed)
    df = generate_churn(rows, seed=seed, corrupt=0.01).drop(columns=["churned"])
    messes = {
        "tenure_months": ["twelve", "", "?", 3.5, "7", 12.0, np.inf, -3.0, None],
        "age": [150.0, 10.0, "?", 33.25, None, "45", -np.inf],
        "monthly_charges": [-1.0, 1e6, "abc", None, 600.0, 499.99],
        "support_calls": [2.5, "x", None, 99.0],
        "total_charges": [1e7, -3.0, "n/a"],
        "region": ["atlantis", None, "", "North", 3],
        "plan": ["gold", None, "basic"],
        "payment_method": ["cash", None],
        "event_time": ["not a date", None, "2024-02-30", "2025-03-01 10:00:00"],
    }
    for col, values in messes.items():
        df[col] = df[col].astype(object)
        for i in rng.choice(rows, size=rows // 12, replace=False):  # dense: rows break several rules at once
            df.at[int(i), col] = values[int(rng.integers(len(values)))]
    return df


def same_result(a: ChunkResult, b: ChunkResult) -> None:
    pd.testing.assert_frame_equal(a.predictions, b.predictions)
    pd.testing.assert_frame_equal(a.quarantined, b.quarantined)
    pd.testing.assert_frame_equal(a.good.reset_index(drop=True), b.good.reset_index(drop=True))
    assert np.array_equal(a.good_rows, b.good_rows)
    assert list(a.outputs) == list(b.outputs)
    assert all(np.array_equal(np.asarray(a.outputs[k]), np.asarray(b.outputs[k])) for k in a.outputs)


def old_path(monkeypatch: pytest.MonkeyPatch, model: dict[str, Any], chunk: pd.DataFrame, flag: bool) -> ChunkResult:
    """The chunk through Great Expectations and the Pipeline, as scoring ran before."""
    plain = Scorer.__new__(Scorer)
    plain.model, plain.task, plain.fast, plain.checked, plain.classes = model["pipe"], "classification", None, True, None
    with monkeypatch.context() as m:
        m.setattr(chunks, "check_chunk", lambda *_a: None)
        m.setattr(chunks, "scorer_for", lambda *_a: plain)
        return score_chunk(model["pipe"], model["contract"], chunk, 100, "3", flag)


@pytest.mark.parametrize("flag", [True, False])
def test_messy_chunks_get_the_same_outcome_both_ways(model: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
                                                     flag: bool) -> None:
    assert plan_rules(scoring_contract(model["contract"])) is not None  # the new path is the one taken
    for seed in (1, 2):
        chunk = messy_chunk(seed)
        new = score_chunk(model["pipe"], model["contract"], chunk, 100, "3", flag)
        old = old_path(monkeypatch, model, chunk, flag)
        same_result(old, new)
        assert 150 < len(new.quarantined) < len(chunk)  # many rows broke the contract, most did not
        reasons = "; ".join(new.quarantined["_quarantine_reasons"])
        for expected in ("expect_column_values_to_be_of_type(tenure_months, integer): '3.5'",
                         "expect_column_values_to_be_of_type(age, numeric): '?'",
                         "expect_column_values_to_be_between(age, min_value=16.0)",
                         "expect_column_values_to_be_in_set(plan, value_set=['basic', 'standard', 'premium'])",
                         "expect_column_values_to_not_be_null(region)"):
            assert expected in reasons


def test_the_compiled_model_is_used_and_matches_the_pipeline(model: dict[str, Any]) -> None:
    s = Scorer(model["pipe"], model["contract"])
    checked = check_chunk(messy_chunk(3), scoring_contract(model["contract"]))
    assert checked is not None
    X = checked.frame[list(model["pipe"].feature_names_in_)]
    out = s.outputs(X)
    assert s.fast is not None and s.checked  # compiled, checked on the first chunk, kept
    assert np.array_equal(out["prediction"], model["pipe"].predict(X))
    assert np.array_equal(out["prediction_proba"], model["pipe"].predict_proba(X)[:, 1])


def test_a_rule_only_great_expectations_judges_keeps_its_path(model: dict[str, Any]) -> None:
    regex = replace(model["contract"], expectations=[{"type": "regex", "column": "customer_id", "pattern": "^C"}])
    assert plan_rules(scoring_contract(regex)) is None
    assert check_chunk(messy_chunk(4, rows=200), scoring_contract(regex)) is None


def test_arrow_string_categories_get_the_codes_the_lookup_gives() -> None:
    """Batch scoring hands category columns over as Arrow strings (no Python string per row); a known value, an
    unknown one, a null and an empty string must get what the per-value lookup gives them."""
    import pandas as pd

    from mlops.serving.fastpath import CategoryBlock

    block = CategoryBlock(columns=["plan"], out=slice(0, 3), base=np.zeros(3),
                          lookups=[{"__missing__": 0, "basic": 1, "premium": 2}], null_codes=[3], unknown_codes=[4],
                          deltas=[np.arange(5.0)[:, None] * np.array([1.0, 10.0, 100.0])])
    values = ["premium", None, "gold", "", "basic", "__missing__", "premium "]
    arrow = pd.Series(values, dtype="str").array.__arrow_array__()
    by_arrow, by_lookup = np.zeros((7, 3)), np.zeros((7, 3))
    block.apply({"plan": arrow}, 7, by_arrow)
    block.apply({"plan": values}, 7, by_lookup)
    assert np.array_equal(by_arrow, by_lookup)
    assert [int(v) for v in by_lookup[:, 0]] == [2, 3, 4, 4, 1, 0, 4]  # row codes, read back through the deltas
