"""Registry stage: the champion, the training run, registering the challenger, its artifacts and verdict,
and moving `champion` on a gate pass (by hand: tasks.aliases). Every MLflow call is in mlops.registry."""

from __future__ import annotations

import os
from typing import Any

import pandas as pd
from prefect import get_run_logger, runtime

from mlops.core import events
from mlops.core.config import PipelineConfig
from mlops.core.contract import DataContract
from mlops.core.data import Split
from mlops.registry import versions as registry
from mlops.registry.links import prefect_flow_run_url
from mlops.registry.tracking import (
    PrefectContext,
    TrainingRun,
    describe_registered_run,
    end_training_run,
    fail_open_training_runs,
    log_contract,
    log_holdout,
    log_model_version,
    log_training_data,
    model_card_route,
    training_run_name,
    version_tags,
)
from mlops.registry.tracking import record_verdict as record_verdict_on_version
from mlops.registry.tracking import start_training_run as open_training_run
from mlops.training.assessment import Evaluation
from mlops.training.card import card_summary, model_card
from mlops.training.gate import GateVerdict
from mlops.training.tuning import FamilyResult
from tasks.common import stage_task
from tasks.evaluation import RunArtifacts


@stage_task("load_champion", io=True)
def load_champion(model_name: str, with_reference: bool = False, to_serve: bool = False) -> registry.ModelBundle | None:
    """The champion with its contract (and its training reference sample, for drift), or None before the
    first promotion; the one champion loader every flow uses (`to_serve`: refused unless its sealed gate
    verdict or override lets it serve, as the model server does)."""
    return registry.load_champion(model_name, with_reference=with_reference, to_serve=to_serve)


@stage_task("start_training_run", io=True)
def start_training_run(cfg: PipelineConfig, split: Split, scoring: Any, lineage: dict[str, str],
                       tracking_uri: str, artifact_root: str) -> TrainingRun:
    """The MLflow run of this training (`train-<model>-<reason>`): lineage tags, the search parameters, the
    Prefect flow run it belongs to (tags and a linked description) and the training data as its dataset input."""
    params = {"task": cfg.task, "primary_metric": cfg.primary_metric, "scoring": scoring,
              "n_trials": cfg.search.n_trials, "cv_folds": cfg.search.cv_folds, "strategy": cfg.search.strategy,
              "seed": cfg.search.seed, "rows_train": len(split.train), "rows_holdout": len(split.test)}
    model_name = cfg.registry.model_name
    run = open_training_run(tracking_uri, cfg.registry.experiment or cfg.name, artifact_root,
                            training_run_name(model_name, lineage.get("reason", "")),
                            lineage | {"holdout": split.holdout}, params, prefect_context(), model_name)
    source, is_file = data_source(cfg, lineage.get("data_source"))
    log_training_data(run.run_id, split.train, f"{cfg.name}-data", lineage.get("data_fingerprint", "unknown"), source,
                      is_file, {"num_rows": len(split.train) + len(split.test), "rows_train": len(split.train),
                                "rows_holdout": len(split.test), "holdout": split.holdout})
    return run


@stage_task("finish_training_run", io=True)
def finish_training_run(run: TrainingRun) -> None:
    """Close the training's MLflow run as FINISHED (it stays RUNNING while the training runs)."""
    end_training_run(run.run_id)


def fail_training_runs(flow_run_id: str) -> None:
    """Close as FAILED the MLflow training runs a flow run that stopped on an error left open (called from the
    flow's error path, not a task: it must not fail again); a store it cannot reach only warns. Before the
    environment is configured (a config that did not load) no run can have been opened: nothing to ask."""
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        return
    try:
        fail_open_training_runs(flow_run_id)
    except Exception as exc:  # noqa: BLE001 - the run's own error is what the user needs to see
        get_run_logger().warning("Could not mark the MLflow training run failed: %s", str(exc)[:200])


