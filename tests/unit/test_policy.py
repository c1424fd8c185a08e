"""Retrain policy: both sides of every threshold with a fake clock, the file lock, the storm guard."""

from __future__ import annotations

import multiprocessing as mp
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mlops.core.config import RetrainPolicyConfig
from mlops.core.errors import MLOpsError
from mlops.monitoring.policy import (
    PolicyState,
    PolicyStore,
    TrainingLock,
    WindowSummary,
    clock_at,
    decide,
    decide_and_record,
    finish_training,
    record_training_finished,
    should_start_training,
    start_training,
    training_slot,
)

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
CFG = RetrainPolicyConfig(drift_share_threshold=0.3, consecutive_windows=2, cooldown_minutes=60, min_rows=500)


def drifted(rows: int = 1000, share: float = 0.5) -> WindowSummary:
    return WindowSummary(rows=rows, drift_share=share, dataset_drift=share >= 0.5)


def calm(rows: int = 1000) -> WindowSummary:
    return WindowSummary(rows=rows, drift_share=0.05)


def run(windows: list[WindowSummary], cfg: RetrainPolicyConfig = CFG, state: PolicyState | None = None,
        step: timedelta = timedelta(hours=1)):
    state = state or PolicyState()
    decisions = []
    for i, w in enumerate(windows):
        d, state = decide(state, w, cfg, T0 + i * step)
        decisions.append(d)
    return decisions, state


# --- drift with and without labels ------------------------------------------------------------


def labelled(share: float, live: float, degraded: bool = False) -> WindowSummary:
    """A drifted window whose labels judged the champion (its live metric), degraded or not."""
    return WindowSummary(rows=1000, drift_share=share, dataset_drift=share >= 0.5, model_version="1", live_metric=live,
                         quality_degraded=degraded, quality_reason="rmse worse" if degraded else "")


def test_drift_alone_does_not_retrain_a_window_whose_labels_judged_the_champion():
    (d1, d2), state = run([labelled(0.7, 50.0), labelled(0.7, 51.0)])
    assert not d2.retrain and d2.verdict == "hold" and d2.drifted and state.consecutive_drifted == 2
    assert any("labels judged the champion" in r for r in d2.reasons)


def test_labels_that_say_quality_dropped_retrain_and_drift_without_labels_still_does():
    (_, d2), _ = run([labelled(0.7, 50.0), labelled(0.7, 80.0, degraded=True)])
    assert d2.retrain and any("live quality degraded" in t for t in d2.triggers)
    (_, d2), _ = run([drifted(), drifted()])  # no labels: drift is the only signal
    assert d2.retrain


def test_drift_trigger_always_retrains_on_drift_even_with_labels():
    always = CFG.model_copy(update={"drift_trigger": "always"})
    (_, d2), _ = run([labelled(0.7, 50.0), labelled(0.7, 51.0)], always)
    assert d2.retrain and any("drift share" in t for t in d2.triggers)


# --- consecutive windows ---------------------------------------------------------------------


def test_one_drifted_window_short_of_k_does_not_retrain():
    (d,), state = run([drifted()])
    assert not d.retrain and d.verdict == "hold" and d.drifted
    assert state.consecutive_drifted == 1


def test_k_consecutive_drifted_windows_retrain():
    (d1, d2), state = run([drifted(), drifted()])
    assert not d1.retrain
    assert d2.retrain and d2.verdict == "retrain"
    assert any("2 consecutive" in r for r in d2.reasons)
    assert state.consecutive_drifted == 0 and state.last_retrain_at == T0 + timedelta(hours=1)
    assert state.in_flight is not None and not state.in_flight.started


def test_a_calm_window_breaks_the_streak():
    ds, _ = run([drifted(), calm(), drifted()])
    assert [d.retrain for d in ds] == [False, False, False]
    assert ds[-1].consecutive_drifted == 1


