import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from mlops.core.config import GateConfig
from mlops.training.evaluation import (
    BootstrapResult,
    Predictions,
    metric_value,
    paired_bootstrap,
    slice_metrics,
    trivial_metric,
)
from mlops.training.gate import check_champion, check_slice_usefulness, check_slices, check_thresholds, decide, fmt


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
    ok = check_slices("roc_auc", "region", {"north": (0.79, 100), "south": (0.85, 100)}, champion, 0.02, "absolute")
    bad = check_slices("roc_auc", "region", {"north": (0.77, 100), "south": (0.85, 100)}, champion, 0.02, "absolute")
    assert ok[0].passed and not bad[0].passed and "region=north" in bad[0].detail
    assert "0.02 roc_auc points" in bad[0].detail


def test_slices_are_never_judged_against_the_overall_metric() -> None:
    with pytest.raises(TypeError):
        check_slices("roc_auc", "region", {"north": (0.70, 100)}, 0.80, 0.05)  # type: ignore[arg-type]


@pytest.mark.parametrize(("challenger", "ok"), [(0.737, True), (0.735, False)])
def test_relative_slice_tolerance_is_a_share_of_the_champion(challenger: float, ok: bool) -> None:
    # 8% of the champion's 0.80 is 0.064: 0.737 is within it, 0.735 is not
    [c] = check_slices("roc_auc", "plan", {"basic": (challenger, 200)}, {"basic": (0.80, 200)}, 0.08)
    assert c.passed is ok
    assert "within 8% of the champion's 0.8000" in c.detail


@pytest.mark.parametrize(("challenger", "ok"), [(12.4, True), (12.6, False)])
def test_absolute_slice_tolerance_for_rmse_is_in_target_units(challenger: float, ok: bool) -> None:
    # lower is better: the challenger may be at most 0.5 target units worse than the champion's 12.0
    [c] = check_slices("rmse", "region", {"3": (challenger, 80)}, {"3": (12.0, 80)}, 0.5, "absolute")
    assert c.passed is ok
    assert "0.5 target units" in c.detail


@pytest.mark.parametrize(("auc", "ok"), [(0.56, True), (0.50, False), (0.44, False)])
def test_first_model_slice_must_beat_a_trivial_baseline_not_the_overall(auc: float, ok: bool) -> None:
    [c] = check_slice_usefulness("roc_auc", "contract", {"monthly": (auc, 500)}, {"monthly": 0.5}, overall=0.837)
    assert c.passed is ok
    assert "overall roc_auc 0.8370, for information" in c.detail


@pytest.mark.parametrize(("metric", "expected"), [
    ("roc_auc", 0.5), ("accuracy", 0.75), ("r2", 0.0), ("f1", 2 * 0.25 / 1.25),
    ("log_loss", -(0.75 * np.log(0.75) + 0.25 * np.log(0.25))),
])
def test_trivial_within_slice_baselines(metric: str, expected: float) -> None:
    y = np.array([0, 0, 0, 1] * 25)
    assert trivial_metric(metric, y, [0, 1], 1) == pytest.approx(expected)


def test_trivial_rmse_is_the_slice_spread() -> None:
    y = np.array([1.0, 3.0, 5.0, 7.0])
    assert trivial_metric("rmse", y) == pytest.approx(np.std(y))
    assert trivial_metric("rmse", y) == pytest.approx(
        metric_value("rmse", y, Predictions(np.full(4, y.mean()), None, None)))


def test_numbers_never_print_as_negative_zero() -> None:
    assert fmt(-0.00001) == "0.0000" and fmt(-0.00001, sign=True) == "+0.0000"
    assert fmt(-0.00006, sign=True) == "-0.0001" and fmt(0.12345) == "0.1235"
    b = BootstrapResult("roc_auc", 0.8123, 0.81231, -0.00001, -0.00002, 0.00001, 0.5, 200)
    checks = check_champion(b, GateConfig())
    assert all("-0.0000" not in c.detail and "-0 " not in c.detail for c in checks)
    assert "improvement +0.0000" in checks[1].detail
    [t] = check_thresholds({"rmse": -0.00001}, {"rmse": 1.0})
    assert t.detail.startswith("0.0000 meets")


def test_integer_valued_slice_values_print_without_a_decimal_point() -> None:
    import pandas as pd

    y = np.array([0, 1] * 60)
    frame = pd.DataFrame({"floors": [3.0, 4.0, np.nan] * 40, "rate": [0.5, 1.5, 2.5] * 40})
    p = Predictions(y.copy(), None, None)
    assert set(slice_metrics("accuracy", frame, "floors", y, p, min_rows=10)) == {"3", "4", "<null>"}
    assert set(slice_metrics("accuracy", frame, "rate", y, p, min_rows=10)) == {"0.5", "1.5", "2.5"}


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


# ---- the whole gate on a holdout (mlops.training.assessment.judge) ------------------------------------------

