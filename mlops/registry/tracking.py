"""MLflow tracking for a training run: the run with its lineage and parameters, nested runs per family,
the logged model, holdout metrics and artifacts, and the verdict recorded on the version."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from mlops.core.config import SearchConfig
from mlops.core.contract import DataContract
from mlops.core.names import run_name_part
from mlops.registry.links import mlflow_routes
from mlops.registry.trusted_types import trusted_types
from mlops.registry.verdict import GATE_FAILURES_TAG, seal_tags
from mlops.registry.versions import client, code_version, ensure_experiment

if TYPE_CHECKING:  # the search's result type only: importing the search would import scikit-learn
    from mlops.training.tuning import FamilyResult

# characters MLflow keeps of a tag value and of a version description
TAG_LIMIT = 4900
DESCRIPTION_LIMIT = 20000
CONTRACT_ARTIFACT = "contract/contract.json"
CONTRACT_DIFF_ARTIFACT = "contract/contract_diff.json"
CONTRACT_DIFF_TAG = "contract.diff"  # the diff's one-line summary, on the model version


CARD_ARTIFACT = "card/model_card.md"
LINEAGE_ARTIFACT = "lineage.json"  # the version's whole lineage, on its run
# the lineage entries a version also carries as tags, because they are read back from the version: the reason
# (`status`, the versions table), the data source (a retrain's original data) and what the configuration's
# tuning saw (mlops.training.retune); the rest (fingerprint, config hash, code version, flow run ...) is in
# LINEAGE_ARTIFACT and on the run's tags
VERSION_LINEAGE = ("reason", "data_source", "tuned_rows", "search_digest", "configuration")
LINEAGE_TAG_CHARS = 300
DESCRIPTION_TAG = "mlflow.note.content"  # what MLflow's UI shows as a run's description (markdown)
DATASET_CONTEXT = "training"


@dataclass(frozen=True)
class PrefectContext:
    """The Prefect flow run a training runs in: its full id, name, flow and page (None without a UI)."""

    flow_run_id: str | None
    flow_run_name: str | None = None
    flow_name: str | None = None
    url: str | None = None

    def tags(self) -> dict[str, str]:
        """The run tags: the full id, name and page of the flow run, and the flow as the run's source."""
        out = {"mlflow.source.name": f"prefect flow: {self.flow_name or 'train'}", "mlflow.source.type": "JOB"}
        for key, value in (("prefect.flow_run_id", self.flow_run_id), ("prefect.flow_run_name", self.flow_run_name),
                           ("prefect.flow_run_url", self.url)):
            if value:
                out[key] = value
        return out

    def markdown(self) -> str:
        """The flow run as a markdown link (its name and full id), or its id when there is no UI to link to."""
        label = f"{self.flow_run_name} ({self.flow_run_id})" if self.flow_run_name else str(self.flow_run_id)
        return f"[{label}]({self.url})" if self.url else f"`{label}`"


@dataclass(frozen=True)
class TrainingRun:
    """The MLflow run a training flow writes to, where its store is, and the lineage tagged on it."""

    run_id: str
    experiment_id: str
    tracking_uri: str
    lineage: dict[str, str] = field(default_factory=dict)
    prefect: PrefectContext | None = None


def reason_slug(reason: str) -> str:
    """A run's reason as a name part, by the rule the Prefect run names use (mlops.core.names.run_name_part):
    paths shortened to their file name, lowercase words joined by dashes (`data arrived: /in/b 7.csv` ->
    `data-arrived-b-7.csv`), file names kept whole; `manual` when empty."""
    return run_name_part(reason, empty="manual")


def training_run_name(model_name: str, reason: str, version: str | None = None) -> str:
    """`train-<model>-<reason>` while training (the Prefect run's name), `train-<model>-v<N>-<reason>` once the
    version is registered."""
    return f"train-{model_name}-" + (f"v{version}-" if version else "") + reason_slug(reason)


