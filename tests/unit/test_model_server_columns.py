"""The column-wise contract check of many records (mlops.serving.columns) against the row checker it
replaces for batches: on messy generated requests both accept the same requests with the same values and
scores, and refuse the same requests with the same 422, word for word."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from mlops.serving.columns import check_records
from mlops.serving.model import ServedModel, build_served_model
from mlops.serving.records import Batch, RequestError, records_from_frame
from tests.support.model_server import churn_frame, fit_pipeline

NUMERIC = ["tenure_months", "monthly_charges", "total_charges", "usage_gb", "support_calls", "age"]
CATEGORY = ["region", "plan", "contract", "payment_method"]
MESS: dict[str, list[Any]] = {
    "number": [None, math.nan, math.inf, -math.inf, 5, 0, 10**400, 2**70, "3", "", True, 3.5, 1e9, -5.0, [1],
               {"a": 1}, 7.25],
    "category": [None, "mars", 1, 2.0, 2.5, True, ["x"], "", "north", math.nan],
    "date": [None, "not a date", "2020-01-01T00:00:00+02:00", 5, "0001-01-01T00:00", "2024-02-30", "2023-06-01"],
    "id": [None, 5, 5.0, 5.5, [], "abc", True],
}


@pytest.fixture(scope="module")
def served() -> ServedModel:
    pipe, contract, frame = fit_pipeline(churn_frame(1500, seed=3), "churned", params={"max_iter": 30},
                                         id_column="customer_id", timestamp_column="event_time")
    return build_served_model("churn", "1", "run-1", pipe, contract, None)


@pytest.fixture(scope="module")
def clean() -> list[dict[str, Any]]:
    return records_from_frame(churn_frame(3000, seed=11).drop(columns=["churned"]))


def messy_request(rng: np.random.Generator, clean: list[dict[str, Any]]) -> list[Any]:
    n = int(rng.integers(8, 80))
    rows: list[Any] = [dict(clean[int(i)]) for i in rng.integers(0, len(clean), n)]
    for _ in range(int(rng.integers(0, 4))):  # about a quarter of the requests stay clean
        i = int(rng.integers(n))
        what = rng.integers(12)
        if not isinstance(rows[i], dict):
            continue
        if what < 4:
            rows[i][str(rng.choice(NUMERIC))] = MESS["number"][int(rng.integers(len(MESS["number"])))]
        elif what < 6:
            rows[i][str(rng.choice(CATEGORY))] = MESS["category"][int(rng.integers(len(MESS["category"])))]
        elif what == 6:
            rows[i]["event_time"] = MESS["date"][int(rng.integers(len(MESS["date"])))]
        elif what == 7:
            rows[i]["customer_id"] = MESS["id"][int(rng.integers(len(MESS["id"])))]
        elif what == 8:
            rows[i]["extra"] = 1 if rng.random() < 0.5 else rows[i].pop("customer_id")
        elif what == 9:
            rows[i].pop(str(rng.choice(NUMERIC + CATEGORY)))
        elif what == 10:
            for c in [*NUMERIC, *CATEGORY][: int(rng.integers(4, 9))]:
                rows[i][c] = None  # over the null budget from 6 nulls on
        else:
            rows[i] = ["not", "an", "object"] if rng.random() < 0.5 else None
    if rng.random() < 0.2:  # a request whose records leave out the optional id column
        for r in rows:
            if isinstance(r, dict):
                r.pop("customer_id", None)
    return rows


def outcome(f: Any, *args: Any) -> tuple[str, Any]:
    try:
        return "ok", f(*args)
    except RequestError as exc:
        return "error", (exc.status, exc.message, exc.field, exc.row, exc.errors)


def same_value(a: Any, b: Any) -> bool:
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return type(a) is type(b) and a == b if not isinstance(b, np.floating) else (type(a) is float and a == float(b))


def same_batch(a: Batch, b: Batch) -> None:
    assert a.n == b.n and list(a.columns) == list(b.columns)
    for name, values in a.columns.items():
        got = b.columns[name]
        assert len(got) == len(values)
        assert all(same_value(x, y) for x, y in zip(values, got, strict=True)), name


@pytest.mark.slow
def test_messy_requests_get_the_same_answer_from_both_checks(served: ServedModel, clean: list[dict[str, Any]]) -> None:
    rng = np.random.default_rng(20261204)
    kinds = {"ok": 0, "error": 0}
    for _ in range(300):
        records = messy_request(rng, clean)
        old = outcome(served.validator.validate, records, 10_000)
        new = outcome(check_records, served.validator, records, 10_000)
        assert old[0] == new[0], (old, new)
        kinds[old[0]] += 1
        if old[0] == "error":
            assert old[1] == new[1]
            continue
        same_batch(old[1], new[1])
        a, b = served.score(old[1]), served.score(new[1])
        assert np.array_equal(a.predictions, b.predictions)
        assert a.probabilities is not None and b.probabilities is not None
        assert np.array_equal(a.probabilities, b.probabilities)
        full = served.score_pipeline(new[1])
        assert np.array_equal(full.predictions, b.predictions) and np.array_equal(full.probabilities, b.probabilities)
    assert kinds["ok"] > 60 and kinds["error"] > 60, kinds  # both sides of the check were exercised


def test_a_fraction_in_an_integer_column_is_refused_alone_and_in_a_batch(served: ServedModel,
                                                                          clean: list[dict[str, Any]]) -> None:
    one = dict(clean[0], tenure_months=3.5)
    for records in ([one], [dict(r) for r in clean[:99]] + [one]):
        for check in (lambda r: served.validator.validate(r, 1000), lambda r: check_records(served.validator, r, 1000)):
            with pytest.raises(RequestError) as err:
                check(records)
            assert err.value.status == 422 and err.value.field == "tenure_months"
            assert "3.5 is not a whole number" in err.value.message
    whole = [dict(r, tenure_months=12.0, support_calls=3) for r in clean[:50]]
    batch = check_records(served.validator, whole, 1000)
    assert batch.columns["tenure_months"].tolist() == [12.0] * 50
    assert batch.columns["support_calls"].tolist() == [3.0] * 50