def _cfg(task: str = "classification", **extra: object):
    from mlops.core.config import parse_config

    raw = {"name": "t", "task": task, "source": {"kind": "generated"}, "target": "y",
           "models": [{"family": "logistic_regression" if task == "classification" else "ridge"}],
           "registry": {"model_name": "m"}}
    raw.update(extra)
    return parse_config(raw)


def _segmented(rows: int, seed: int):
    """A slice column that is itself predictive: the segment moves the base rate a lot, x adds a little."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    segment = rng.choice(["a", "b", "c"], rows)
    x = rng.normal(0, 1, rows)
    logit = np.select([segment == "a", segment == "b"], [-2.5, 0.0], 2.5) + 0.8 * x
    y = (rng.uniform(size=rows) < 1 / (1 + np.exp(-logit))).astype(int)
    return pd.DataFrame({"segment": segment, "x": x, "noise": rng.normal(0, 1, rows), "y": y})


class _Scripted:
    """A 'model' with a fixed rule: the score follows x, except on one segment where it is noise
    (or, `inverted`, where it ranks the rows backwards)."""

    classes_ = np.array([0, 1])

    def __init__(self, broken: str | None = None, inverted: bool = False) -> None:
        self.broken, self.inverted = broken, inverted

    def predict_proba(self, X):
        s = 1 / (1 + np.exp(-(np.select([X["segment"] == "a", X["segment"] == "b"], [-2.5, 0.0], 2.5) + 0.8 * X["x"])))
        if self.broken:
            junk = 1 - s if self.inverted else (np.abs(X["noise"].to_numpy()) * 1000) % 1
            s = np.where(X["segment"] == self.broken, junk, s)
        return np.column_stack([1 - s, s])

    def predict(self, X):
        return (self.predict_proba(X)[:, 1] > 0.5).astype(int)


def test_predictive_slice_column_does_not_reject_a_good_first_model() -> None:
    from sklearn.compose import make_column_transformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    from mlops.training.assessment import evaluate, judge

    train, test = _segmented(6000, 1), _segmented(2000, 2)
    cfg = _cfg(gate={"slices": [{"column": "segment", "min_rows": 100}], "slice_tolerance": 0.05})
    pre = make_column_transformer((OneHotEncoder(), ["segment"]), ("passthrough", ["x", "noise"]))
    model = make_pipeline(pre, LogisticRegression(max_iter=1000)).fit(train.drop(columns="y"), train["y"])
    ev = evaluate(model, test, cfg, None)
    per_slice = slice_metrics("roc_auc", test, "segment", test["y"].to_numpy(), ev.predictions, 100)
    # every slice is far below the overall AUC: judged against it (the old rule) the model failed
    assert all(ev.metrics["roc_auc"] - auc > 0.05 for auc, _ in per_slice.values())
    verdict = judge(ev, None, None, test, cfg, model=model, train=train)
    [sl] = [c for c in verdict.checks if c.name == "slice segment"]
    assert sl.passed, sl.detail
    assert "for information" in sl.detail and verdict.passed, verdict.reasons


def test_first_model_useless_on_one_slice_is_rejected() -> None:
    from mlops.training.assessment import evaluate, judge

    test = _segmented(3000, 3)
    cfg = _cfg(gate={"slices": [{"column": "segment", "min_rows": 100}]})
    ev = evaluate(_Scripted(broken="b", inverted=True), test, cfg, None)
    verdict = judge(ev, None, None, test, cfg)
    [sl] = [c for c in verdict.checks if c.name == "slice segment"]
    assert not sl.passed and "segment=b" in sl.detail and "segment=a" not in sl.detail
    assert not verdict.passed


def test_challenger_that_regresses_on_one_slice_fails_against_the_champion() -> None:
    from mlops.training.assessment import evaluate, judge

    test = _segmented(3000, 4)
    cfg = _cfg(gate={"slices": [{"column": "segment", "min_rows": 100}], "slice_tolerance": 0.08})
    same = judge(evaluate(_Scripted(), test, cfg, None), _Scripted(), "1", test, cfg)
    [ok] = [c for c in same.checks if c.name == "slice segment"]
    assert ok.passed and "within 8% of the champion's" in ok.detail
    worse = judge(evaluate(_Scripted(broken="c"), test, cfg, None), _Scripted(), "1", test, cfg)
    [bad] = [c for c in worse.checks if c.name == "slice segment"]
    assert not bad.passed and "segment=c" in bad.detail and "segment=a" not in bad.detail
    assert "within 8% of the champion's" in bad.detail and not worse.passed


def _yes_no(rows: int, seed: int):
    import pandas as pd

    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, rows)
    y = np.where(rng.uniform(size=rows) < 1 / (1 + np.exp(-(1.5 * x - 1.0))), "yes", "no")
    return pd.DataFrame({"x": x, "y": y})


def test_positive_class_decides_f1_and_is_stated_in_the_verdict() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score

    from mlops.training.assessment import evaluate, judge

    train, test = _yes_no(3000, 1), _yes_no(1000, 2)
    model = LogisticRegression().fit(train[["x"]], train["y"])
    default = evaluate(model, test, _cfg(), None)
    chosen = evaluate(model, test, _cfg(positive_class="no"), None)
    pred = model.predict(test[["x"]])
    assert default.metrics["f1"] == pytest.approx(f1_score(test["y"], pred, pos_label="yes"))
    assert chosen.metrics["f1"] == pytest.approx(f1_score(test["y"], pred, pos_label="no"))
    assert chosen.metrics["f1"] != pytest.approx(default.metrics["f1"])
    assert chosen.metrics["roc_auc"] == pytest.approx(default.metrics["roc_auc"])  # AUC is symmetric
    verdict = judge(chosen, None, None, test, _cfg(positive_class="no"), model=model, train=train)
    [pc] = [c for c in verdict.checks if c.name == "positive class"]
    assert "'no' as the positive class" in pc.detail and "set by positive_class" in pc.detail
    [pc] = [c for c in judge(default, None, None, test, _cfg(), model=model, train=train).checks
            if c.name == "positive class"]
    assert "'yes'" in pc.detail and "the larger label" in pc.detail


def test_holdout_metrics_take_the_positive_class_explicitly() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score

    from mlops.training.evaluation import holdout_metrics, predict

    data = _yes_no(2000, 3)
    model = LogisticRegression().fit(data[["x"]], data["y"])
    p = predict(model, data[["x"]], "classification")  # no positive_class: the larger label, as before
    y = data["y"].to_numpy()
    assert holdout_metrics("classification", y, p)["f1"] == pytest.approx(f1_score(y, p.y_pred, pos_label="yes"))
    assert holdout_metrics("classification", y, p, positive_class="no")["f1"] == pytest.approx(
        f1_score(y, p.y_pred, pos_label="no"))


def test_positive_class_that_is_not_a_label_is_one_sentence() -> None:
    from sklearn.linear_model import LogisticRegression

    from mlops.core.errors import DataError
    from mlops.training.assessment import evaluate

    data = _yes_no(500, 4)
    model = LogisticRegression().fit(data[["x"]], data["y"])
    with pytest.raises(DataError) as err:
        evaluate(model, data, _cfg(positive_class="maybe"), None)
    msg = str(err.value)
    assert "'maybe'" in msg and "['no', 'yes']" in msg and "\n" not in msg


@pytest.mark.parametrize(("labels", "configured", "expected"), [
    ([0, 1], None, 1), ([False, True], None, True), (["no", "yes"], None, "yes"), ([0, 1], "0", 0),
    ([0, 1], True, 1), (["B", "M"], "B", "B"),
])
def test_positive_label_resolution(labels: list, configured: object, expected: object) -> None:
    from mlops.training.evaluation import positive_label

    got = positive_label(labels, configured)
    assert got == expected and type(got) is type(expected)


def test_a_missed_threshold_is_waived_only_against_a_champion_that_misses_it_by_more_and_scores_worse():
    from mlops.training.evaluation import BootstrapResult
    from mlops.training.gate import check_thresholds, decide, waive_for_failing_champion

    thresholds = {"r2": 0.5, "rmse": 200.0}
    mine = {"r2": 0.48, "rmse": 150.0}
    better = BootstrapResult("rmse", 150.0, 240.0, 90.0, 60.0, 120.0, 0.0, 1000)
    checks = check_thresholds(mine, thresholds)
    waive_for_failing_champion(checks, mine, {"r2": 0.05, "rmse": 240.0}, thresholds, better, "9")
    assert decide(checks).passed  # after a regime change: the champion is far below the floor too
    assert "waived: champion v9 has 0.0500" in next(c.detail for c in checks if c.name == "threshold r2")

    # better on the point estimate only (as right after an abrupt change that both models are blind to): the floor
    # is waived, and the comparison with the champion (check_champion, beside it in the gate) decides
    alike = BootstrapResult("rmse", 189.3, 189.4, 0.1, -0.7, 0.9, 0.43, 1000)
    checks = check_thresholds(mine, thresholds)
    waive_for_failing_champion(checks, mine, {"r2": 0.05, "rmse": 240.0}, thresholds, alike, "9")
    assert decide(checks).passed and "comparison with it decides" in " ".join(c.detail for c in checks)

    for champion, b in [({"r2": 0.6, "rmse": 140.0}, better),  # the champion meets the floor: the floor holds
                        ({"r2": 0.05, "rmse": 240.0},  # the challenger scores worse: the floor holds
                         BootstrapResult("rmse", 150.0, 149.0, -1.0, -5.0, 3.0, 0.6, 1000))]:
        checks = check_thresholds(mine, thresholds)
        waive_for_failing_champion(checks, mine, champion, thresholds, b, "9")
        assert not decide(checks).passed and "waived" not in " ".join(c.detail for c in checks)