def training_description(model_name: str, reason: str, prefect: PrefectContext | None, version: str | None = None,
                         experiment_id: str | None = None, run_id: str | None = None,
                         gate: str | None = None) -> str:
    """The run's description (markdown): what it trained and why, the Prefect flow run (a link with a
    UI), and once registered the version (a link to its page), the gate and the model card."""
    lines = [f"Training of **{model_name}** (reason: {reason[:300] or 'manual'})."]
    if prefect is not None and prefect.flow_run_id:
        lines.append(f"Prefect flow run: {prefect.markdown()}")
    if version:
        routes = mlflow_routes(run_id, experiment_id, model_name, version, CARD_ARTIFACT)
        registered = f"Registered as [version {version}]({routes['model_version']})"
        if gate:
            registered += f"; {gate}"
        lines.append(registered + (f"; model card: [{CARD_ARTIFACT}]({routes['artifact']})." if "artifact" in routes
                                   else "."))
    return "\n\n".join(lines)


def training_lineage(fingerprint: str, config_hash: str, config_path: str, flow_run_id: str, data_source: str,
                     reason: str) -> dict[str, str]:
    """Where a version comes from (tagged `lineage.*` on its run and version): data, config, code, flow run, why."""
    return {"data_fingerprint": fingerprint, "config_hash": config_hash, "config_path": config_path,
            "code_version": code_version(), "prefect_flow_run_id": flow_run_id, "data_source": data_source,
            "reason": reason}


def start_training_run(tracking_uri: str, experiment: str, artifact_root: str, run_name: str,
                       lineage: dict[str, str], params: dict[str, Any],
                       prefect: PrefectContext | None = None, model_name: str | None = None) -> TrainingRun:
    """Open the experiment (created once, artifacts under `artifact_root`, the classic ML kind) and a run in
    it tagged with the lineage, the search parameters and the Prefect flow run (source, full id, page,
    and a description linking it); later writes go to the run by id.

    The run stays RUNNING until `end_training_run` says how the training ended (FINISHED, or FAILED when
    it stopped on an error), so a crashed training never looks finished."""
    import mlflow
    from mlflow.entities import Param
    from mlflow.tracking.context.registry import resolve_tags

    mlflow.set_tracking_uri(tracking_uri)
    experiment_id = ensure_experiment(experiment, artifact_root)
    tags = {f"lineage.{k}": v for k, v in lineage.items()} | {"mlops.stage": "training"}
    if prefect is not None:
        tags |= prefect.tags()
    tags[DESCRIPTION_TAG] = training_description(model_name or experiment, lineage.get("reason", ""), prefect)
    c = client()
    run = c.create_run(experiment_id, run_name=run_name,
                       tags=resolve_tags({k: v[:TAG_LIMIT] for k, v in tags.items()}))
    c.log_batch(run.info.run_id, params=[Param(k, str(v)[:6000]) for k, v in params.items()])
    return TrainingRun(run.info.run_id, experiment_id, tracking_uri, dict(lineage), prefect)


def end_training_run(run_id: str, failed: bool = False) -> None:
    """Close a training run: FINISHED, or FAILED when the training stopped on an error."""
    client().set_terminated(run_id, status="FAILED" if failed else "FINISHED")


def fail_open_training_runs(flow_run_id: str) -> list[str]:
    """Mark FAILED the training runs a Prefect flow run left open (RUNNING) when it stopped on an error;
    returns their ids. Found by the flow run's id, which every training run is tagged with."""
    from mlflow.entities import ViewType

    c = client()
    experiments = [e.experiment_id for e in c.search_experiments(view_type=ViewType.ACTIVE_ONLY)]
    if not experiments:
        return []
    found = c.search_runs(experiments, filter_string=f"tags.`prefect.flow_run_id` = '{flow_run_id}' and "
                                                     "tags.`mlops.stage` = 'training' and attributes.status = 'RUNNING'")
    for run in found:
        end_training_run(run.info.run_id, failed=True)
    return [run.info.run_id for run in found]


