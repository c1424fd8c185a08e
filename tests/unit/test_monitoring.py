"""Monitoring without Prefect: window tracking over the prediction log, quality, labels, training files."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops.core import rowkeys
from mlops.core.config import UserExpectation, ValidationConfig, parse_config
from mlops.core.contract import infer_contract, merge_expectations
from mlops.core.data import generate_churn
from mlops.core.errors import DataError
from mlops.monitoring import live_quality as lq
from mlops.monitoring import retraining
from mlops.monitoring import windows as mon
from mlops.monitoring.result import MonitorResult, WindowInfo
from mlops.monitoring.run import MonitorRun
from mlops.serving.logbatch import log_scored_frame
from tests.conftest import small_config

NAME = "churn-unit"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class StubModel:
    """Predicts churn from support calls: deterministic, no fitting."""

    classes_ = np.array([0, 1])

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        p = 1.0 / (1.0 + np.exp(-(X["support_calls"].to_numpy(dtype=float) - 2.0)))
        return np.column_stack([1.0 - p, p])

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(int)


@pytest.fixture(scope="module")
def contract():
    df = generate_churn(600, seed=1)
    return infer_contract(df, "churned", "classification", ValidationConfig(), "customer_id", "event_time")


@pytest.fixture(scope="module")
def cfg():
    return parse_config(small_config(monitoring={"min_labelled_rows": 50, "policy": {"quality_tolerance": 0.05}}))


def _log(folder: Path, frame: pd.DataFrame, contract, when: datetime, model_name: str = NAME, rows_per_file: int = 100,
         sensitive: list[str] | None = None):
    return log_scored_frame(frame, StubModel(), model_name, "1", contract, folder, sensitive or [], "hash",
                                request_rows=50, rows_per_file=rows_per_file, logged_at=when.timestamp())


# ---------------------------------------------------------------------------------------------
# window tracking


def test_each_log_file_is_claimed_once_and_new_files_form_the_next_window(tmp_path: Path, contract) -> None:
    log = tmp_path / "predictions"
    store = mon.WindowStore(tmp_path / "monitor_state.json")
    files, ids = _log(log, generate_churn(300, seed=2), contract, T0)
    assert len(files) == 3 and len(ids) == 300

    first = store.claim(NAME, log, "run-a", T0, lookback_days=2, claim_minutes=60)
    assert sorted(first.files) == sorted(f.relative_to(log).as_posix() for f in files)
    assert store.claim(NAME, log, "run-b", T0, 2, 60).files == []  # held by run-a

    frame, corrupt, others = mon.read_log_files(log, first.files, NAME)
    assert len(frame) == 300 and corrupt == [] and others == 0
    store.commit(NAME, first, T0, rows=len(frame), newest=T0, corrupt=[], status="checked", lookback_days=2)
    assert store.claim(NAME, log, "run-c", T0, 2, 60).files == []  # nothing new

    more, _ = _log(log, generate_churn(120, seed=3), contract, T0 + timedelta(minutes=5))
    nxt = store.claim(NAME, log, "run-d", T0 + timedelta(minutes=6), 2, 60)
    assert sorted(nxt.files) == sorted(f.relative_to(log).as_posix() for f in more)
    assert store.model_state(NAME)["high_water"] == T0.isoformat()


def test_a_claim_left_by_a_dead_run_expires_and_a_released_claim_is_free(tmp_path: Path, contract) -> None:
    log = tmp_path / "predictions"
    store = mon.WindowStore(tmp_path / "state.json")
    _log(log, generate_churn(100, seed=2), contract, T0)
    dead = store.claim(NAME, log, "dead-run", T0, 2, claim_minutes=30)
    assert dead.files
    assert store.claim(NAME, log, "early", T0 + timedelta(minutes=29), 2, 30).files == []
    late = store.claim(NAME, log, "late", T0 + timedelta(minutes=31), 2, 30)
    assert late.files == dead.files
    store.release(NAME, late)
    assert store.claim(NAME, log, "again", T0 + timedelta(minutes=32), 2, 30).files == dead.files


def test_a_late_file_in_an_earlier_partition_is_still_checked(tmp_path: Path, contract) -> None:
    log = tmp_path / "predictions"
    store = mon.WindowStore(tmp_path / "state.json")
    _log(log, generate_churn(100, seed=2), contract, T0)
    c = store.claim(NAME, log, "r1", T0, 2, 60)
    store.commit(NAME, c, T0, rows=100, newest=T0, corrupt=[], status="checked", lookback_days=2)
    late, _ = _log(log, generate_churn(60, seed=4), contract, T0 - timedelta(days=1))  # yesterday's partition
    ancient, _ = _log(log, generate_churn(60, seed=5), contract, T0 - timedelta(days=10))  # beyond lookback
    got = store.claim(NAME, log, "r2", T0, 2, 60).files
    assert got == [late[0].relative_to(log).as_posix()]
    assert ancient[0].relative_to(log).as_posix() not in got


def test_concurrent_claims_split_the_files_without_overlap(tmp_path: Path, contract) -> None:
    log = tmp_path / "predictions"
    files, _ = _log(log, generate_churn(1000, seed=2), contract, T0, rows_per_file=50)
    store = mon.WindowStore(tmp_path / "state.json")
    claims: list[list[str]] = []
    barrier = threading.Barrier(4)

    def worker(i: int) -> None:
        barrier.wait()
        claims.append(store.claim(NAME, log, f"run-{i}", T0, 2, 60).files)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    flat = [f for c in claims for f in c]
    assert len(flat) == len(set(flat)) == len(files) == 20


def test_corrupt_files_are_skipped_reported_and_not_read_again(tmp_path: Path, contract) -> None:
    log = tmp_path / "predictions"
    files, _ = _log(log, generate_churn(200, seed=2), contract, T0)
    bad = files[0].parent / "part-broken.parquet"
    bad.write_bytes(b"PAR1 truncated")
    store = mon.WindowStore(tmp_path / "state.json")
    c = store.claim(NAME, log, "r1", T0, 2, 60)
    frame, corrupt, _ = mon.read_log_files(log, c.files, NAME)
    assert len(frame) == 200 and corrupt == [bad.relative_to(log).as_posix()]
    store.commit(NAME, c, T0, rows=200, newest=T0, corrupt=corrupt, status="checked", lookback_days=2)
    assert store.claim(NAME, log, "r2", T0, 2, 60).files == []
    assert bad.relative_to(log).as_posix() in store.model_state(NAME)["corrupt"]


def test_rows_of_other_models_are_left_to_their_own_monitor(tmp_path: Path, contract) -> None:
    log = tmp_path / "predictions"
    _log(log, generate_churn(100, seed=2), contract, T0)
    _log(log, generate_churn(70, seed=3), contract, T0, model_name="other-model")
    files = [p.relative_to(log).as_posix() for p in sorted(log.rglob("*.parquet"))]
    frame, _, others = mon.read_log_files(log, files, NAME)
    assert len(frame) == 100 and others == 70


def test_a_broken_state_file_is_a_clear_error(tmp_path: Path) -> None:
    p = tmp_path / "state.json"
    p.write_text("{not json")
    with pytest.raises(Exception, match="move it aside"):
        mon.WindowStore(p).claim(NAME, tmp_path, "r", T0, 2, 60)


def test_logged_inputs_come_back_under_their_names(tmp_path: Path, contract) -> None:
    log = tmp_path / "predictions"
    src = generate_churn(100, seed=2)
    _, ids = _log(log, src, contract, T0, sensitive=["customer_id"])
    files = [p.relative_to(log).as_posix() for p in sorted(log.rglob("*.parquet"))]
    frame, _, _ = mon.read_log_files(log, files, NAME)
    assert "customer_id" not in frame.columns  # sensitive, no hash key: dropped before it reached disk
    assert {"request_id", "request_row", "logged_at", "prediction", "prediction_proba", "region"} <= set(frame.columns)
    back = ids.assign(src_charges=src["monthly_charges"].to_numpy()).merge(frame, on=["request_id", "request_row"])
    assert len(back) == 100 and np.allclose(back["monthly_charges"], back["src_charges"])
    assert mon.restore_input_names(pd.DataFrame({"input.prediction_x": [1]})).columns.tolist() == ["prediction_x"]


# ---------------------------------------------------------------------------------------------
# data quality


def test_good_window_passes_and_an_absent_id_column_is_noted(contract) -> None:
    frame = generate_churn(300, seed=4).drop(columns=["churned", "customer_id"])
    report = mon.check_quality(frame, contract, 0.05)
    assert report.passed and report.good is not None and len(report.good) == 300 - report.rows_quarantined
    assert any("customer_id" in n for n in report.notes)


@pytest.mark.parametrize("case, expected", [
    ("missing", "missing column(s) ['usage_gb']"),
    ("type", "type change: column 'tenure_months'"),
    ("nulls", "null burst: column 'monthly_charges'"),
    ("category_numbers", "type change: column 'region'"),
])
def test_structural_problems_fail_the_window(contract, case: str, expected: str) -> None:
    frame = generate_churn(300, seed=4).drop(columns=["churned"])
    if case == "missing":
        frame = frame.drop(columns=["usage_gb"])
    elif case == "type":
        frame["tenure_months"] = "twelve"
    elif case == "nulls":
        frame.loc[frame.index[:150], "monthly_charges"] = np.nan
    else:
        frame["region"] = np.arange(len(frame)) % 4
    report = mon.check_quality(frame, contract, 0.05)
    assert not report.passed and report.good is None
    assert any(expected in f for f in report.failures), report.failures


def test_all_problems_are_listed_at_once(contract) -> None:
    frame = generate_churn(100, seed=4).drop(columns=["churned", "usage_gb"]).assign(tenure_months="x")
    problems = mon.structural_problems(frame, mon.monitoring_contract(contract, list(frame.columns))[0])
    assert len(problems) == 2


def test_too_many_rows_breaking_a_user_rule_fail_the_window(contract) -> None:
    frame = generate_churn(200, seed=4).drop(columns=["churned"])
    frame.loc[frame.index[:40], "age"] = 150.0
    ruled = merge_expectations(contract, [UserExpectation(type="between", column="age", min=16, max=110)])
    report = mon.check_quality(frame, ruled, 0.05)
    assert not report.passed and "break the contract" in report.failures[0]
    assert mon.check_quality(frame, ruled, 0.5).passed
    # outside the observed range but allowed by the user's rules: a drift signal, not a failure
    report = mon.check_quality(frame, contract, 0.05)
    assert report.passed and report.rows_quarantined == 0 and report.outside_observed == {"age": 40}
    assert report.good is not None and len(report.good) == 200 and (report.good["age"] == 150.0).sum() == 40


def test_drift_columns_leave_out_target_id_and_timestamp(contract) -> None:
    numeric, categorical = mon.drift_columns(contract)
    assert set(numeric) == {"tenure_months", "monthly_charges", "total_charges", "usage_gb", "support_calls", "age"}
    assert set(categorical) == {"region", "plan", "contract", "payment_method"}


# ---------------------------------------------------------------------------------------------
# labels and live quality


def _log_frame(tmp_path: Path, contract, n: int = 300, seed: int = 2,
               sensitive: list[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    src = generate_churn(n, seed=seed)
    _, ids = _log(tmp_path / "p", src, contract, T0, sensitive=sensitive)
    files = [p.relative_to(tmp_path / "p").as_posix() for p in sorted((tmp_path / "p").rglob("*.parquet"))]
    frame, _, _ = mon.read_log_files(tmp_path / "p", files, NAME)
    return src, ids, frame


def test_labels_join_by_request_id_and_row(tmp_path: Path, contract) -> None:
    src, ids, frame = _log_frame(tmp_path, contract)
    labels = ids.assign(churned=src["churned"].to_numpy()).iloc[::2]  # half the labels arrived
    joined, by = lq.labelled_rows(frame, labels, "churned", "customer_id")
    assert by == "request_id" and len(joined) == 150
    back = joined.merge(ids.assign(churned_true=src["churned"].to_numpy()), on=["request_id", "request_row"])
    assert (back["churned"] == back["churned_true"]).all()


def test_labels_join_by_the_id_column_when_there_is_no_request_id(contract) -> None:
    src = generate_churn(200, seed=5)
    window = src.drop(columns=["churned"])
    labels = src[["customer_id", "churned"]].sample(frac=0.5, random_state=0)
    joined, by = lq.labelled_rows(window, labels, "churned", "customer_id")
    assert by == "customer_id" and len(joined) == 100
    truth = labels.set_index("customer_id")["churned"]
    assert (joined.set_index("customer_id")["churned"].sort_index() == truth.sort_index()).all()


def test_a_window_that_carries_the_target_needs_no_labels_file() -> None:
    src = generate_churn(50, seed=5)
    src.loc[src.index[:10], "churned"] = np.nan
    joined, by = lq.labelled_rows(src, None, "churned", "customer_id")
    assert len(joined) == 40 and by
    assert lq.labelled_rows(src.drop(columns=["churned"]), None, "churned", "customer_id")[1] is None


def test_labels_without_a_key_or_target_are_a_clear_error(contract) -> None:
    window = generate_churn(20, seed=5).drop(columns=["churned"])
    with pytest.raises(DataError, match="neither 'request_id' nor the id column"):
        lq.labelled_rows(window, pd.DataFrame({"x": [1], "churned": [0]}), "churned", "customer_id")
    with pytest.raises(DataError, match="no target column"):
        lq.labelled_rows(window, pd.DataFrame({"customer_id": ["a"]}), "churned", "customer_id")


@pytest.mark.parametrize("metric, live, base, tol, degraded", [
    ("roc_auc", 0.74, 0.80, 0.05, True),
    ("roc_auc", 0.76, 0.80, 0.05, False),
    ("roc_auc", 0.90, 0.80, 0.05, False),
    ("accuracy", 0.749, 0.80, 0.05, True),
    ("rmse", 11.0, 10.0, 0.05, True),  # errors: relative, 10% worse
    ("rmse", 10.4, 10.0, 0.05, False),
    ("log_loss", 0.40, 0.45, 0.05, False),
    ("r2", 0.5, 0.6, 0.05, True),
])
def test_degradation_on_both_sides_of_the_tolerance(metric, live, base, tol, degraded) -> None:
    bad, why = lq.degradation(metric, live, base, tol)
    assert bad is degraded and metric in why


def test_live_quality_needs_enough_labels_and_compares_with_the_holdout(cfg, contract) -> None:
    src = generate_churn(400, seed=6)
    tags = {"metric.roc_auc": "0.99", "metric.accuracy": "0.9"}
    few = lq.live_quality(src.head(20), "customer_id", StubModel(), cfg, tags, contract.input_columns)
    assert few.status == "too_few_labels" and not few.degraded
    live = lq.live_quality(src, "customer_id", StubModel(), cfg, tags, contract.input_columns)
    assert live.status == "ok" and live.labelled_rows == 400 and live.degraded
    assert 0.5 < live.metrics["roc_auc"] < 0.95 and "roc_auc" in live.reason
    fine = lq.live_quality(src, "customer_id", StubModel(), cfg, {"metric.roc_auc": "0.5"}, contract.input_columns)
    assert not fine.degraded
    none = lq.live_quality(src.head(0), None, StubModel(), cfg, tags, contract.input_columns)
    assert none.status == "no_labels"


# ---------------------------------------------------------------------------------------------
# the retraining file


def test_training_rows_get_contract_types_and_an_id_when_the_log_dropped_it(tmp_path: Path, contract) -> None:
    src, ids, frame = _log_frame(tmp_path, contract, n=100, sensitive=["customer_id"])
    joined, _ = lq.labelled_rows(frame, ids.assign(churned=src["churned"].to_numpy()), "churned", "customer_id")
    rows = retraining.training_rows(joined, contract)
    assert list(rows.columns) == [c.name for c in contract.columns]
    assert rows["customer_id"].is_unique and rows["customer_id"].str.startswith("log-").all()
    assert str(rows["event_time"].dtype) == "datetime64[ns]" and rows["tenure_months"].dtype == float


def test_build_training_frame_modes(contract) -> None:
    original = generate_churn(300, seed=1)
    new = generate_churn(120, seed=2)
    window = new.tail(40)
    frame, what = retraining.build_training_frame("original_plus_new", original, new, window, contract, 10_000)
    assert len(frame) == 420 and "300 rows the champion trained on plus 120" in what
    assert len(retraining.build_training_frame("new", original, new, window, contract, 10_000)[0]) == 120
    assert len(retraining.build_training_frame("window", original, new, window, contract, 10_000)[0]) == 40
    fallback, why = retraining.build_training_frame("original_plus_new", None, new, window, contract, 10_000)
    assert len(fallback) == 120 and "could not be loaded" in why
    capped, why = retraining.build_training_frame("original_plus_new", original, new, window, contract, 200)
    assert len(capped) == 200 and capped["event_time"].is_monotonic_increasing and "capped" in why
    assert capped["event_time"].min() >= pd.concat([original, new])["event_time"].sort_values().iloc[-200]


def test_duplicate_ids_keep_the_latest_row(contract) -> None:
    original = generate_churn(50, seed=1)
    relabelled = original.head(10).assign(churned=1 - original.head(10)["churned"])
    frame, _ = retraining.build_training_frame("original_plus_new", original, relabelled, relabelled, contract, 10_000)
    assert len(frame) == 50
    merged = frame.set_index("customer_id").loc[relabelled["customer_id"], "churned"]
    assert (merged.to_numpy() == relabelled["churned"].to_numpy()).all()


def test_labelled_store_accumulates_until_archived(tmp_path: Path) -> None:
    store = retraining.LabelledStore(tmp_path / "labelled")
    store.save("w1", generate_churn(30, seed=1))
    store.save("w2", generate_churn(20, seed=2))
    assert store.save("w3", generate_churn(5, seed=3).head(0)) is None
    assert len(store.load()) == 50 and len(store.load("w2")) == 20
    store.archive([f.name for f in store.files()])
    assert store.files() == [] and len(store.load()) == 0


def test_derived_config_applies_overrides_and_rejects_bad_ones(tmp_path: Path) -> None:
    import yaml

    from mlops.core.config import load_config
    from mlops.core.errors import ConfigError

    src = tmp_path / "c.yaml"
    src.write_text(yaml.safe_dump(small_config()))
    out = mon.write_derived_config(src, {"monitoring": {"policy": {"consecutive_windows": 1}}}, tmp_path / "d" / "x.yaml")
    assert load_config(out).monitoring.policy.consecutive_windows == 1
    with pytest.raises(ConfigError, match="consecutive_windows"):
        mon.write_derived_config(src, {"monitoring": {"policy": {"consecutive_windows": 0}}}, tmp_path / "y.yaml")


# ---------------------------------------------------------------------------------------------
# issue 9: re-sent rows once, a retrain holds out only new rows, rows seen in training, live slices


def _plain_contract(df: pd.DataFrame):
    """A contract with neither an id nor a timestamp column, as a CSV without them gives."""
    return infer_contract(df, "churned", "classification", ValidationConfig(), None, None)


def _no_id_no_time(rows: int, seed: int, start: pd.Timestamp | None = None) -> pd.DataFrame:
    return generate_churn(rows, seed=seed, start=start).drop(columns=["customer_id", "event_time"])


def test_resent_rows_without_an_id_appear_once_and_are_not_new() -> None:
    original = _no_id_no_time(300, seed=1)
    contract = _plain_contract(original)
    fresh = _no_id_no_time(120, seed=2)
    # re-sent: 50 training rows (coming back through the log, so cast to the contract) and 20 new rows twice
    resent = retraining.training_rows(original.sample(50, random_state=0), contract)
    new = pd.concat([fresh, resent, fresh.head(20)], ignore_index=True)
    frame, what = retraining.build_training_frame("original_plus_new", original, new, new, contract, 10_000)
    assert len(frame) == 420, what
    assert "70 duplicate row(s) dropped (identical inputs and target)" in what
    assert int(frame[rowkeys.NEW_ROW_COLUMN].sum()) == 120  # the re-sent training rows are not new
    inputs = [c for c in frame.columns if c != rowkeys.NEW_ROW_COLUMN]
    assert len(np.unique(rowkeys.row_hashes(frame, inputs))) == 420
    only_new, why = retraining.build_training_frame("new", None, new, new, contract, 10_000)
    assert len(only_new) == 170 and "20 duplicate row(s)" in why and rowkeys.NEW_ROW_COLUMN not in only_new


def _through_training(frame: pd.DataFrame, contract, tmp_path: Path, cfg_split, timestamp: str | None,
                      id_column: str | None):
    """What the training flow does with a retraining file: read it back, strip the marker, validate, split."""
    from mlops.core.data import read_table, split_frame
    from mlops.core.validation import validate_batch

    path = retraining.write_training_file(frame, tmp_path, "t")
    df, new_rows = rowkeys.pop_new_rows(read_table(path))
    assert rowkeys.NEW_ROW_COLUMN not in df.columns and new_rows is not None
    good = validate_batch(df, contract).good
    mask = rowkeys.new_row_mask(good, new_rows, id_column)
    return split_frame(good, "churned", "classification", cfg_split, timestamp, mask), new_rows


def test_a_retrain_without_a_timestamp_holds_out_only_new_rows(tmp_path: Path) -> None:
    from mlops.core.config import SplitConfig

    original = _no_id_no_time(2000, seed=1)
    contract = _plain_contract(original)
    new = retraining.training_rows(_no_id_no_time(600, seed=2), contract)
    frame, _ = retraining.build_training_frame("original_plus_new", original, new, new, contract, 100_000)
    split, new_rows = _through_training(frame, contract, tmp_path, SplitConfig(test_size=0.2, seed=5), None, None)
    cols = list(new.columns)
    held = np.isin(rowkeys.row_hashes(split.test, cols), rowkeys.row_hashes(new, cols))
    assert len(split.test) == round(0.2 * 600) == 120 and held.all()  # test_size of the new rows
    assert len(split.train) == 2480 and "seeded sample (seed 5) of 120 of the 600 new rows" in split.holdout
    trained = np.isin(rowkeys.row_hashes(split.train, cols), rowkeys.row_hashes(original, cols))
    assert trained.sum() == 2000  # every original row trains
    # the same seed picks the same rows
    again, _ = _through_training(frame, contract, tmp_path, SplitConfig(test_size=0.2, seed=5), None, None)
    pd.testing.assert_frame_equal(again.test, split.test)


def test_a_retrain_holdout_is_test_size_of_the_new_rows_at_least_10_and_too_few_is_one_sentence(
        tmp_path: Path) -> None:
    from mlops.core.config import SplitConfig
    from mlops.core.data import split_frame

    original = _no_id_no_time(2000, seed=1)
    contract = _plain_contract(original)
    few = retraining.training_rows(_no_id_no_time(60, seed=2), contract)
    frame, _ = retraining.build_training_frame("original_plus_new", original, few, few, contract, 100_000)
    split, _ = _through_training(frame, contract, tmp_path, SplitConfig(), None, None)
    assert len(split.test) == 12 and "test_size 0.2 of the new rows" in split.holdout  # ceil(0.2 * 60)
    few_frame, _ = retraining.build_training_frame("original_plus_new", original, few.head(30), few.head(30),
                                                   contract, 100_000)
    small, _ = _through_training(few_frame, contract, tmp_path, SplitConfig(), None, None)
    assert len(small.test) == 10  # 0.2 * 30 is 6: never fewer than 10
    flags = frame.pop(rowkeys.NEW_ROW_COLUMN).to_numpy().copy()
    flags[np.flatnonzero(flags)[5:]] = False
    with pytest.raises(DataError, match=r"^only 5 of the 2,060 rows are new .* at least 10 are needed"):
        split_frame(frame, "churned", "classification", SplitConfig(), None, flags)


def test_a_retrain_with_a_timestamp_holds_out_the_newest_new_rows(tmp_path: Path) -> None:
    from mlops.core.config import SplitConfig

    original = generate_churn(1000, seed=1)  # January to June
    contract = infer_contract(original, "churned", "classification", ValidationConfig(), "customer_id", "event_time")
    new = retraining.training_rows(generate_churn(300, seed=2, start=pd.Timestamp("2025-03-01")), contract)
    frame, _ = retraining.build_training_frame("original_plus_new", original, new, new, contract, 100_000)
    split, _ = _through_training(frame, contract, tmp_path, SplitConfig(test_size=0.2), "event_time", "customer_id")
    assert len(split.test) == 60 and set(split.test["customer_id"]) <= set(new["customer_id"])
    newest = new.sort_values("event_time")["customer_id"].iloc[-60:]
    assert set(split.test["customer_id"]) == set(newest)
    older_new = set(new["customer_id"]) - set(newest)
    assert older_new and older_new <= set(split.train["customer_id"])  # the older new rows train
    assert "the newest 60 of 300 new rows (by event_time)" in split.holdout


def test_a_first_training_splits_as_before_and_says_how() -> None:
    from sklearn.model_selection import train_test_split

    from mlops.core.config import SplitConfig
    from mlops.core.data import split_frame

    df = _no_id_no_time(500, seed=3)
    split = split_frame(df, "churned", "classification", SplitConfig(), None)
    _, expected = train_test_split(df, test_size=0.2, random_state=42, stratify=df["churned"])
    pd.testing.assert_frame_equal(split.test, expected.reset_index(drop=True))
    assert split.holdout == "holdout: a seeded random 100 rows (test_size 0.2, seed 42, stratified by churned)"
    timed = split_frame(generate_churn(500, seed=3), "churned", "classification", SplitConfig(), "event_time")
    assert "the newest 100 rows" in timed.holdout


def test_a_checked_window_is_committed_and_a_failed_check_gives_its_files_back(tmp_path: Path, contract) -> None:
    """MonitorRun.checking: the window's files are committed with the status the check ended in, or released for
    the next run when the check raised (an interrupt too), and the error goes on."""
    log = tmp_path / "predictions"
    _log(log, generate_churn(100, seed=5), contract, T0)

    def started(run_id: str) -> tuple[MonitorRun, mon.Window, MonitorResult]:
        run = MonitorRun.start(NAME, "configs/default.yaml", tmp_path / "state", tmp_path / "reports",
                               tmp_path / "state.json", run_id, now=T0)
        claim = run.windows.claim(NAME, log, run.run_id, run.now, 2, 60)
        frame, corrupt, others = mon.read_log_files(log, claim.files, NAME)
        window = mon.Window(frame, mon.LOG_SOURCE, claim.files, corrupt, others, claim)
        return run, window, MonitorResult.of_window(NAME, "1", WindowInfo.of(window), run.run_id, run.config_path)

    run, window, result = started("run-a")
    assert window.files and result.status == "checked" and result.has_rows and result.quality_passed
    with pytest.raises(KeyboardInterrupt), run.checking(window, result, 2):
        raise KeyboardInterrupt
    run, again, result = started("run-b")
    assert again.files == window.files  # given back: the next run checks the same files
    with run.checking(again, result, 2):
        result.status = "quality_failed"
    assert run.windows.model_state(NAME)["windows"][-1]["status"] == "quality_failed"
    _, nothing, empty = started("run-c")
    assert nothing.files == [] and empty.status == "empty" and not empty.has_rows  # committed: read by no one again
