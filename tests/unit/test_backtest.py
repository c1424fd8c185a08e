"""The backtest engine on small generated churn data whose second half drifts (inputs and concept): the
policy retrains and recovers, never-retrain does not, and every bad input is one sentence with a non-zero exit."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from mlops.core.config import parse_config
from mlops.core.errors import ConfigError, DataError
from mlops.core.periods import parse_period
from mlops.monitoring.backtest import run_backtest
from mlops.monitoring.backtest_plan import plan_backtest
from mlops.monitoring.backtest_report import table_rows, to_markdown, write_files
from mlops.monitoring.backtest_result import BacktestResult
from mlops.monitoring.yardstick import recovered_share
from tests.support.backtest import SHIFT_AT, backtest_config, drifted_history


@pytest.fixture(scope="module")
def replay() -> BacktestResult:
    cfg = parse_config(backtest_config())
    plan = plan_backtest(cfg, drifted_history(), "2M", "1M")
    return run_backtest(cfg, plan)


def test_plan_cuts_the_history_into_calendar_windows() -> None:
    cfg = parse_config(backtest_config())
    history = drifted_history().sample(frac=1.0, random_state=0)  # order comes from the timestamp, not the file
    plan = plan_backtest(cfg, history, "2M", "1M")
    assert [str(w.start.date()) for w in plan.windows] == [f"2025-{m:02d}-01" for m in range(3, 9)]
    assert plan.initial["event_time"].max() < pd.Timestamp("2025-03-01")
    assert sum(len(w.frame) for w in plan.windows) + len(plan.initial) == len(history)
    assert all(w.frame["event_time"].is_monotonic_increasing for w in plan.windows)


def test_timestamps_from_text_keep_one_dtype() -> None:
    cfg = parse_config(backtest_config())
    history = drifted_history()
    history["event_time"] = history["event_time"].astype(str)  # as read back from a CSV
    plan = plan_backtest(cfg, history, "2M", "1M")
    assert pd.api.types.is_datetime64_any_dtype(plan.windows[0].frame["event_time"])


@pytest.mark.slow
def test_policy_retrains_after_the_shift_and_recovers(replay: BacktestResult) -> None:
    windows = replay.windows
    assert len(windows) == 6
    before = [w for w in windows if pd.Timestamp(w.start) < SHIFT_AT]
    assert not any(w.retrained for w in before), [w.reasons for w in before]
    promoted = [w for w in windows if w.promoted]
    assert promoted and pd.Timestamp(promoted[0].start) >= SHIFT_AT
    assert replay.arms["policy"].retrains >= 1
    assert replay.arms["policy"].retrains < replay.arms["every_window"].retrains
    last = windows[-1]
    assert last.champion_version > 1
    # after the shift, the policy's champion beats the one that was never retrained
    late = [w for w in windows if w.window > promoted[0].window]
    assert late and all(w.metric > w.baselines["never"] for w in late)


@pytest.mark.slow
def test_never_retrain_falls_behind_after_the_shift(replay: BacktestResult) -> None:
    after = [w for w in replay.windows if pd.Timestamp(w.start) >= SHIFT_AT]
    behind = [w.baselines["every_window"] - w.baselines["never"] for w in after]
    assert all(gap > 0 for gap in behind[1:]), behind  # the champion of January cannot see what changed in May
    assert replay.arms["never"].retrains == 0 and replay.arms["never"].promotions == 0
    assert {w.champion_version for w in replay.windows} != {1}


@pytest.mark.slow
def test_summary_and_recovered_share(replay: BacktestResult) -> None:
    out = replay.to_dict()
    s = out["summary"]
    assert set(s) >= {"mean_metric", "retrains", "promotions", "recovered_share", "baselines"}
    assert set(s["baselines"]) >= {"never", "every_window"}
    assert s["baselines"]["every_window"]["retrains"] == len(replay.windows) - 1
    assert s["baselines"]["every_window"]["mean_metric"] > s["baselines"]["never"]["mean_metric"]
    assert s["mean_metric"] > s["baselines"]["never"]["mean_metric"]
    assert 0.0 < s["recovered_share"] <= 1.0
    # the yardstick: fixed schedules on shorter windows, the best of them named, the hindsight schedule
    assert {"every_window_last_1", "every_window_last_2", "hindsight"} <= set(s["baselines"])
    assert s["best_fixed"] in {n for n in s["baselines"] if n.startswith("every_window")}
    best = s["baselines"][s["best_fixed"]]["mean_metric"]
    assert all(b["mean_metric"] <= best for n, b in s["baselines"].items() if n.startswith("every_window"))
    assert s["fits"] > 0 and s["training_seconds"] > 0
    row = out["windows"][0]
    assert set(row) >= {"window", "rows", "champion_version", "metric", "drift_share", "decision", "reasons",
                        "retrained", "promoted", "seconds"}
    drifted = [w for w in out["windows"] if pd.Timestamp(w["start"]) >= SHIFT_AT]
    assert all(w["drift_share"] >= 0.3 for w in drifted[:1])


@pytest.mark.slow
def test_fast_mode_refits_the_every_window_baseline_between_searches(replay: BacktestResult) -> None:
    """The full replay searches the every-window baseline at every window; `fast` searches it only when its rows
    doubled and refits between, so it fits far fewer models, and says so in the summary and the report."""
    cfg = parse_config(backtest_config())
    fast = run_backtest(cfg, plan_backtest(cfg, drifted_history(), "2M", "1M"), fast=True)
    full_fits = replay.arms["every_window"].fits
    fast_fits = fast.arms["every_window"].fits
    assert fast.summary()["fast"] and not replay.summary()["fast"]
    assert fast.arms["every_window"].retrains == replay.arms["every_window"].retrains
    assert fast_fits < full_fits / 2, (fast_fits, full_fits)
    assert "refitted between" in to_markdown(fast) and "searched at every window" in to_markdown(replay)
    # the policy's own retrains do not depend on the baselines' mode
    assert fast.arms["policy"].retrain_windows == replay.arms["policy"].retrain_windows


@pytest.mark.slow
def test_predictions_are_kept_for_every_row(replay: BacktestResult) -> None:
    p = replay.predictions
    assert len(p) == sum(w.rows for w in replay.windows)
    assert p["prediction_policy"].notna().all()
    assert set(p["window"]) == {w.window for w in replay.windows}


@pytest.mark.slow
def test_files_and_markdown(replay: BacktestResult, tmp_path: Path) -> None:
    files = write_files(replay, tmp_path / "bt")
    for key in ("windows", "result", "predictions", "plot", "report"):
        assert Path(files[key]).stat().st_size > 0
    assert Path(files["plot"]).read_bytes()[:4] == b"\x89PNG"
    assert len(pd.read_csv(files["windows"])) == len(replay.windows) == len(table_rows(replay))
    assert "Recovered share" in to_markdown(replay)


def test_recovered_share_arithmetic() -> None:
    assert recovered_share(0.8, 0.7, 0.9, True) == pytest.approx(0.5)
    assert recovered_share(110.0, 120.0, 100.0, False) == pytest.approx(0.5)  # an error metric: lower is better
    assert recovered_share(0.8, 0.9, 0.9, True) is None  # retraining gained nothing: no share to recover
    assert recovered_share(None, 0.7, 0.9, True) is None


def test_period_parsing() -> None:
    assert parse_period("3M", "--initial") == pd.DateOffset(months=3)
    assert parse_period("12h", "--every") == pd.DateOffset(hours=12)
    with pytest.raises(ConfigError, match="--every 'monthly' is not a period"):
        parse_period("monthly", "--every")


# ---------------------------------------------------------------------------------------------
# bad input: one sentence each


def _one_sentence(msg: str) -> None:
    assert "\n" not in msg and msg.count(". ") == 0, msg


def test_history_without_the_timestamp_column() -> None:
    cfg = parse_config(backtest_config())
    with pytest.raises(DataError, match="the history has no timestamp column 'event_time'") as err:
        plan_backtest(cfg, drifted_history().drop(columns=["event_time"]), "2M", "1M")
    _one_sentence(str(err.value))


def test_window_with_no_rows() -> None:
    cfg = parse_config(backtest_config())
    h = drifted_history()
    gap = (h["event_time"] >= pd.Timestamp("2025-04-01")) & (h["event_time"] < pd.Timestamp("2025-05-01"))
    with pytest.raises(DataError, match=r"window 2 \(2025-04-01 00:00 to 2025-05-01 00:00\) has no rows") as err:
        plan_backtest(cfg, h.loc[~gap], "2M", "1M")
    _one_sentence(str(err.value))


def test_window_whose_labels_are_missing() -> None:
    cfg = parse_config(backtest_config())
    h = drifted_history()
    h.loc[h["event_time"] >= pd.Timestamp("2025-06-01"), "churned"] = None
    h.loc[h["event_time"] >= pd.Timestamp("2025-07-01"), "churned"] = 0  # labels again after the gap month
    with pytest.raises(DataError, match=r"window 4 \(2025-06-01 00:00 to 2025-07-01 00:00\) has no labels") as err:
        plan_backtest(cfg, h, "2M", "1M")
    _one_sentence(str(err.value))


def test_initial_period_too_small_to_train() -> None:
    cfg = parse_config(backtest_config())
    with pytest.raises(DataError, match="the initial period .* too few to train the first champion") as err:
        plan_backtest(cfg, drifted_history(), "2h", "1M")
    _one_sentence(str(err.value))


def test_config_without_timestamp_column() -> None:
    raw = backtest_config()
    del raw["timestamp_column"]
    with pytest.raises(ConfigError, match="the config has no timestamp_column"):
        plan_backtest(parse_config(raw), drifted_history(), "2M", "1M")


@pytest.mark.parametrize("case", ["no_timestamp", "empty_window", "no_labels", "tiny_initial"])
def test_cli_bad_input_is_one_line_and_non_zero(case: str, tmp_path: Path, state_dir: Path) -> None:
    from mlops.cli.main import app

    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(backtest_config()))
    h = drifted_history()
    initial = "2M"
    if case == "no_timestamp":
        h = h.drop(columns=["event_time"])
    elif case == "empty_window":
        h = h.loc[(h["event_time"] < pd.Timestamp("2025-04-01")) | (h["event_time"] >= SHIFT_AT)]
    elif case == "no_labels":
        h.loc[h["event_time"] >= pd.Timestamp("2025-08-01"), "churned"] = None
    else:
        initial = "1h"
    data = tmp_path / "history.csv"
    h.to_csv(data, index=False)
    res = CliRunner().invoke(app, ["backtest", "--config", str(config), "--data", str(data), "--initial", initial])
    assert res.exit_code == 3, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output