def test_drift_share_threshold_both_sides():
    (below,), _ = run([drifted(share=0.2999)], cfg=CFG.model_copy(update={"consecutive_windows": 1}))
    (at,), _ = run([drifted(share=0.3)], cfg=CFG.model_copy(update={"consecutive_windows": 1}))
    assert below.drifted is False and not below.retrain
    assert at.drifted is True and at.retrain


# --- cooldown ----------------------------------------------------------------------------------


def _after_retrain() -> PolicyState:
    # retrained at T0, the run has finished: only the cooldown can block
    return PolicyState(last_retrain_at=T0, consecutive_drifted=1, new_rows=1000)


def test_within_cooldown_blocks_retrain():
    d, state = decide(_after_retrain(), drifted(), CFG, T0 + timedelta(minutes=59, seconds=59))
    assert not d.retrain and d.triggers
    assert any(b.startswith("cooldown") for b in d.blocks)
    assert state.consecutive_drifted == 2  # the streak is kept for the next window


def test_at_cooldown_end_retrains():
    d, _ = decide(_after_retrain(), drifted(), CFG, T0 + timedelta(minutes=60))
    assert d.retrain, d.reasons


def test_blocked_trigger_fires_on_the_next_window_after_cooldown():
    state = _after_retrain()
    d1, state = decide(state, drifted(), CFG, T0 + timedelta(minutes=30))
    d2, state = decide(state, drifted(), CFG, T0 + timedelta(minutes=90))
    assert not d1.retrain and d2.retrain


def test_the_retrain_budget_allows_half_the_windows_and_a_burst_after_a_quiet_stretch():
    """The first trigger retrains; then each judged window adds half a retrain to the budget (at most 2 saved
    up), so steady triggers retrain every other window while a change after a quiet stretch retrains at once and
    again. A blocked trigger stays pending; an empty window adds nothing; 1 lets every window retrain."""
    pays = WindowSummary(rows=1000, drift_share=0.0, quality_degraded=True, quality_reason="rmse up")
    quiet = calm()
    free = RetrainPolicyConfig(cooldown_minutes=0, min_rows=1)

    def replay(windows: list[WindowSummary], cfg: RetrainPolicyConfig = free):
        state, decisions = PolicyState(), []
        for i, window in enumerate(windows):
            d, state = decide(state, window, cfg, T0 + i * timedelta(hours=1))
            if d.retrain:
                state = finish_training(state, T0 + i * timedelta(hours=1), succeeded=True)
            decisions.append(d)
        return decisions, state

    decisions, state = replay([pays] * 6)
    assert [d.retrain for d in decisions] == [True, False, True, False, True, False]
    assert decisions[1].blocks == ["retrain budget 0.50 < 1: at most 50% of the windows retrain, on average "
                                   "(retrain_budget)"]
    assert decisions[1].triggers  # blocked, not dropped: the next window retrains
    assert state.budget == 0.5 and PolicyState.from_json(state.to_json()).budget == 0.5
    burst, state = replay([pays] + [quiet] * 6 + [pays] * 4)
    # 2 saved up (not 3), and each window of the run adds its half: three retrains in a row, then one in two
    assert [d.retrain for d in burst][7:] == [True, True, True, False]
    empty, _ = replay([pays, WindowSummary(rows=0, drift_share=None), pays, pays])
    assert [d.retrain for d in empty] == [True, False, False, True]  # a window with no rows adds nothing
    every, _ = replay([pays] * 5, free.model_copy(update={"retrain_budget": 1.0}))
    assert all(d.retrain for d in every)
    d, state = decide(PolicyState(budget=0.5), pays, free, T0)
    assert d.retrain and state.budget == 0.0
    assert finish_training(state, T0, succeeded=True, trained=False).budget == 1.0  # retrained nothing: given back
    assert finish_training(state, T0, succeeded=False).budget == 1.0
    manual = PolicyState(budget=0.0, last_retrain_at=T0, in_flight=TrainingLock(T0 + timedelta(hours=1),
                                                                                   T0 + timedelta(hours=5), True))
    assert finish_training(manual, T0, succeeded=False).budget == 0.0  # not the policy's: nothing to give back