def log_training_data(run_id: str, frame: pd.DataFrame, name: str, digest: str, source: str, is_file: bool,
                      profile: dict[str, Any] | None = None, context: str = DATASET_CONTEXT) -> None:
    """The training data as the run's dataset input: its name, fingerprint (digest), source (a file's path,
    else a description such as `generated churn`), schema and row counts; the rows themselves are not
    logged (the schema is read from the first rows)."""
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.types.utils import _infer_schema

    try:
        schema: str | None = json.dumps({"mlflow_colspec": _infer_schema(integers_as_floats(frame.head(200))).to_dict()})
    except Exception:  # noqa: BLE001 - a column MLflow cannot type: the input is still recorded, schemaless
        schema = None
    counts = {"num_rows": len(frame), "num_elements": int(frame.size)} | (profile or {})
    dataset = Dataset(name=name[:500], digest=digest[:36], source_type="local" if is_file else "code",
                      source=json.dumps({"uri": source} if is_file else {"tags": {"mlops.source": source}}),
                      schema=schema, profile=json.dumps(counts, default=str))
    client().log_inputs(run_id, datasets=[DatasetInput(dataset, tags=[InputTag("mlflow.data.context", context)])])


def describe_registered_run(run: TrainingRun, model_name: str, version: str, gate: str) -> str:
    """Name the run after its version (`train-<model>-v<N>-<reason>`) and describe it with links to the
    version and its card; returns the new name."""
    reason = run.lineage.get("reason", "")
    name = training_run_name(model_name, reason, version)
    c = client()
    c.update_run(run.run_id, name=name)
    c.set_tag(run.run_id, DESCRIPTION_TAG, training_description(
        model_name, reason, run.prefect, version, run.experiment_id, run.run_id, gate)[:TAG_LIMIT])
    return name


def log_holdout(run_id: str, metrics: dict[str, float], best_family: str, artifacts: list[tuple[str, Path]],
                texts: dict[str, str]) -> None:
    """The holdout metrics (`holdout_<name>`), the winning family, and the run's files and generated texts."""
    from mlflow.entities import Metric, RunTag

    log_run_artifacts(run_id, artifacts, texts)
    now = int(time.time() * 1000)
    client().log_batch(run_id, metrics=[Metric(f"holdout_{k}", v, now, 0) for k, v in metrics.items()],
                       tags=[RunTag("best_family", best_family)])


def version_tags(passed: bool, reasons: list[str], metrics: dict[str, float], lineage: dict[str, str],
                 family: str) -> dict[str, str]:
    """The short model version tags their readers need: the gate result (`gate.passed`, and on a rejection the
    failed checks, one a line, in `gate.failures`: what the guard and `status` say), the family, the holdout
    metrics, and the lineage entries read back (`VERSION_LINEAGE`). Bulky records stay on the version's run as
    artifacts: every gate reason (`evaluation/gate_verdict.json`), the whole lineage (`lineage.json`), the card
    and the contract."""
    tags = {"gate.passed": str(passed).lower(), "family": family}
    failures = [" ".join(r.removeprefix("FAIL ").split()) for r in reasons if r.startswith("FAIL")]
    if failures:
        tags[GATE_FAILURES_TAG] = "\n".join(failures)
    tags.update({f"metric.{k}": f"{v:.6g}" for k, v in metrics.items()})
    tags.update({f"lineage.{k}": str(lineage[k])[:LINEAGE_TAG_CHARS] for k in VERSION_LINEAGE if lineage.get(k)})
    return tags


def model_card_route(run_id: str, experiment_id: str) -> str:
    """The model card's page on its run (an MLflow UI route, relative: it works inside MLflow's own markdown)."""
    return mlflow_routes(run_id, experiment_id, artifact=CARD_ARTIFACT)["artifact"]


