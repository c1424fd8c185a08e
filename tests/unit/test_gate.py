import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from mlops.config import GateConfig
from mlops.evaluation import Predictions, metric_value, paired_bootstrap, slice_metrics
from mlops.gate import check_champion, check_slices, check_thresholds, decide


def _clf(y: np.ndarray, noise: float, seed: int) -> Predictions:
    rng = np.random.default_rng(seed)
    score = np.clip(y * 0.6 + 0.2 + rng.normal(0, noise, len(y)), 0.001, 0.999)
    return Predictions((score > 0.5).astype(int), np.column_stack([1 - score, score]), [0, 1])


@pytest.fixture
def y() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 2, 2000)


def test_fast_auc_matches_sklearn(y: np.ndarray) -> None:
    p = _clf(y, 0.4, 1)
    assert metric_value("roc_auc", y, p) == pytest.approx(roc_auc_score(y, p.proba[:, 1]))


@pytest.mark.parametrize(("value", "ok"), [(0.80, True), (0.7999, False)])
def test_threshold_higher_is_better(value: float, ok: bool) -> None:
    [c] = check_thresholds({"roc_auc": value}, {"roc_auc": 0.80})
    assert c.passed is ok


@pytest.mark.parametrize(("value", "ok"), [(10.0, True), (10.01, False)])
def test_threshold_lower_is_better(value: float, ok: bool) -> None:
    [c] = check_thresholds({"rmse": value}, {"rmse": 10.0})
    assert c.passed is ok


def test_nan_metric_fails_threshold() -> None:
    [c] = check_thresholds({"roc_auc": float("nan")}, {"roc_auc": 0.5})
    assert not c.passed


def test_clearly_better_challenger_passes(y: np.ndarray) -> None:
    b = paired_bootstrap("roc_auc", y, _clf(y, 0.25, 1), _clf(y, 0.6, 2), 300, 0.95, 0)
    assert b.delta > 0 and b.ci_low > 0
    assert all(c.passed for c in check_champion(b, GateConfig(min_improvement=0.01)))


def test_clearly_worse_challenger_is_rejected(y: np.ndarray) -> None:
    b = paired_bootstrap("roc_auc", y, _clf(y, 0.6, 2), _clf(y, 0.25, 1), 300, 0.95, 0)
    checks = check_champion(b, GateConfig())
    assert not any(c.passed for c in checks)


def test_identical_challenger_does_not_beat_champion(y: np.ndarray) -> None:
    p = _clf(y, 0.4, 1)
    b = paired_bootstrap("roc_auc", y, p, p, 200, 0.95, 0)
    not_worse, beats = check_champion(b, GateConfig())
    assert not_worse.passed and not beats.passed


def test_min_improvement_on_both_sides(y: np.ndarray) -> None:
    b = paired_bootstrap("roc_auc", y, _clf(y, 0.35, 1), _clf(y, 0.45, 2), 200, 0.95, 0)
    _, beats_low = check_champion(b, GateConfig(min_improvement=b.delta - 1e-6))
    _, beats_high = check_champion(b, GateConfig(min_improvement=b.delta + 1e-6))
    assert beats_low.passed and not beats_high.passed


def test_lower_is_better_metric_direction() -> None:
    rng = np.random.default_rng(0)
    y = rng.normal(0, 1, 500)
    good = Predictions(y + rng.normal(0, 0.1, 500), None, None)
    bad = Predictions(y + rng.normal(0, 1.0, 500), None, None)
    b = paired_bootstrap("rmse", y, good, bad, 200, 0.95, 0)
    assert b.delta > 0 and b.ci_low > 0  # improvement is positive although rmse went down


def test_slices_regression_both_sides() -> None:
    champion = {"north": (0.80, 100), "south": (0.80, 100)}
    ok = check_slices("roc_auc", "region", {"north": (0.79, 100), "south": (0.85, 100)}, champion, 0.02)
    bad = check_slices("roc_auc", "region", {"north": (0.77, 100), "south": (0.85, 100)}, champion, 0.02)
    assert ok[0].passed and not bad[0].passed and "region=north" in bad[0].detail
    overall = check_slices("roc_auc", "region", {"north": (0.70, 100)}, 0.80, 0.05)
    assert not overall[0].passed and "vs overall" in overall[0].detail


def test_slice_metrics_skips_small_slices() -> None:
    import pandas as pd

    y = np.array([0, 1] * 50)
    frame = pd.DataFrame({"g": ["a"] * 90 + ["b"] * 10})
    out = slice_metrics("accuracy", frame, "g", y, Predictions(y.copy(), None, None), min_rows=20)
    assert set(out) == {"a"} and out["a"] == (1.0, 90)


def test_verdict_passes_only_when_every_check_passes() -> None:
    a = check_thresholds({"roc_auc": 0.9}, {"roc_auc": 0.8})
    b = check_thresholds({"roc_auc": 0.7}, {"roc_auc": 0.8})
    assert decide(a).passed and not decide(a + b).passed
    assert any(r.startswith("FAIL") for r in decide(a + b).reasons)
