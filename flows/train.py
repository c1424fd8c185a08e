"""Training flow: data -> validate -> features -> tune -> evaluate -> gate -> register -> promote.

Wiring only: each stage is a task (tasks/), each decision a pure function (mlops/). Evaluation, the
gate and registration are submitted together, so the challenger is registered while it is evaluated
and infra validation (in a process started before the search) checks the registered version while
the gate and the artifacts are computed; promotion waits for all of them.
"""

from __future__ import annotations

from prefect import flow, get_run_logger, runtime
from prefect.states import Failed, State

from mlops.core.config import load_config
from mlops.core.errors import MLOpsError
from mlops.core.settings import configure_environment
from mlops.registry.tracking import training_lineage
from mlops.training.result import TrainingResult
from mlops.training.tuning import pick_best
from tasks.data import load_data, split_data
from tasks.deployment import finish_infra_validation, infra_validation_process, start_infra_validation
from tasks.evaluation import collect_artifacts, evaluate_challenger, gate_challenger
from tasks.registry import (
    load_champion,
    log_evaluation,
    promote_champion,
    record_verdict,
    register_challenger,
    start_training_run,
)
from tasks.reporting import publish_training_report
from tasks.tuning import build_features, refit_challenger, tune_candidates
from tasks.validation import validate_training_data


@flow(name="train", log_prints=False)
def train(config_path: str = "configs/default.yaml", source_path: str | None = None,
          reason: str = "manual") -> TrainingResult | State:
    """Train, tune, evaluate and gate a challenger; register it; make it champion if it passes.

    `source_path` overrides the config's data source with a CSV/Parquet file or folder (e.g. from a
    `mlops.data.arrived` event); `reason` is recorded with the run.
    """
    try:
        return run_training(config_path, source_path, reason)
    except MLOpsError as exc:
        get_run_logger().error("%s", exc)
        return Failed(message=str(exc), data=exc)


def run_training(config_path: str, source_path: str | None, reason: str) -> TrainingResult:
    """The loop in order; a user's error (bad config, bad data) raises MLOpsError."""
    cfg = load_config(config_path)
    settings = configure_environment()
    flow_run_id = str(runtime.flow_run.id or "local")
    name, work = cfg.registry.model_name, settings.runs_dir / flow_run_id
    with infra_validation_process(cfg.gate.infra_validation) as fresh:  # imports the serving stack meanwhile
        loaded, new_rows = load_data(cfg, source_path)
        champion = load_champion(name)
        checked = validate_training_data(loaded, cfg, champion.contract if champion else None,
                                         settings.quarantine_dir / flow_run_id)
        split = split_data(checked.outcome.good, cfg, new_rows)
        inputs = build_features(split.train, checked.contract, cfg)
        lineage = training_lineage(loaded.fingerprint, cfg.config_hash(), str(config_path), flow_run_id,
                                   source_path or cfg.source.kind, reason)
        run = start_training_run(cfg, split, inputs.scoring, lineage, settings.tracking_uri, settings.artifact_root)
        results = [tune_candidates(spec, inputs, cfg.task, cfg.search, run.run_id) for spec in cfg.models]
        best = pick_best(results)
        leaderboard = sorted((r.leaderboard_row() for r in results), key=lambda r: -r["cv_score"])
        evaluating = evaluate_challenger.submit(best.best_estimator, split.test, cfg, work / "evaluation")
        judging = gate_challenger.submit(evaluating, champion, split, cfg, best.best_estimator, checked.contract)
        served = refit_challenger(best.best_estimator, split, cfg)  # the gated model itself unless split.refit
        registering = register_challenger.submit(run.run_id, served, name, inputs.X.head(50), checked.contract)
        infra = start_infra_validation.submit(
            name, registering, served, split.test.drop(columns=[cfg.target]), cfg.task,
            cfg.gate.latency_budget_ms, settings.tracking_uri, fresh, cfg.gate.latency_percentile) if fresh else None
        evaluation = evaluating.result()
        artifacts = collect_artifacts(evaluation, served, split, cfg, checked.contract, leaderboard, checked, work)
        log_evaluation(run, evaluation, best.family, artifacts)
        verdict, version = judging.result(), registering.result()
        if infra is not None:
            verdict.add(finish_infra_validation(infra.result()))
        record_verdict(run, cfg, version, best, evaluation, verdict, checked.contract, checked.outcome.summary())
        promotion = promote_champion(name, version, verdict, by=f"train flow run {flow_run_id}")
    result = TrainingResult(
        model_name=name, version=version, family=best.family, metrics=evaluation.metrics,
        gate_passed=verdict.passed, gate_reasons=verdict.reasons, promoted=promotion.promoted,
        champion_version=promotion.champion_version, previous_champion=promotion.previous_champion,
        leaderboard=leaderboard, quarantine_file=str(checked.quarantine_file) if checked.quarantine_file else None,
        data=checked.outcome.summary(), profile=checked.profile.to_dict(), profile_lines=checked.profile.summary_lines(),
        mlflow_run_id=run.run_id, experiment_id=run.experiment_id, tracking_uri=settings.tracking_uri,
        lineage=run.lineage)
    publish_training_report(result, verdict.to_markdown(), checked.profile.to_markdown())
    return result
