"""Rows without a label (a blank target) are left out of training and counted, not quarantined as broken;
a target that is present but wrong still is. Messages name a quarantine file only when there is one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops.core.config import PipelineConfig, parse_config
from mlops.core.data import check_frame, drop_unlabelled, generate_churn, load_training_data, unlabelled_rows
from mlops.core.errors import DataError
from mlops.core.validation import (
    QUARANTINE_REASON_COLUMN,
    enforce_quarantine_limit,
    rows_line,
    validate_batch,
    validate_training_batch,
)
from mlops.monitoring import live_quality as lq
from tests.conftest import small_config

ROWS = 600
BLANK = {"nan": range(0, 10), "empty": range(100, 110), "marker": range(200, 210)}  # 30 rows: 5%


def _cfg(**overrides: object) -> PipelineConfig:
    return parse_config(small_config(**overrides))


def _blank_targets(df: pd.DataFrame, target: str) -> pd.DataFrame:
    """5% of the rows with a blank target, spelt three ways: NaN, an empty string, the marker '?'."""
    out = df.copy()
    out[target] = out[target].astype(object)
    out.loc[list(BLANK["nan"]), target] = np.nan
    out.loc[list(BLANK["empty"]), target] = ""
    out.loc[list(BLANK["marker"]), target] = "?"
    return out


def _regression_frame(rows: int = ROWS) -> pd.DataFrame:
    rng = np.random.default_rng(4)
    x = rng.normal(50, 10, rows)
    return pd.DataFrame({"x": x, "g": rng.choice(["a", "b", "c"], rows), "y": 2 * x + rng.normal(0, 1, rows)})


def _regression_cfg(**overrides: object) -> PipelineConfig:
    raw = small_config(task="regression", target="y", id_column=None, timestamp_column=None,
                       source={"kind": "file", "path": "unused.csv"}, validation={},
                       models=[{"family": "ridge"}], gate={"thresholds": {}, "slices": []})
    raw.update(overrides)
    return parse_config(raw)


def test_a_blank_target_is_no_label_but_a_wrong_one_is_a_label() -> None:
    y = pd.Series([1, np.nan, "", "  ", "?", "N/A", "abc", 0], dtype=object)
    assert unlabelled_rows(y, ["?", "N/A"]).tolist() == [False, True, True, True, True, True, False, False]
    assert unlabelled_rows(y).tolist() == [False, True, True, True, False, False, False, False]  # no markers
    assert unlabelled_rows(pd.Series([1.0, np.nan, 3.0])).tolist() == [False, True, False]
    assert not unlabelled_rows(pd.Series([0, 1, 1])).any()


def test_blank_targets_are_left_out_and_counted_not_quarantined() -> None:
    cfg = _cfg(validation={"max_quarantine_fraction": 0.02})  # below the 5% of blank targets
    df = _blank_targets(generate_churn(ROWS, seed=1), "churned")
    batch = validate_training_batch(check_frame(df, cfg), None, cfg)
    out = batch.outcome
    assert out.unlabelled == 30 and out.checked == ROWS - 30
    assert out.quarantined.empty and out.quarantine_fraction == 0.0
    assert len(out.good) == ROWS - 30 and set(out.good["churned"].unique()) == {0, 1}
    assert out.summary()["rows_unlabelled"] == 30
    assert rows_line(out.summary()) == "570 rows accepted, 0 quarantined, 30 rows without a label left out"
    assert batch.contract.by_name["churned"].allowed in (None, ["0", "1"])  # no '' or '?' class learnt


def test_blank_targets_do_not_weigh_on_the_quarantine_fraction(tmp_path: Path) -> None:
    cfg = _cfg(validation={"max_quarantine_fraction": 0.05,
                           "expectations": [{"type": "between", "column": "age", "min": 16, "max": 110}]})
    df = _blank_targets(generate_churn(ROWS, seed=1), "churned")
    df.loc[300:305, "age"] = 150.0  # 6 rows that truly break a rule
    batch = validate_training_batch(check_frame(df, cfg), None, cfg, quarantine_dir=tmp_path)
    out = batch.outcome
    assert out.unlabelled == 30 and len(out.quarantined) == 6
    assert out.quarantine_fraction == pytest.approx(6 / (ROWS - 30))
    written = pd.read_csv(batch.quarantine_file)
    assert len(written) == 6 and (written["age"] == 150).all()  # the quarantine file holds no unlabelled row
    assert written[QUARANTINE_REASON_COLUMN].str.contains("expect_column_values_to_be_between").all()


def test_a_training_file_with_blank_targets_reads_and_validates(tmp_path: Path) -> None:
    """The read path: a CSV whose target has blanks and '?' (one of na_values) goes through load and validation."""
    df = _blank_targets(generate_churn(ROWS, seed=2), "churned")
    path = tmp_path / "train.csv"
    df.to_csv(path, index=False)
    cfg = _cfg(source={"kind": "file", "path": str(path)}, validation={"max_quarantine_fraction": 0.02})
    assert "?" in cfg.na_values
    loaded = load_training_data(cfg)
    batch = validate_training_batch(loaded.frame, None, cfg, loaded.profile, loaded.malformed, tmp_path / "q")
    assert batch.outcome.unlabelled == 30 and batch.outcome.quarantined.empty and batch.quarantine_file is None


def test_a_marker_the_config_does_not_list_is_a_label() -> None:
    """Without '?' in na_values a '?' target is a value, judged by validation (here: not a number)."""
    cfg = _regression_cfg(na_values=["NA"], validation={"max_quarantine_fraction": 0.5})
    df = _blank_targets(_regression_frame(), "y")
    out = validate_training_batch(check_frame(df, cfg), None, cfg).outcome
    assert out.unlabelled == 20 and len(out.quarantined) == 10
    assert out.quarantined[QUARANTINE_REASON_COLUMN].str.contains("expect_column_values_to_be_of_type").all()


def test_a_present_but_invalid_regression_target_is_still_quarantined() -> None:
    cfg = _regression_cfg(validation={"max_quarantine_fraction": 0.05,
                                      "expectations": [{"type": "between", "column": "y", "min": 0, "max": 1000}]})
    df = _blank_targets(_regression_frame(), "y")
    df.loc[400, "y"] = "lots"  # text in a numeric target
    df.loc[401, "y"] = -5.0  # outside the user's rule
    out = validate_training_batch(check_frame(df, cfg), None, cfg).outcome
    assert out.unlabelled == 30 and len(out.quarantined) == 2
    reasons = out.quarantined[QUARANTINE_REASON_COLUMN].tolist()
    assert "expect_column_values_to_be_of_type(y, numeric)" in reasons[0]
    assert "expect_column_values_to_be_between(y" in reasons[1]
    assert pd.api.types.is_numeric_dtype(out.good["y"]) and len(out.good) == ROWS - 32


@pytest.mark.parametrize("blank", [np.nan, "", "?"])
def test_no_row_with_a_label_is_one_sentence(blank: object) -> None:
    cfg = _cfg()
    df = generate_churn(50, seed=1).assign(churned=blank)
    for call in (lambda: check_frame(df, cfg), lambda: validate_training_batch(df, None, cfg),
                 lambda: drop_unlabelled(df, cfg)):
        with pytest.raises(DataError, match=r"^no row has a label: target column 'churned' is blank .* all 50 rows"
                           ) as err:
            call()
        text = str(err.value)
        assert "\n" not in text and text.count(". ") == 0 and text.endswith("the column that holds them")


def test_check_frame_judges_the_labelled_rows() -> None:
    cfg = _cfg()
    df = generate_churn(50, seed=1)
    df["churned"] = df["churned"].astype(object)
    df.loc[:10, "churned"] = "?"
    check_frame(df, cfg)  # '?' is no label, so it is no third class
    with pytest.raises(DataError, match="single class"):
        check_frame(df.assign(churned=["?"] * 10 + [1] * 40), cfg)  # one class among the labelled rows


def test_a_retraining_file_with_blank_targets_passes_the_previous_contract() -> None:
    """The contract inferred from fully labelled data records the target's null fraction (the margin only);
    a later batch with more blank targets than that still validates: its blanks are left out first."""
    cfg = _cfg()
    first = validate_training_batch(check_frame(generate_churn(ROWS, seed=1), cfg), None, cfg)
    target = first.contract.by_name["churned"]
    assert target.max_null_fraction == pytest.approx(cfg.validation.null_margin)  # 0 observed + the margin
    later = generate_churn(ROWS, seed=2).astype({"churned": object})
    later.loc[: ROWS // 10 - 1, "churned"] = np.nan  # 10% blank, above the recorded null fraction (5%)
    later.loc[ROWS // 10: ROWS // 10 + 4, "churned"] = "?"
    again = validate_training_batch(check_frame(later, cfg), first.contract, cfg)
    assert again.outcome.unlabelled == ROWS // 10 + 5 and again.outcome.quarantined.empty


# ---------------------------------------------------------------------------------------------
# no "see None"


def _too_many_bad(cfg: PipelineConfig) -> pd.DataFrame:
    df = _blank_targets(generate_churn(ROWS, seed=1), "churned")
    df.loc[300:359, "age"] = 150.0  # 60 of 570 labelled rows: 10.5%
    return df


def test_over_the_limit_without_a_quarantine_file_says_no_path() -> None:
    """As the in-process backtest calls it: no quarantine folder, so the message names no file (and no None)."""
    cfg = _cfg(validation={"max_quarantine_fraction": 0.05,
                           "expectations": [{"type": "between", "column": "age", "min": 16, "max": 110}]})
    with pytest.raises(DataError) as err:
        validate_training_batch(check_frame(_too_many_bad(cfg), cfg), None, cfg)
    text = str(err.value)
    assert text.startswith("60 of 570 rows (10.5%) broke the data contract, above the allowed 5.0%")
    assert "None" not in text and "see" not in text
    assert "most often expect_column_values_to_be_between(age" in text and "(60)" in text


def test_over_the_limit_with_a_quarantine_file_names_it(tmp_path: Path) -> None:
    cfg = _cfg(validation={"max_quarantine_fraction": 0.05,
                           "expectations": [{"type": "between", "column": "age", "min": 16, "max": 110}]})
    with pytest.raises(DataError, match=r"; see .*quarantined\.csv$") as err:
        validate_training_batch(check_frame(_too_many_bad(cfg), cfg), None, cfg, quarantine_dir=tmp_path)
    assert str(tmp_path) in str(err.value) and (tmp_path / "quarantined.csv").exists()


def test_enforce_quarantine_limit_leaves_the_file_out_when_there_is_none() -> None:
    from mlops.core.contract import infer_contract

    cfg = _cfg()
    df = generate_churn(200, seed=1)
    contract = infer_contract(df, "churned", "classification", cfg.validation)
    bad = df.astype({"tenure_months": object})
    bad.loc[:5, "tenure_months"] = "twelve"  # quoted in the quarantine reason, never in the message
    out = validate_batch(bad, contract)
    with pytest.raises(DataError) as err:
        enforce_quarantine_limit(out, 0.01, None)
    text = str(err.value)
    assert "None" not in text and "twelve" not in text
    assert text.endswith("most often expect_column_values_to_be_of_type(tenure_months, numeric) (6)")


# ---------------------------------------------------------------------------------------------
# monitoring: a blank label is no label there either


def test_monitoring_leaves_blank_labels_out() -> None:
    src = generate_churn(40, seed=5)
    window = src.astype({"churned": object})
    window.loc[:4, "churned"] = ""
    window.loc[5:9, "churned"] = "?"
    window.loc[10:14, "churned"] = np.nan
    rows, _ = lq.labelled_rows(window, None, "churned", "customer_id", ["?"])
    assert len(rows) == 25
    labels = window[["customer_id", "churned"]]
    joined, by = lq.labelled_rows(src.drop(columns=["churned"]), labels, "churned", "customer_id", ["?"])
    assert by == "customer_id" and len(joined) == 25 and set(joined["churned"]) <= {0, 1}


def test_rows_line_reads_old_summaries() -> None:
    assert rows_line({"rows_accepted": 1200, "rows_quarantined": 3}) == "1,200 rows accepted, 3 quarantined"
    assert rows_line({"rows_accepted": 5, "rows_quarantined": 0, "rows_unlabelled": 1}).endswith(
        ", 1 row without a label left out")
