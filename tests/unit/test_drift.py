"""Drift engine: verdicts on tiny frames, edge cases, and agreement with Evidently."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.stats import ks_2samp, wasserstein_distance

from mlops.core.config import MonitoringConfig
from mlops.core.errors import DataError
from mlops.monitoring.drift import compute_drift, sample_frames
from mlops.monitoring.report import evidently_full_baseline, evidently_report

CFG = MonitoringConfig(sample_size=5_000, seed=3)
NUM = ["age", "income", "visits"]
CAT = ["plan", "region"]


def frame(n: int, seed: int, shift: float = 0.0, plan_p: tuple[float, ...] = (0.6, 0.3, 0.1)) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "age": rng.normal(40 + shift * 12, 12, n),
        "income": rng.lognormal(10, 0.5, n),
        "visits": rng.poisson(30, n).astype(float),
        "plan": rng.choice(["basic", "pro", "team"], n, p=list(plan_p)),
        "region": rng.choice(["north", "south", "east", "west"], n),
    })


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return frame(4_000, seed=1)


def test_undrifted_samples_show_no_drift(reference):
    res = compute_drift(reference, frame(4_000, seed=2), NUM, CAT, CFG)
    assert res.drifted_columns == [] and not res.dataset_drift and res.drift_share == 0.0
    assert res.evaluated_columns == 5 and all(c.score is not None for c in res.columns)
    assert {c.method for c in res.columns} == {"wasserstein", "jensenshannon"}


def test_shifted_column_drifts_alone(reference):
    res = compute_drift(reference, frame(4_000, seed=2, shift=0.5), NUM, CAT, CFG)
    assert res.drifted_columns == ["age"]
    assert res.column("age").score == pytest.approx(0.5, abs=0.05)
    assert res.drift_share == pytest.approx(1 / 5) and not res.dataset_drift


def test_category_mix_change_drifts(reference):
    res = compute_drift(reference, frame(4_000, seed=2, plan_p=(0.2, 0.3, 0.5)), NUM, CAT, CFG)
    assert res.drifted_columns == ["plan"] and res.column("plan").score > 0.1


@pytest.mark.parametrize(("cat_method", "num_method"), [("psi", "psi"), ("chisquare", "ks"), ("jensenshannon", "jensenshannon")])
def test_other_methods_catch_the_same_drift(reference, cat_method, num_method):
    cfg = CFG.model_copy(update={"categorical_method": cat_method, "numeric_method": num_method})
    calm = compute_drift(reference, frame(4_000, seed=2), ["age"], ["plan"], cfg)
    moved = compute_drift(reference, frame(4_000, seed=2, shift=0.5, plan_p=(0.2, 0.3, 0.5)), ["age"], ["plan"], cfg)
    assert calm.drifted_columns == []
    assert moved.drifted_columns == ["age", "plan"]


def test_many_drifted_columns_make_dataset_drift(reference):
    cur = frame(4_000, seed=2, shift=1.0, plan_p=(0.1, 0.3, 0.6))
    cur["income"] *= 2
    res = compute_drift(reference, cur, NUM, CAT, CFG)
    assert set(res.drifted_columns) == {"age", "income", "plan"}
    assert res.drift_share == pytest.approx(0.6) and res.dataset_drift


def test_scores_follow_the_textbook_definitions():
    rng = np.random.default_rng(5)
    x, y = rng.normal(0, 2, 3_000), rng.normal(0.3, 2.5, 2_000)
    ref, cur = pd.DataFrame({"v": x}), pd.DataFrame({"v": y})
    w = compute_drift(ref, cur, ["v"], [], CFG).column("v").score
    assert w == pytest.approx(wasserstein_distance(x, y) / np.std(x), rel=1e-9)
    ks = compute_drift(ref, cur, ["v"], [], CFG.model_copy(update={"numeric_method": "ks"})).column("v").score
    assert ks == pytest.approx(ks_2samp(x, y).pvalue, rel=1e-9)
    a = pd.DataFrame({"c": ["a"] * 50 + ["b"] * 30 + ["c"] * 20})
    b = pd.DataFrame({"c": ["a"] * 20 + ["b"] * 30 + ["c"] * 40 + ["d"] * 10})
    js = compute_drift(a, b, [], ["c"], CFG).column("c").score
    assert js == pytest.approx(jensenshannon([0.5, 0.3, 0.2, 0.0], [0.2, 0.3, 0.4, 0.1]), rel=1e-9)


def test_nans_are_dropped_and_their_share_reported(reference):
    cur = frame(4_000, seed=2)
    cur.loc[cur.index[:1_000], "age"] = np.nan
    cur.loc[cur.index[1_000:1_010], "age"] = np.inf
    cur.loc[cur.index[:400], "plan"] = None
    res = compute_drift(reference, cur, NUM, CAT, CFG)
    age, plan = res.column("age"), res.column("plan")
    assert age.current_null_share == pytest.approx(1_010 / 4_000) and age.reference_null_share == 0.0
    assert age.current_values == 2_990 and not age.drifted
    assert plan.current_null_share == pytest.approx(0.1) and plan.current_values == 3_600 and not plan.drifted


def test_empty_column_gets_no_verdict_and_leaves_the_share(reference):
    cur = frame(4_000, seed=2, shift=0.5)
    cur["region"] = None
    cur["visits"] = np.nan
    res = compute_drift(reference, cur, NUM, CAT, CFG)
    assert res.column("region").status == "empty_current" and res.column("visits").status == "empty_current"
    assert res.skipped_columns == ["visits", "region"] and res.evaluated_columns == 3
    assert res.drift_share == pytest.approx(1 / 3)
    assert "No verdict" in res.to_markdown()


def test_constant_reference_column():
    ref = pd.DataFrame({"k": np.full(2_000, 7.0), "x": np.arange(2_000.0)})
    same = compute_drift(ref, ref.copy(), ["k", "x"], [], CFG.model_copy(update={"discrete_max_unique": 0}))
    assert same.column("k").score == 0.0 and not same.column("k").drifted
    assert same.column("k").note == "constant in reference"
    moved = ref.copy()
    moved["k"] = 7.5
    res = compute_drift(ref, moved, ["k"], [], CFG.model_copy(update={"discrete_max_unique": 0}))
    assert res.column("k").drifted and res.column("k").score == pytest.approx(0.5 / 0.001)


def test_unseen_categories_are_listed_and_drift(reference):
    cur = frame(4_000, seed=2)
    cur.loc[cur.index[:800], "region"] = "mars"
    cur.loc[cur.index[800:900], "region"] = "venus"
    col = compute_drift(reference, cur, NUM, CAT, CFG).column("region")
    assert col.drifted and col.unseen_categories == ["mars", "venus"] and col.unseen_count == 2
    chi = compute_drift(reference, cur, [], ["region"], CFG.model_copy(update={"categorical_method": "chisquare"}))
    assert chi.column("region").score == 0.0 and chi.column("region").drifted


def test_low_cardinality_numeric_is_compared_as_categories():
    rng = np.random.default_rng(0)
    ref = pd.DataFrame({"rooms": rng.integers(1, 4, 3_000)})
    cur = pd.DataFrame({"rooms": rng.choice([1, 2, 3], 3_000, p=[0.1, 0.2, 0.7])})
    col = compute_drift(ref, cur, ["rooms"], [], CFG).column("rooms")
    assert col.discrete and col.method == "jensenshannon" and col.drifted


def test_sampling_is_seeded_recorded_and_deterministic():
    ref, cur = frame(30_000, seed=1), frame(30_000, seed=2)
    a = compute_drift(ref, cur, NUM, CAT, CFG)
    b = compute_drift(ref, cur, NUM, CAT, CFG)
    c = compute_drift(ref, cur, NUM, CAT, CFG.model_copy(update={"seed": 4}))
    assert (a.seed, a.sample_size, a.reference_sampled_rows, a.current_sampled_rows) == (3, 5_000, 5_000, 5_000)
    assert (a.reference_rows, a.current_rows) == (30_000, 30_000)
    assert [x.score for x in a.columns] == [x.score for x in b.columns]
    assert [x.score for x in a.columns] != [x.score for x in c.columns]
    r1, _ = sample_frames(ref, cur, NUM, CFG)
    r2, _ = sample_frames(ref, frame(10_000, seed=9), NUM, CFG)
    pd.testing.assert_frame_equal(r1, r2)  # the reference sample does not depend on the current frame


def test_prediction_drift_is_its_own_entry(reference):
    ref = reference.assign(score=np.random.default_rng(1).normal(0.3, 0.1, len(reference)))
    cur = frame(4_000, seed=2).assign(score=np.random.default_rng(2).normal(0.5, 0.1, 4_000))
    res = compute_drift(ref, cur, NUM, CAT, CFG, prediction_column="score")
    assert res.prediction is not None and res.prediction.drifted and res.prediction.method == "wasserstein"
    assert "score" not in [c.column for c in res.columns] and res.drift_share == 0.0
    assert "Prediction `score`: drifted" in res.to_markdown()


def test_bad_input_is_a_clear_data_error(reference):
    with pytest.raises(DataError, match=r"\['visits'\] are missing from the current data"):
        compute_drift(reference, frame(100, seed=2).drop(columns="visits"), NUM, CAT, CFG)
    cur = frame(100, seed=2).assign(age="forty")
    with pytest.raises(DataError, match="'age' is listed as numeric"):
        compute_drift(reference, cur, NUM, CAT, CFG)
    with pytest.raises(DataError, match="both numeric and categorical"):
        compute_drift(reference, reference, ["plan"], ["plan"], CFG)


def test_to_dict_is_json_and_markdown_lists_drifted_columns(reference):
    cur = frame(4_000, seed=2, shift=0.5, plan_p=(0.2, 0.3, 0.5))
    res = compute_drift(reference, cur, NUM, CAT, CFG)
    d = json.loads(json.dumps(res.to_dict()))
    assert d["drifted_columns"] == ["age", "plan"] and d["seed"] == 3 and len(d["columns"]) == 5
    md = res.to_markdown()
    assert "| `age` | numeric | wasserstein |" in md and "| `plan` | categorical | jensenshannon |" in md
    assert "`income`" not in md


def test_evidently_agrees_on_a_small_frame(reference, tmp_path: Path):
    cur = frame(4_000, seed=2, shift=0.5, plan_p=(0.2, 0.3, 0.5))
    cur.loc[cur.index[:200], "age"] = np.nan
    cur.loc[cur.index[:50], "region"] = "mars"
    ref = reference.assign(score=np.random.default_rng(1).normal(0.3, 0.1, len(reference)))
    cur = cur.assign(score=np.random.default_rng(2).normal(0.5, 0.1, len(cur)))
    ours = compute_drift(ref, cur, NUM, CAT, CFG, prediction_column="score")

    html = tmp_path / "reports" / "drift.html"
    ev = evidently_report(ref, cur, NUM, CAT, CFG, html, prediction_column="score")
    assert html.is_file() and html.stat().st_size > 10_000
    assert ev["agreement"] == 1.0 and ev["drifted_columns"] == ours.drifted_columns
    for c in ours.columns:
        assert ev["columns"][c.column]["score"] == pytest.approx(c.score, rel=1e-6)
    assert ev["prediction"]["drifted"] and ev["prediction"]["score"] == pytest.approx(ours.prediction.score, rel=1e-6)

    full = evidently_full_baseline(ref, cur, NUM, CAT)  # Evidently's own automatic methods
    assert {c: v["drifted"] for c, v in full["columns"].items()} == {c.column: c.drifted for c in ours.columns}


def test_evidently_report_refuses_a_window_without_values(reference, tmp_path: Path):
    cur = frame(100, seed=2)
    cur[NUM] = np.nan
    cur[CAT] = None
    with pytest.raises(DataError, match="no drift report"):
        evidently_report(reference, cur, NUM, CAT, CFG, tmp_path / "r.html")


def test_the_report_reuses_a_verdict_it_is_given(reference, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A monitor run computes drift once: given the engine's result, the report does not compute it again."""
    from mlops.monitoring import report as drift_report

    cur = frame(4_000, seed=2, shift=0.5, plan_p=(0.2, 0.3, 0.5))
    ours = compute_drift(reference, cur, NUM, CAT, CFG)

    def refuse(*_args, **_kwargs):
        raise AssertionError("drift computed a second time")

    monkeypatch.setattr(drift_report, "compute_drift", refuse)
    ev = evidently_report(reference, cur, NUM, CAT, CFG, tmp_path / "r.html", drift=ours)
    assert ev["drifted_columns"] == ours.drifted_columns and ev["agreement"] == 1.0


