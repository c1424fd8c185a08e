"""What MLflow shows about a training (issue 13): the run named after its version and reason, described with
a link to its Prefect flow run, the flow as its source, the training data as a dataset input with its
fingerprint, a one-line version description, the experiment in the classic ML view, and an alias history
that lives on the versions (the registered model's tag list does not grow with promotions)."""

from __future__ import annotations

import json

import mlflow
import pytest
from typer.testing import CliRunner

from flows.promote import promote, rollback
from flows.train import train
from mlops.registry import versions as registry
from mlops.registry.history import ALIAS_MOVE_PREFIX
from tests.conftest import write_config
from tests.support.state import state_folder

pytestmark = pytest.mark.slow

NAME = "churn-small"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    """One training run in a fresh store (version 1, champion)."""
    tmp = tmp_path_factory.mktemp("context")
    state = tmp / "state"
    with state_folder(state):
        cfg = write_config(tmp)
        done = train(config_path=str(cfg), return_state=True)
        assert done.is_completed(), done.message
        yield {"config": cfg, "result": done.result(), "state": state}


def test_the_run_is_named_after_its_version_and_reason_and_links_its_prefect_flow_run(trained) -> None:
    res = trained["result"]
    run = mlflow.MlflowClient().get_run(res.mlflow_run_id)
    assert run.info.run_name == f"train-{NAME}-v{res.version}-manual"
    tags = run.data.tags
    flow_run_id = res.lineage["prefect_flow_run_id"]
    assert len(flow_run_id) == 36 and tags["prefect.flow_run_id"] == flow_run_id  # the full id, not cut
    assert tags["mlflow.source.name"] == "prefect flow: train" and tags["mlflow.source.type"] == "JOB"
    description = tags["mlflow.note.content"]
    assert tags["prefect.flow_run_url"].endswith(f"/runs/flow-run/{flow_run_id}")
    assert f"]({tags['prefect.flow_run_url']})" in description  # a markdown link to the flow run's page
    assert tags["prefect.flow_run_url"].startswith("http") and "/api/" not in tags["prefect.flow_run_url"]
    assert f"[version {res.version}](#/models/{NAME}/versions/{res.version}?workflowType=machine_learning)" in description
    assert "gate passed" in description and "card/model_card.md" in description


def test_the_training_data_is_a_dataset_input_with_its_fingerprint(trained) -> None:
    res = trained["result"]
    inputs = mlflow.MlflowClient().get_run(res.mlflow_run_id).inputs.dataset_inputs
    assert len(inputs) == 1
    ds, tags = inputs[0].dataset, {t.key: t.value for t in inputs[0].tags}
    assert ds.digest == res.lineage["data_fingerprint"] and ds.name == f"{NAME}-data"
    assert tags["mlflow.data.context"] == "training"
    columns = {c["name"] for c in json.loads(ds.schema)["mlflow_colspec"]}
    assert {"age", "monthly_charges", "churned"} <= columns
    profile = json.loads(ds.profile)
    assert profile["num_rows"] == res.data["rows_accepted"] and profile["rows_train"] + profile["rows_holdout"] == \
        profile["num_rows"]
    assert "generated churn" in ds.source


def test_the_version_description_is_a_short_summary_and_the_card_an_artifact(trained) -> None:
    res = trained["result"]
    mv = registry.client().get_model_version(NAME, res.version)
    first = (mv.description or "").splitlines()[0]
    assert first.startswith("Gate passed · roc_auc 0.") and res.family in first and "contract " in first
    assert "# Model card" not in mv.description and len(first) < 400
    assert "Model card: [card/model_card.md](#/experiments/" in mv.description
    card = mlflow.artifacts.load_text(f"runs:/{res.mlflow_run_id}/card/model_card.md")
    assert card.startswith(f"# Model card: {NAME} v{res.version}")


def test_the_experiment_is_marked_for_the_classic_ml_view(trained) -> None:
    exp = mlflow.MlflowClient().get_experiment(trained["result"].experiment_id)
    assert exp.tags.get("mlflow.experimentKind") == "custom_model_development"


def test_alias_moves_do_not_grow_the_model_tags_and_status_history_shows_them(trained) -> None:
    c = registry.client()
    v1 = c.get_model_version(NAME, "1")
    tags = {k: v for k, v in v1.tags.items() if not k.startswith(ALIAS_MOVE_PREFIX) and k != "promoted_at"}
    v2 = str(c.create_model_version(NAME, source=v1.source, run_id=v1.run_id,
                                    tags=tags | {"gate.passed": "false"}).version)
    model_tags_before = dict(c.get_registered_model(NAME).tags)
    cfg = str(trained["config"])
    moved = promote(config_path=cfg, version=int(v2), reason="hotfix tested by hand", force=True)
    assert moved.forced and moved.to_version == v2
    back = rollback(config_path=cfg, reason="back to v1")
    assert back.to_version == "1"
    c.delete_registered_model_alias(NAME, "champion")  # outside mlops
    model_tags = dict(c.get_registered_model(NAME).tags)
    assert model_tags == model_tags_before and not any(k.startswith(ALIAS_MOVE_PREFIX) for k in model_tags)
    assert any(k.startswith(ALIAS_MOVE_PREFIX) for k in c.get_model_version(NAME, v2).tags)

    from mlops.cli.main import app

    out = CliRunner().invoke(app, ["status", "--history", "--config", cfg])
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert any("champion: none -> v1" in ln and "train flow run" in ln for ln in lines)
    assert any(f"champion: v1 -> v{v2}" in ln and "FORCED over a failed gate" in ln for ln in lines)
    assert any(f"champion: v{v2} -> v1" in ln and "back to v1" in ln for ln in lines)
    assert any("champion: v1 -> none" in ln and "OUTSIDE MLOPS" in ln for ln in lines)
    history = registry.alias_history(NAME)
    assert [h.get("forced", False) for h in history if h["alias"] == "champion"] == [False, True, False, False]
    assert history[-1]["outside"] is True
    assert dict(c.get_registered_model(NAME).tags) == model_tags_before