def record_verdict(run_id: str, model_name: str, version: str, verdict_json: str, tags: dict[str, str],
                   card: str, summary: str | None = None, lineage: dict[str, str] | None = None) -> None:
    """Attach the final gate verdict (sealed, mlops.registry.verdict), the version tags and the model card to
    the version and its run: the card as the run's `card/model_card.md`, the whole lineage as its `lineage.json`,
    the version's description the short `summary` (the card when none is given)."""
    c = client()
    # sealed with the gate key over the verdict and the version's files; the seal is written last
    tags = tags | seal_tags(model_name, version, run_id, tags["gate.passed"] == "true")
    for k, v in tags.items():
        c.set_model_version_tag(model_name, version, k, v[:TAG_LIMIT])
    c.update_model_version(model_name, version, description=(summary or card)[:DESCRIPTION_LIMIT])
    c.log_text(run_id, verdict_json, "evaluation/gate_verdict.json")
    c.log_text(run_id, card, CARD_ARTIFACT)
    if lineage is not None:
        c.log_dict(run_id, lineage, LINEAGE_ARTIFACT)
    c.set_tag(run_id, "gate.passed", tags["gate.passed"])
    if GATE_FAILURES_TAG in tags:
        c.set_tag(run_id, GATE_FAILURES_TAG, tags[GATE_FAILURES_TAG][:TAG_LIMIT])
    c.log_metric(run_id, "gate_passed", float(tags["gate.passed"] == "true"))


def log_family_run(parent_run_id: str, result: FamilyResult, search: SearchConfig) -> str:
    """A nested run holding one family's best trial, its CV scores and the trial table."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag

    c = MlflowClient()
    parent = c.get_run(parent_run_id)
    run = c.create_run(parent.info.experiment_id, run_name=f"tune-{result.family}",
                       tags={"mlflow.parentRunId": parent_run_id, "family": result.family})
    rid = run.info.run_id
    params = [Param(f"best.{k}", str(v)[:500]) for k, v in result.best_params.items()]
    params += [Param("family", result.family), Param("scoring", result.scoring), Param("strategy", search.strategy),
               Param("n_trials", str(result.n_trials)), Param("pruned", str(result.pruned)),
               Param("space", result.space), Param("cv_folds", str(search.cv_folds)),
               Param("time_budget", str(search.time_budget)), Param("threads", result.threads or "-"),
               Param("seed", str(search.seed)), Param("backend", search.backend)]

    now = int(time.time() * 1000)
    metrics = [Metric("cv_best_score", result.best_score, now, 0), Metric("tune_seconds", result.seconds, now, 0)]
    metrics += [Metric("cv_fold_score", s, now, i) for i, s in enumerate(result.cv_scores)]
    c.log_batch(rid, metrics=metrics, params=params, tags=[RunTag("mlops.stage", "tuning")])
    c.log_dict(rid, {"trials": result.trials}, "trials.json")
    c.set_terminated(rid)
    return rid


def log_search_winner(parent_run_id: str, best: FamilyResult, results: Sequence[FamilyResult],
                      search: SearchConfig) -> None:
    """The winning family's hyperparameters on the training run itself (`best.<name>`), with the family, its
    cv score, the space it searched and the trials every family fitted."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    now = int(time.time() * 1000)
    params = [Param(f"best.{k}", str(v)[:500]) for k, v in best.best_params.items()]
    params += [Param("best_family", best.family), Param("best_space", best.space),
               Param("time_budget", str(search.time_budget))]
    metrics = [Metric("cv_best_score", best.best_score, now, 0)] if math.isfinite(best.best_score) else []
    metrics += [Metric("trials_total", float(sum(r.n_trials for r in results)), now, 0),
               Metric("tune_seconds", float(sum(r.seconds for r in results)), now, 0)]
    MlflowClient().log_batch(parent_run_id, metrics=metrics, params=params)