@pytest.mark.parametrize("shift, side", [(0.5, "at or above"), (0.0, "below")])
def test_the_summary_says_the_policy_threshold_decides_and_evidentlys_verdict_informs(reference, shift, side):
    cur = frame(4_000, seed=2, shift=shift, plan_p=(0.2, 0.3, 0.5) if shift else (0.6, 0.3, 0.1))
    res = compute_drift(reference, cur, NUM, CAT, CFG)  # drift share 0.4 (age, plan) or 0.0
    md = res.to_markdown(0.3)
    lines = md.splitlines()
    assert lines[0] == f"{len(res.drifted_columns)} of 5 columns drifted: drift share **{res.drift_share:.2f}**"
    assert (f"**Decides the retrain**: the retrain policy's `drift_share_threshold` 0.3 (this share is {side} it; "
            "when labels judged the champion, live quality decides and drift is a note: see the decision)") in lines
    assert ("Informational: Evidently's dataset-drift verdict at `monitoring.drift_share` 0.5 says no dataset drift; "
            "it does not start a retrain.") in lines
    assert "threshold 0.50" not in md  # the two thresholds no longer stand side by side unexplained


def test_without_the_policy_threshold_the_summary_still_says_evidentlys_verdict_is_informational(reference):
    cur = frame(4_000, seed=2, shift=1.0, plan_p=(0.2, 0.3, 0.5)).assign(income=lambda d: d["income"] * 3)
    res = compute_drift(reference, cur, NUM, CAT, CFG)
    assert res.dataset_drift
    md = res.to_markdown()
    assert "Decides the retrain" not in md
    assert "`monitoring.drift_share` 0.5 says dataset drift; it does not start a retrain." in md