# --- min rows ----------------------------------------------------------------------------------


def test_fewer_than_min_rows_blocks():
    cfg = CFG.model_copy(update={"consecutive_windows": 1})
    (d,), _ = run([drifted(rows=499)], cfg=cfg)
    assert not d.retrain and any("min_rows 500" in b for b in d.blocks)


def test_exactly_min_rows_retrains():
    cfg = CFG.model_copy(update={"consecutive_windows": 1})
    (d,), _ = run([drifted(rows=500)], cfg=cfg)
    assert d.retrain


def test_new_rows_accumulate_across_windows():
    ds, state = run([drifted(rows=200), drifted(rows=200), drifted(rows=100)])
    assert [d.retrain for d in ds] == [False, False, True]
    assert ds[1].new_rows == 400 and state.new_rows == 0


# --- in flight ---------------------------------------------------------------------------------


def test_no_retrain_while_training_in_flight():
    lock = TrainingLock(T0, T0 + timedelta(hours=4), started=True, started_at=T0)
    state = PolicyState(consecutive_drifted=1, new_rows=1000, in_flight=lock)
    d, _ = decide(state, drifted(), CFG, T0 + timedelta(hours=3, minutes=59))
    assert not d.retrain and any("already running" in b for b in d.blocks)


def test_expired_training_lock_is_cleared():
    lock = TrainingLock(T0, T0 + timedelta(hours=4), started=True, started_at=T0)
    state = PolicyState(consecutive_drifted=1, new_rows=1000, in_flight=lock)
    d, new = decide(state, drifted(), CFG, T0 + timedelta(hours=4))
    assert d.retrain and any("expired" in r for r in d.reasons)
    assert new.in_flight is not None and new.in_flight.requested_at == T0 + timedelta(hours=4)


def test_finish_releases_the_lock_and_restarts_cooldown():
    (_, _), state = run([drifted(), drifted()])
    state = finish_training(state, T0 + timedelta(hours=2), succeeded=True)
    assert state.in_flight is None and state.last_retrain_at == T0 + timedelta(hours=2)
    failed = finish_training(PolicyState(in_flight=TrainingLock(T0, T0 + timedelta(hours=1))), T0, succeeded=False)
    assert failed.in_flight is None and failed.last_retrain_at is None


# --- quality -----------------------------------------------------------------------------------


def test_degraded_live_quality_retrains_without_drift():
    w = WindowSummary(rows=1000, drift_share=0.0, quality_degraded=True, quality_reason="roc_auc 0.71 < 0.80")
    (d,), _ = run([w])
    assert d.retrain and any("roc_auc 0.71" in r for r in d.reasons)


def test_degraded_quality_still_respects_cooldown_and_min_rows():
    w = WindowSummary(rows=100, drift_share=0.0, quality_degraded=True, quality_reason="mae up")
    (d,), _ = run([w])
    assert not d.retrain and d.blocks


def test_data_quality_failure_gives_no_verdict_and_keeps_the_streak():
    bad = WindowSummary(rows=1000, drift_share=0.9, quality_failed=True, quality_reason="column 'age' missing")
    ds, state = run([drifted(), bad])
    assert ds[1].verdict == "no_decision" and ds[1].drifted is None and not ds[1].retrain
    assert "column 'age' missing" in ds[1].reasons[-1]
    assert state.consecutive_drifted == 1 and state.new_rows == 1000


def test_empty_window_gives_no_decision_and_is_recorded():
    ds, state = run([drifted(), WindowSummary(rows=0), drifted()])
    assert ds[1].verdict == "no_decision" and "empty window" in ds[1].reasons[0]
    assert ds[2].retrain  # the empty window neither counted nor broke the streak
    assert [h["verdict"] for h in state.history] == ["hold", "no_decision", "retrain"]