def log_model_version(run_id: str, model: Any, model_name: str, X_example: pd.DataFrame, predictions: Any,
                      optional_columns: Sequence[str] = ()) -> str:
    """Log the pipeline (skops, trusting only the allowed types it holds) with signature and input
    example and register it; returns the new registered version.

    `optional_columns` are input columns the server accepts but does not need (the contract's id
    column); the signature marks them not required.
    """
    import mlflow
    import mlflow.sklearn

    trusted = trusted_types(model)  # RegistryError before anything is logged if a type is not allowed
    example = integers_as_floats(X_example.head(5))
    signature = model_signature(X_example, predictions, optional_columns)
    run = client().get_run(run_id)  # logged by id: the run stays open (RUNNING) until the training ends
    logged = mlflow.initialize_logged_model(name="model", source_run_id=run_id, experiment_id=run.info.experiment_id,
                                            params=dict(run.data.params))
    info = mlflow.sklearn.log_model(
        sk_model=model,
        name="model",
        signature=signature,
        input_example=example,
        serialization_format="skops",
        skops_trusted_types=trusted,
        pip_requirements=[],
        run_id=run_id,
        model_id=logged.model_id,
    )
    return register_version(model_name, info.model_uri, run_id, info.model_id)


def model_signature(X_example: pd.DataFrame, predictions: Any, optional_columns: Sequence[str] = ()) -> Any:
    """The inferred signature with `optional_columns` marked not required (they must be input columns).

    Integer input columns are declared doubles (`integers_as_floats`): a missing value turns an integer column
    into floats at scoring time, which a `long` column would refuse."""
    from mlflow.models import infer_signature
    from mlflow.types import ColSpec, Schema

    signature = infer_signature(integers_as_floats(X_example), predictions)
    optional = set(optional_columns)
    missing = optional - set(signature.inputs.input_names())
    if missing:
        raise ValueError(f"optional columns {sorted(missing)} are not input columns of the signature")
    if optional:
        signature.inputs = Schema([
            ColSpec(c.type, c.name, required=False) if c.name in optional else c for c in signature.inputs.inputs])
    return signature


def integers_as_floats(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with its integer columns (numpy and nullable) as float64, the type MLflow's schemas should
    declare for columns that may hold missing values; other columns as they are."""
    ints = [c for c in frame.columns if pd.api.types.is_integer_dtype(frame[c].dtype)]
    return frame.astype(dict.fromkeys(ints, "float64")) if ints else frame.copy()


def log_contract(run_id: str, model_name: str, version: str, contract: DataContract) -> None:
    """The version's data contract on its run and, when it evolved from another, the diff: a JSON artifact
    and a one-line version tag (`contract.diff`)."""
    texts = {CONTRACT_ARTIFACT: contract.to_json()}
    if contract.changes is not None:
        texts[CONTRACT_DIFF_ARTIFACT] = contract.changes.to_json()
    log_run_artifacts(run_id, [], texts)
    if contract.changes is not None:
        client().set_model_version_tag(model_name, version, CONTRACT_DIFF_TAG, contract.changes.summary(TAG_LIMIT))


def log_run_artifacts(run_id: str, artifacts: list[tuple[str, Path]], texts: dict[str, str]) -> None:
    """Files (into their artifact folders) and generated texts (at their relative paths) on a run."""
    from mlflow import MlflowClient

    c = MlflowClient()
    for folder, path in artifacts:
        c.log_artifact(run_id, str(path), artifact_path=folder)
    for rel, text in texts.items():
        c.log_text(run_id, text, rel)


def register_version(model_name: str, source: str, run_id: str, model_id: str | None) -> str:
    """Create the registered model once, then a new version of it, through the client (no console chatter)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    c = MlflowClient()
    try:
        c.get_registered_model(model_name)
    except MlflowException:
        try:
            c.create_registered_model(model_name, description="Registered by the mlops training flow.")
        except MlflowException:
            pass  # created meanwhile by another run
    mv = c.create_model_version(model_name, source=source, run_id=run_id, model_id=model_id)
    return str(mv.version)


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2, default=str)