def prefect_context() -> PrefectContext:
    """The flow run this task runs in: full id, name, flow and its page in the Prefect UI (when there is one)."""
    rid = runtime.flow_run.id
    return PrefectContext(str(rid) if rid else None, runtime.flow_run.name or None, runtime.flow_run.flow_name or None,
                          prefect_flow_run_url(str(rid)) if rid else None)


def data_source(cfg: PipelineConfig, given: str | None) -> tuple[str, bool]:
    """What the training data came from, for its dataset input: (a file's path, True) or (a description, False)."""
    src = cfg.source
    if given and given not in {"file", "generated", "sklearn"}:
        return given, True
    if src.kind == "file":
        return src.path, True
    if src.kind == "generated":
        return f"generated {src.dataset} (rows {src.rows}, seed {src.seed}, drift {src.drift})", False
    return f"{src.kind} {getattr(src, 'name', '')}".strip(), False


@stage_task("register_challenger", io=True)
def register_challenger(run_id: str, model: Any, model_name: str, X_example: pd.DataFrame,
                        contract: DataContract) -> str:
    """Log and register the challenger (signature, input example, skops) with its data contract and the
    contract's diff from the champion's (`contract/contract_diff.json`, version tag `contract.diff`)."""
    version = log_model_version(run_id, model, model_name, X_example, model.predict(X_example),
                                optional_columns=contract.optional_inputs)
    log_contract(run_id, model_name, version, contract)
    return version


@stage_task("log_evaluation", io=True)
def log_evaluation(run: TrainingRun, evaluation: Evaluation, family: str, artifacts: RunArtifacts) -> None:
    """Holdout metrics, the winning family, plots, reference sample and summaries on the version's run."""
    log_holdout(run.run_id, evaluation.metrics, family, artifacts.files, artifacts.texts)


@stage_task("record_verdict", io=True)
def record_verdict(run: TrainingRun, cfg: PipelineConfig, version: str, best: FamilyResult, evaluation: Evaluation,
                   verdict: GateVerdict, contract: DataContract, data_summary: dict[str, Any]) -> None:
    """Attach the final gate verdict, lineage tags and the model card to the version and its run; the version's
    description is a one-line summary linking the card, the run is named and described after the version."""
    card = model_card(cfg, version, best.family, best.best_params, evaluation.metrics, verdict, contract,
                      run.lineage, data_summary)
    tags = version_tags(verdict.passed, verdict.reasons, evaluation.metrics, run.lineage, best.family)
    summary = card_summary(cfg, best.family, evaluation.metrics, verdict, contract,
                           model_card_route(run.run_id, run.experiment_id))
    record_verdict_on_version(run.run_id, cfg.registry.model_name, version, verdict.to_json(), tags, card, summary,
                              lineage=run.lineage)
    gate = "gate passed" if verdict.passed else "gate REJECTED: " + "; ".join(verdict.failures)[:300]
    describe_registered_run(run, cfg.registry.model_name, version, gate)


@stage_task("promote_champion", io=True)
def promote_champion(model_name: str, version: str, verdict: GateVerdict, by: str) -> registry.Promotion:
    """Move `champion` to the version only when the gate passed; otherwise record why not."""
    logger = get_run_logger()
    if not verdict.passed:
        reasons = verdict.failures
        logger.warning("Version %s not promoted: %s", version, "; ".join(reasons)[:500])
        events.emit(events.GATE_REJECTED, model_name, {"version": version, "reasons": reasons, "by": by}, version)
        return registry.Promotion(None, registry.champion_version(model_name))
    # the move's reason names the verdict; its every check is in the run's evaluation/gate_verdict.json
    entry = registry.promote(model_name, version, by, f"gate passed ({len(verdict.checks)} checks)")
    was = f"replacing version {entry['from_version']}" if entry["from_version"] else "the first champion"
    logger.info("Version %s is now champion (%s)", version, was)
    events.emit(events.MODEL_PROMOTED, model_name, entry, version)
    return registry.Promotion(registry.AliasMove.of(entry), registry.champion_version(model_name))