# --- state -------------------------------------------------------------------------------------


def test_state_round_trips_through_json_and_input_is_not_mutated():
    before = PolicyState()
    (_, d2), state = run([drifted(), drifted()], state=before)
    assert before.history == [] and before.consecutive_drifted == 0
    again = PolicyState.from_json(state.to_json())
    assert again == state
    assert d2.to_dict()["at"] == (T0 + timedelta(hours=1)).isoformat()


def test_history_is_capped():
    cfg = CFG.model_copy(update={"history_size": 3})
    _, state = run([calm()] * 5, cfg=cfg)
    assert len(state.history) == 3


def test_naive_clock_is_taken_as_utc():
    d, _ = decide(PolicyState(), calm(), CFG, datetime(2026, 1, 1, 12, 0))
    assert d.at == T0


# --- store, concurrency, storms ----------------------------------------------------------------


ONE_WINDOW = CFG.model_copy(update={"consecutive_windows": 1})  # every drifted window triggers on its own


def _decide_in_process(path: str, barrier, out) -> None:
    barrier.wait()
    d = decide_and_record(PolicyStore(path), drifted(), ONE_WINDOW, T0)
    out.put(d.retrain)


def test_two_concurrent_monitor_processes_trigger_once(tmp_path: Path):
    path = tmp_path / "policy.json"
    store = PolicyStore(path)
    ctx = mp.get_context("fork")
    barrier, out = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_decide_in_process, args=(str(path), barrier, out)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(20)
    results = sorted(out.get(timeout=5) for _ in procs)
    assert results == [False, True]
    state = store.load()
    assert [h["verdict"] for h in state.history] == ["retrain", "hold"]
    assert any("already requested" in r for r in state.history[-1]["reasons"])


def test_ten_triggers_in_a_minute_start_one_training(tmp_path: Path):
    store = PolicyStore(tmp_path / "policy.json")
    starts = [should_start_training(store, T0 + timedelta(seconds=6 * i), timedelta(minutes=5)) for i in range(10)]
    assert starts.count(True) == 1 and starts[0]


