"""The training flow under a real (temporary) Prefect server and a real MLflow SQLite store."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml

from flows.promote import promote, rollback
from flows.train import train
from mlops.core.data import generate_churn
from mlops.core.validation import QUARANTINE_REASON_COLUMN
from mlops.registry import versions as registry
from mlops.training.result import TrainingResult
from tests.conftest import small_config, write_config
from tests.support.state import state_folder

NAME = "churn-small"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    """A state folder with one training run done (version 1 = champion)."""
    tmp = tmp_path_factory.mktemp("train")
    state = tmp / "state"
    with state_folder(state):
        cfg = write_config(tmp)
        state_obj = train(config_path=str(cfg), return_state=True)
        assert state_obj.is_completed(), state_obj.message
        yield {"tmp": tmp, "state": state, "config": cfg, "summary": state_obj.result()}


def _versions() -> list[str]:
    return sorted(str(mv.version) for mv in registry.client().search_model_versions(f"name='{NAME}'"))


def test_first_run_registers_and_promotes(trained) -> None:
    s = trained["summary"]
    assert s.version == "1" and s.promoted and s.gate_passed
    champ = registry.get_version_by_alias(NAME, registry.CHAMPION)
    assert champ is not None and str(champ.version) == "1"
    tags = champ.tags
    assert tags["gate.passed"] == "true" and "gate.failures" not in tags and tags["metric.roc_auc"]
    assert tags["lineage.reason"] == "manual" and tags["lineage.data_source"] == "generated"
    # bulky records are the run's artifacts; the version keeps short tags only
    checks = json.loads(registry.download_artifact(champ.run_id, "evaluation/gate_verdict.json").read_text())["checks"]
    assert any("no champion yet" in c["detail"] for c in checks) and any(c["name"] == "slice region" for c in checks)
    lineage = json.loads(registry.download_artifact(champ.run_id, "lineage.json").read_text())
    for key in ("data_fingerprint", "config_hash", "code_version", "prefect_flow_run_id", "holdout"):
        assert lineage.get(key) and f"lineage.{key}" not in tags, key
    assert "gate.reasons" not in tags and "task" not in tags
    assert len(tags) <= 16 and max(len(v) for v in tags.values()) <= 400, {k: len(v) for k, v in tags.items()}
    assert "Model card" in (champ.description or "")
    history = registry.alias_history(NAME)
    assert history[-1]["alias"] == "champion" and history[-1]["to_version"] == "1"
    assert history[-1]["by"].startswith("train flow run")


def test_the_flow_returns_a_typed_training_result(trained) -> None:
    s = trained["summary"]
    assert isinstance(s, TrainingResult)
    assert s.model_name == NAME and s.family in {row["family"] for row in s.leaderboard}
    assert s.champion_version == "1" and s.previous_champion is None
    assert s.metrics["roc_auc"] > 0.5 and s.leaderboard[0]["cv_score"] >= s.leaderboard[-1]["cv_score"]
    assert s.lineage["prefect_flow_run_id"] and s.lineage["holdout"] and s.lineage["reason"] == "manual"
    run = mlflow.MlflowClient().get_run(s.mlflow_run_id)
    assert run.info.experiment_id == s.experiment_id and run.data.tags["best_family"] == s.family
    best = next(r for r in s.leaderboard if r["family"] == s.family)
    # the parent run carries the winner's hyperparameters, not only its nested run
    assert run.data.params["best_family"] == s.family and run.data.params["best_space"] == "config"
    assert {k.removeprefix("best.") for k in run.data.params if k.startswith("best.")} == {
        part.split("=")[0] for part in best["best_params"].split(", ")}
    assert run.data.metrics["trials_total"] == sum(r["trials"] for r in s.leaderboard)
    assert s.tracking_uri.startswith("sqlite:") and s.data["rows_accepted"] > 0 and s.profile_lines
    doc = s.to_dict()
    assert list(doc) == [f.name for f in fields(TrainingResult)] and doc["version"] == "1"
    assert json.loads(json.dumps(doc, default=str))["gate_passed"] is True


def test_version_carries_contract_reference_plots_and_card(trained) -> None:
    champ = registry.get_version_by_alias(NAME, registry.CHAMPION)
    files = {a.path for a in mlflow.MlflowClient().list_artifacts(champ.run_id, "evaluation")}
    assert {"evaluation/confusion_matrix.png", "evaluation/roc_pr_curves.png", "evaluation/feature_importance.png",
            "evaluation/gate_verdict.json"} <= files
    bundle = registry.load_bundle(NAME, "champion")
    assert bundle.contract.target == "churned" and "region" in bundle.contract.by_name
    assert bundle.reference is not None and {"prediction", "prediction_proba"} <= set(bundle.reference.columns)
    X = generate_churn(20, seed=99).drop(columns=["churned"])
    assert len(bundle.model.predict_proba(X)) == 20


@pytest.mark.slow
@pytest.mark.parametrize("refit", [None, False])
def test_time_ordered_data_registers_a_model_refitted_on_train_and_holdout(trained, refit: bool | None) -> None:
    """split.refit (default on with a timestamp_column): the registered model also learned from the holdout,
    the newest rows; the gate judged the model fitted without them; the card says which."""
    from mlops.core import rowkeys

    name = f"churn-refit-{refit}".lower()
    cfg = trained["tmp"] / f"{name}.yaml"
    cfg.write_text(yaml.safe_dump(small_config(split={"test_size": 0.2, "refit": refit},
                                               registry={"model_name": name, "reference_rows": 500})))
    s = train(config_path=str(cfg))
    mv = registry.client().get_model_version(name, s.version)
    params = mlflow.MlflowClient().get_run(mv.run_id).data.params
    rows_train, rows_holdout = int(params["rows_train"]), int(params["rows_holdout"])
    hashes = rowkeys.RowHashSet.load(registry.download_artifact(mv.run_id, rowkeys.HASHES_ARTIFACT)).hashes
    card = registry.download_artifact(mv.run_id, "card/model_card.md").read_text()
    if refit is None:  # the default with event_time: refitted
        assert rows_train < len(hashes) <= rows_train + rows_holdout
        assert "**Refit**" in card and "before the refit" in card
    else:
        assert len(hashes) <= rows_train
        assert "**Refit**" not in card and "`split.refit` off" in card


def test_quarantine_file_holds_the_bad_rows(trained) -> None:
    path = Path(trained["summary"].quarantine_file)
    q = pd.read_csv(path)
    assert len(q) == trained["summary"].data["rows_quarantined"] > 0
    assert ((q["age"] == 150) | (q["monthly_charges"] < 0)).all()
    assert q[QUARANTINE_REASON_COLUMN].str.contains("expect_column_values_to_be_between").all()


def _bad_files(folder: Path) -> dict[str, tuple[Path, str]]:
    good = generate_churn(400, seed=11)
    csv_text = good.to_csv(index=False)
    header = csv_text.splitlines()[0]
    cases: dict[str, tuple[bytes | pd.DataFrame, str]] = {
        "missing_file": (None, "not found"),
        "empty_file": (b"", "is empty"),
        "header_only": ((header + "\n").encode(), "header but no rows"),
        "missing_target": (good.drop(columns=["churned"]), "target column"),
        "single_class": (good.assign(churned=0), "single class"),
        "all_null_column": (good.assign(monthly_charges=None), "entirely empty"),
        "no_labels": (good.assign(churned=None), "no row has a label"),
        "wrong_delimiter": (good.to_csv(index=False, sep=";").encode(), "delimited"),
        "non_utf8": (csv_text.encode().replace(b"north", b"n\xf6rth", 1), "not UTF-8"),
        "mostly_truncated_rows": (_truncate_lines(csv_text, every=10), "fields, the header has"),
        "numeric_full_of_text": (good.assign(tenure_months="many"), "should be numeric"),
    }
    out = {}
    for name, (content, msg) in cases.items():
        p = folder / f"{name}.csv"
        if isinstance(content, pd.DataFrame):
            content.to_csv(p, index=False)
        elif content is not None:
            p.write_bytes(content)
        out[name] = (p, msg)
    return out


def _truncate_lines(csv_text: str, every: int) -> bytes:
    """Cut every `every`-th data line short (10%: above the 5% quarantine limit)."""
    lines = csv_text.rstrip("\n").split("\n")
    for i in range(1, len(lines), every):
        lines[i] = lines[i].rsplit(",", 5)[0]
    return ("\n".join(lines) + "\n").encode()


@pytest.mark.slow
def test_truncated_last_row_is_quarantined_and_training_goes_on(trained) -> None:
    csv_text = generate_churn(400, seed=11).to_csv(index=False)
    path = trained["tmp"] / "truncated.csv"
    path.write_text(csv_text.rstrip("\n").rsplit(",", 5)[0])
    st = train(config_path=str(trained["config"]), source_path=str(path), return_state=True)
    assert st.is_completed(), st.message
    s = st.result()
    q = pd.read_csv(s.quarantine_file)
    last = q[q["_quarantine_reasons"].str.contains("the last row")]
    assert len(last) == 1 and "fields, the header has 13" in last["_quarantine_reasons"].iloc[0]
    assert any(line.startswith("Malformed") for line in s.profile_lines)


@pytest.mark.slow
def test_rows_without_a_label_are_left_out_counted_and_not_quarantined(trained) -> None:
    """5% blank targets (empty, '?', 'NA') with a 1% quarantine limit: trained on the labelled rows."""
    from mlops.registry.summaries import training_markdown

    df = generate_churn(400, seed=12).astype({"churned": object})
    blank = list(range(0, 400, 20))  # 20 rows: 5%
    for i, spelling in zip(blank, ["", "?", "NA"] * 7, strict=False):
        df.loc[i, "churned"] = spelling
    path = trained["tmp"] / "unlabelled.csv"
    df.to_csv(path, index=False)
    cfg = trained["tmp"] / "strict.yaml"
    cfg.write_text(yaml.safe_dump(small_config(validation={"max_quarantine_fraction": 0.01},
                                               registry={"model_name": "churn-unlabelled", "reference_rows": 200})))
    st = train(config_path=str(cfg), source_path=str(path), return_state=True)
    assert st.is_completed(), st.message
    s = st.result()
    assert s.data["rows_unlabelled"] == 20 and s.data["rows_checked"] == 380 and s.data["rows_quarantined"] == 0
    assert s.quarantine_file is None
    assert "20 rows without a label left out" in training_markdown(s)


@pytest.mark.parametrize("case", [
    "missing_file", "empty_file", "header_only", "missing_target", "single_class", "all_null_column", "no_labels",
    "wrong_delimiter", "non_utf8", "mostly_truncated_rows", "numeric_full_of_text",
])
def test_bad_data_fails_cleanly_and_changes_nothing(trained, case: str, monkeypatch) -> None:
    import flows.train

    path, message = _bad_files(trained["tmp"])[case]
    before = _versions()
    started = []  # a source that cannot be read ends the run before infra validation's process starts

    @contextlib.contextmanager
    def no_process(enabled: bool) -> Iterator[None]:
        started.append(enabled)
        yield None

    monkeypatch.setattr(flows.train, "infra_validation_process", no_process)
    st = train(config_path=str(trained["config"]), source_path=str(path), return_state=True)
    assert st.is_failed()
    assert message in st.message and "\n" not in st.message and "Traceback" not in st.message
    assert _versions() == before
    assert str(registry.get_version_by_alias(NAME, registry.CHAMPION).version) == "1"
    if case in {"missing_file", "empty_file", "wrong_delimiter", "non_utf8"}:
        assert started == []


@pytest.mark.slow
def test_worse_challenger_is_rejected_and_champion_stays(trained) -> None:
    weak = small_config(models=[{"family": "logistic_regression", "params": {"C": 0.00001}}])
    cfg = trained["tmp"] / "weak.yaml"
    cfg.write_text(yaml.safe_dump(weak))
    st = train(config_path=str(cfg), return_state=True)
    assert st.is_completed()
    s = st.result()
    assert not s.gate_passed and not s.promoted
    assert any(r.startswith("FAIL") and "champion" in r for r in s.gate_reasons)
    assert str(registry.get_version_by_alias(NAME, registry.CHAMPION).version) == "1"
    mv = registry.client().get_model_version(NAME, s.version)
    assert mv.tags["gate.passed"] == "false"
    failures = mv.tags["gate.failures"].splitlines()  # one failed check a line: what the guard and status say
    assert failures == [" ".join(r.removeprefix("FAIL ").split()) for r in s.gate_reasons if r.startswith("FAIL")]


@pytest.mark.slow
def test_manual_promote_and_rollback_are_recorded(trained) -> None:
    versions = _versions()
    target = versions[-1]  # rejected by its gate (the test above): promoting it needs force and a reason
    refused = promote(config_path=str(trained["config"]), version=int(target), return_state=True)
    assert refused.is_failed() and "failed its promotion gate" in refused.message and "--force" in refused.message
    entry = promote(config_path=str(trained["config"]), version=int(target), reason="test promotion", force=True)
    assert entry.to_version == target and entry.from_version == "1" and entry.forced
    assert str(registry.get_version_by_alias(NAME, registry.PREVIOUS).version) == "1"
    back = rollback(config_path=str(trained["config"]), reason="test rollback")
    assert back.to_version == "1" and back.from_version == target
    assert str(registry.get_version_by_alias(NAME, registry.CHAMPION).version) == "1"
    moves = [(m["alias"], m["to_version"], m["reason"]) for m in registry.alias_history(NAME)]
    assert ("champion", target, "test promotion") in moves and ("champion", "1", "test rollback") in moves
    failed = rollback(config_path=str(trained["config"]), return_state=True)
    assert failed.is_failed() and "no previous champion" in failed.message


@pytest.mark.slow
def test_a_training_that_crashes_leaves_its_mlflow_run_failed(trained, monkeypatch) -> None:
    """A bug mid-run (after the MLflow run opened) fails the flow and the MLflow run says FAILED; the run of a
    training that ended stays FINISHED."""
    import flows.train

    def crash(*_args, **_kwargs):
        raise RuntimeError("a bug in the training window")

    monkeypatch.setattr(flows.train, "choose_training_window", crash)
    st = train(config_path=str(trained["config"]), reason="crash test", return_state=True)
    assert st.is_failed()
    flow_run_id = str(st.state_details.flow_run_id)
    c = mlflow.MlflowClient()
    runs = c.search_runs([trained["summary"].experiment_id],
                         filter_string=f"tags.`prefect.flow_run_id` = '{flow_run_id}'")
    assert [r.info.status for r in runs] == ["FAILED"]
    assert c.get_run(trained["summary"].mlflow_run_id).info.status == "FINISHED"