def test_titled_html_names_the_report_in_title_and_banner_escaped():
    from mlops.monitoring.report import titled_html

    page = "\n<!DOCTYPE html>\n<html><head><meta charset='UTF-8'></head>\n<body>\n<div id='root'></div></body></html>"
    out = titled_html(page, "Drift report: a<b> v1, window w1", 'policy "decides" & more')
    assert out.lstrip().startswith("<!DOCTYPE html>")
    head, body = out.split("</head>")
    assert "<title>Drift report: a&lt;b&gt; v1, window w1</title>" in head and "<header" not in head
    assert body.index("mlops-report-title") < body.index("<div id='root'>")
    assert "Drift report: a&lt;b&gt; v1" in body and "policy &quot;decides&quot; &amp; more" in body
    assert "<b>" not in out


def test_the_evidently_report_is_titled_when_a_title_is_given(reference, tmp_path: Path):
    from mlops.monitoring.report import drift_report_subtitle

    cur = frame(1_000, seed=2, shift=0.5)
    ours = compute_drift(reference, cur, NUM, CAT, CFG)
    sub = drift_report_subtitle(CFG)
    assert "drift_share_threshold 0.3" in sub and "monitoring.drift_share 0.5, is informational" in sub
    html = tmp_path / "titled.html"
    evidently_report(reference, cur, NUM, CAT, CFG, html, drift=ours, title="Drift report: m v2, window w9",
                     subtitle=sub)
    page = html.read_text(encoding="utf-8")
    assert page.lstrip().lower().startswith("<!doctype html")
    assert "<title>Drift report: m v2, window w9</title>" in page.split("</head>", 1)[0]
    assert "live quality" in page.split("<body", 1)[1] and "age" in page