def test_concurrent_trigger_storm_starts_one_training(tmp_path: Path):
    path = tmp_path / "policy.json"
    results: list[bool] = []
    gate = threading.Barrier(10)

    def trigger(i: int) -> None:
        gate.wait()
        results.append(should_start_training(PolicyStore(path), T0 + timedelta(seconds=i), 300.0))

    threads = [threading.Thread(target=trigger, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert len(results) == 10 and results.count(True) == 1


def test_training_start_after_dedupe_window_and_finish(tmp_path: Path):
    store = PolicyStore(tmp_path / "policy.json")
    assert should_start_training(store, T0, 300)
    assert not should_start_training(store, T0 + timedelta(minutes=10), 300)  # still running
    record_training_finished(store, T0 + timedelta(minutes=20), succeeded=True)
    assert not should_start_training(store, T0 + timedelta(minutes=24, seconds=59), timedelta(minutes=25))
    assert should_start_training(store, T0 + timedelta(minutes=25), timedelta(minutes=25))


def test_a_training_that_trains_nothing_frees_the_slot_and_leaves_no_start(tmp_path: Path):
    store = PolicyStore(tmp_path / "policy.json")
    assert should_start_training(store, T0, 300)
    record_training_finished(store, T0 + timedelta(seconds=1), succeeded=False, trained=False)  # no labelled rows
    state = store.load()
    assert state.in_flight is None and state.last_training_start_at is None
    assert should_start_training(store, T0 + timedelta(seconds=2), 300)  # a real request is not folded into it
    record_training_finished(store, T0 + timedelta(minutes=9), succeeded=True)
    assert should_start_training(store, T0 + timedelta(minutes=10), 300)
    record_training_finished(store, T0 + timedelta(minutes=10, seconds=1), succeeded=False, trained=False)
    assert store.load().last_training_start_at == T0 + timedelta(seconds=2)  # the last real start again
    assert not should_start_training(store, T0 + timedelta(seconds=30), 300)


def test_a_failed_training_or_one_whose_run_died_is_not_a_training_to_fold_into(tmp_path: Path):
    store = PolicyStore(tmp_path / "policy.json")
    assert should_start_training(store, T0, 300, run_id="run-a")
    record_training_finished(store, T0 + timedelta(seconds=30), succeeded=False)  # trained, but failed
    assert should_start_training(store, T0 + timedelta(seconds=31), 300, run_id="run-b")  # not folded into a failure
    # run-b's worker is killed: it never reports back, and its lock would hold for training_lock_minutes
    alive = {"run-b": False}
    assert not should_start_training(store, T0 + timedelta(minutes=10), 300, run_id="run-c")  # unknown: still held
    assert not should_start_training(store, T0 + timedelta(minutes=10), 300, run_id="run-c",
                                     is_alive=lambda _r: None)  # the API could not say
    assert should_start_training(store, T0 + timedelta(minutes=10), 300, run_id="run-c", is_alive=alive.get)
    assert store.load().in_flight.run_id == "run-c"
    assert not should_start_training(store, T0 + timedelta(minutes=11), 300, run_id="run-d",
                                     is_alive=lambda _r: True)  # a live run keeps its slot


def test_one_clock_for_every_guard_wall_or_data_time():
    data_time = datetime(2023, 6, 30, 23, 0)
    assert clock_at(data_time)() == data_time.replace(tzinfo=UTC) == clock_at(data_time)()
    assert abs(clock_at(None)() - datetime.now(UTC)) < timedelta(seconds=5)
    ok, state = start_training(PolicyState(), clock_at(data_time)(), timedelta(minutes=5))
    assert ok and state.last_training_start_at == data_time.replace(tzinfo=UTC)


def test_policy_requested_training_may_start_once():
    (_, d), state = run([drifted(), drifted()])
    assert d.retrain
    ok, state = start_training(state, T0 + timedelta(hours=1, seconds=5), timedelta(minutes=5))
    again, _ = start_training(state, T0 + timedelta(hours=1, seconds=10), timedelta(minutes=5))
    assert ok and not again and state.in_flight is not None and state.in_flight.started


def test_corrupt_state_file_is_a_clear_error(tmp_path: Path):
    path = tmp_path / "policy.json"
    path.write_text("{not json")
    with pytest.raises(MLOpsError, match="move it aside"):
        PolicyStore(path).load()


def test_the_locked_state_file_reads_a_default_writes_atomically_and_times_out(tmp_path: Path):
    """mlops.core.state.LockedJsonFile, the one locked JSON file the window state and the policy share."""
    from mlops.core.state import LockedJsonFile

    f = LockedJsonFile(tmp_path / "s.json", "test state", dict, timeout_seconds=0.05)
    assert f.read() == {} and not f.path.exists()
    with f.transaction() as tx:
        tx.data["n"] = 1
    with pytest.raises(RuntimeError), f.transaction() as tx:
        tx.data["n"] = 2
        raise RuntimeError("an error inside the block")
    assert f.read() == {"n": 1} and [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    with f.locked(), pytest.raises(MLOpsError, match="stayed locked for 0.05 s"):
        LockedJsonFile(f.path, "test state", dict, timeout_seconds=0.05).read()


class _Stub:
    """Predicts the label right 80% of the time, whatever the holdout said (0.95)."""

    classes_ = [0, 1]

    def predict(self, X):
        import numpy as np

        return ((np.arange(len(X)) % 5 == 0) ^ X["y_hint"].to_numpy().astype(bool)).astype(int)

    def predict_proba(self, X):
        import numpy as np

        p = self.predict(X).astype(float)
        return np.column_stack([1.0 - p, p])


def test_live_quality_compares_with_the_champions_first_labelled_windows_not_its_holdout():
    import numpy as np
    import pandas as pd

    from mlops.core.config import parse_config
    from mlops.monitoring.live_quality import live_quality
    from mlops.monitoring.policy import live_baseline, with_live_metric
    from tests.conftest import small_config

    raw = small_config(monitoring={"min_labelled_rows": 50, "policy": {"live_baseline_windows": 2}})
    raw["gate"].update(primary_metric="accuracy", thresholds={}, slices=[])
    cfg = parse_config(raw)
    y = np.tile([0, 1], 250)
    rows = pd.DataFrame({"y_hint": y, "churned": y})
    holdout = {"metric.accuracy": "0.95"}  # live data never matches it: 0.80 is 15 points worse
    state = PolicyState()
    verdicts = []
    for i in range(4):
        base = live_baseline(state, "1", cfg.monitoring.policy.live_baseline_windows)
        live = live_quality(rows, "churned", _Stub(), cfg, holdout, ["y_hint"], None, base)
        verdicts.append((live.degraded, live.compared_with))
        summary = with_live_metric(WindowSummary(rows=500, drift_share=0.0), "1", live)
        _, state = decide(state, summary, cfg.monitoring.policy, T0 + timedelta(hours=i))
    # the first two windows fall back to the holdout (degraded); from the third, the live baseline decides
    assert verdicts == [(True, "overall"), (True, "overall"), (False, "live_baseline"), (False, "live_baseline")]
    assert state.live_baselines == {"1": [0.8, 0.8]}
    assert PolicyState.from_json(state.to_json()).live_baselines == {"1": [0.8, 0.8]}


def test_a_new_champion_is_judged_against_the_live_level_of_the_one_it_replaced_until_it_has_its_own():
    from mlops.monitoring.policy import live_baseline

    state = PolicyState(live_baselines={"1": [60.0, 64.0]})
    own = live_baseline(state, "1", 2)
    assert own is not None and own.value == 62.0 and "the champion's first 2" in own.label
    handed = live_baseline(state, "2", 2)  # v2 was just promoted: v1's live level is the bar
    assert handed is not None and handed.value == 62.0 and "of v1, the champion before" in handed.label
    state.live_baselines["2"] = [50.0, 52.0]
    assert live_baseline(state, "2", 2).value == 51.0  # its own, once formed
    assert live_baseline(state, "3", 2).label.startswith("live baseline of v2")  # the latest formed one
    assert live_baseline(PolicyState(), "1", 2) is None and live_baseline(state, "2", 0) is None


def test_the_training_slot_is_released_as_the_block_left_it_and_a_refused_claim_releases_nothing(tmp_path: Path):
    """policy.training_slot: granted once per burst; a block that trained and succeeded restarts the cooldown, one
    that raised after training started frees the slot with no cooldown; a refusal names the holder and leaves its
    slot alone."""
    store, cfg = PolicyStore(tmp_path / "policy.json"), RetrainPolicyConfig(dedupe_seconds=300)
    with training_slot(store, clock_at(T0), cfg, "run-a", "churn") as slot:
        assert slot.granted
        with training_slot(store, clock_at(T0 + timedelta(seconds=5)), cfg, "run-b", "churn") as refused:
            assert not refused.granted and "flow run run-a" in refused.refusal and "300 s" in refused.refusal
        assert store.load().in_flight.run_id == "run-a"  # the refusal released nothing
        slot.trained, slot.succeeded = True, True
    state = store.load()
    assert state.in_flight is None and state.last_retrain_at == T0
    later = T0 + timedelta(hours=1)
    with pytest.raises(RuntimeError), training_slot(store, clock_at(later), cfg, "run-c", "churn") as slot:
        assert slot.granted
        slot.trained = True
        raise RuntimeError("the training crashed")
    state = store.load()
    assert state.in_flight is None and state.last_retrain_at == T0  # released, not a success
    assert state.last_training_start_at == T0  # a failed training is no start to fold the next request into
