"""Training flow: data -> validate -> features -> tune -> evaluate -> gate -> register -> promote.

Wiring only: each stage is a task (tasks/), each decision a pure function (mlops/). Evaluation, the
gate and registration are submitted together, so the challenger is registered while it is evaluated
and infra validation (in a process started before the search) checks the registered version while
the gate and the artifacts are computed; promotion waits for all of them.
"""

from __future__ import annotations

from prefect import get_run_logger, runtime
from prefect.states import State

from flows.forms import (
    DEFAULT_CONFIG,
    LEFT_OUT,
    ConfigPath,
    OptionalPath,
    SearchOverrides,
    SearchOverridesParam,
    apply_search_overrides,
    form_flow,
    given,
    model_of,
    reason_suffix,
    run_name,
)
from mlops.core.config import load_config
from mlops.core.errors import MLOpsError
from mlops.core.settings import configure_environment
from mlops.registry.links import mlflow_where
from mlops.registry.tracking import training_lineage
from mlops.training.result import TrainingResult
from mlops.training.retune import plan_retune, search_digest
from mlops.training.tuning import pick_best
from tasks.data import load_data, split_data
from tasks.deployment import finish_infra_validation, infra_validation_process, start_infra_validation
from tasks.evaluation import collect_artifacts, evaluate_challenger, gate_challenger
from tasks.registry import (
    fail_training_runs,
    finish_training_run,
    load_champion,
    log_evaluation,
    promote_champion,
    record_verdict,
    register_challenger,
    start_training_run,
)
from tasks.reporting import (
    failed_run,
    outcome_tags,
    publish_training_report,
    publish_versions,
    tag_flow_run,
    training_state,
)
from tasks.tuning import build_features, choose_training_window, refit_challenger, tune_families
from tasks.validation import validate_training_data


@form_flow(name="train", log_prints=False, flow_run_name=run_name("train", suffix=reason_suffix))
def train(config_path: ConfigPath = DEFAULT_CONFIG, source_path: OptionalPath = LEFT_OUT, reason: str = "manual",
          search: SearchOverridesParam = LEFT_OUT) -> TrainingResult | State:
    """Train, tune, evaluate and gate a challenger; register it; make it champion if it passes.

    Args:
        config_path: The pipeline config (YAML): data source, model families, search, gate thresholds.
        source_path: A CSV/Parquet file or folder (inside the config's data roots) to train on instead of the
            config's own source. Leave it empty to use the config's source; an empty text is refused.
        reason: Why this run happens; recorded on the MLflow run and the version, and part of the run's name.
        search: Search settings for this run only (trials per family, which families, a time budget in
            seconds); what is left empty keeps the config's value.
    """
    try:
        result = run_training(config_path, given(source_path), reason, given(search))
    except MLOpsError as exc:
        fail_training_runs(str(runtime.flow_run.id or "local"))
        return failed_run(exc, model_of(config_path))
    except BaseException:  # a bug or a crash: the MLflow run says FAILED, not FINISHED
        fail_training_runs(str(runtime.flow_run.id or "local"))
        raise
    tag_flow_run(*outcome_tags(result.model_name, result.version, result.outcome))
    return training_state(result)


def run_training(config_path: str, source_path: str | None, reason: str,
                 search: SearchOverrides | None = None) -> TrainingResult:
    """The loop in order, one log line per stage with its figure; a user's error (bad config, bad data)
    raises MLOpsError."""
    logger = get_run_logger()
    cfg = apply_search_overrides(load_config(config_path), search)
    if search is not None and not search.is_empty():
        logger.info("Search overrides for this run: %s", search.describe())
    settings = configure_environment()
    flow_run_id = str(runtime.flow_run.id or "local")
    name, work = cfg.registry.model_name, settings.runs_dir / flow_run_id
    loaded, new_rows = load_data(cfg, source_path)  # a refused or unreadable source ends the run here
    with infra_validation_process(cfg.gate.infra_validation) as fresh:  # imports the serving stack meanwhile
        champion = load_champion(name)
        checked = validate_training_data(loaded, cfg, champion.contract if champion else None,
                                         settings.quarantine_dir / flow_run_id)
        split = split_data(checked.outcome.good, cfg, new_rows)
        inputs = build_features(split.train, checked.contract, cfg)
        lineage = training_lineage(loaded.fingerprint, cfg.config_hash(), str(config_path), flow_run_id,
                                   source_path or cfg.source.kind, reason)
        run = start_training_run(cfg, split, inputs.scoring, lineage, settings.tracking_uri, settings.artifact_root)
        reuse = plan_retune(cfg, champion, rows=len(split.train), retraining=new_rows is not None)
        run.lineage.update(reuse.lineage(len(split.train), search_digest(cfg)))
        results = tune_families(cfg, inputs, run.run_id, reuse)  # the budget and trials shared where it pays
        best = pick_best(results)
        leaderboard = sorted((r.leaderboard_row() for r in results), key=lambda r: -r["cv_score"])
        logger.info("Tuning: best family %s, cv score %.4f", best.family, best.best_score)
        windowed = choose_training_window(best.best_estimator, split.train, cfg)
        run.lineage["training_window"] = windowed.choice.chosen
        evaluating = evaluate_challenger.submit(windowed.model, split.test, cfg, work / "evaluation")
        judging = gate_challenger.submit(evaluating, champion, split, cfg, windowed.model, checked.contract)
        served = refit_challenger(windowed, split, cfg)  # the gated model itself unless split.refit
        registering = register_challenger.submit(run.run_id, served, name, inputs.X.head(50), checked.contract)
        infra = start_infra_validation.submit(
            name, registering, served, split.test.drop(columns=[cfg.target]), cfg.task,
            cfg.gate.latency_budget_ms, settings.tracking_uri, fresh, cfg.gate.latency_percentile) if fresh else None
        evaluation = evaluating.result()
        logger.info("Holdout (%d rows): %s", len(split.test),
                    ", ".join(f"{k}={v:.4f}" for k, v in evaluation.metrics.items()))
        artifacts = collect_artifacts(evaluation, served, split, cfg, checked.contract, leaderboard, checked, work,
                                      windowed.choice)
        log_evaluation(run, evaluation, best.family, artifacts)
        verdict, version = judging.result(), registering.result()
        logger.info("Registered %s v%s (%s)", name, version, best.family)
        if infra is not None:
            verdict.add(finish_infra_validation(infra.result()))
        failed = [c.name for c in verdict.checks if not c.passed]
        logger.info("Gate: %s", f"PASSED ({len(verdict.checks)} checks)" if verdict.passed
                    else f"REJECTED, failed: {', '.join(failed)}")
        record_verdict(run, cfg, version, best, evaluation, verdict, checked.contract, checked.outcome.summary())
        promotion = promote_champion(name, version, verdict, by=f"train flow run {flow_run_id}")
        finish_training_run(run)
    result = TrainingResult(
        model_name=name, version=version, family=best.family, metrics=evaluation.metrics,
        gate_passed=verdict.passed, gate_reasons=verdict.reasons, promoted=promotion.promoted,
        champion_version=promotion.champion_version, previous_champion=promotion.previous_champion,
        leaderboard=leaderboard, quarantine_file=str(checked.quarantine_file) if checked.quarantine_file else None,
        data=checked.outcome.summary(), profile=checked.profile.to_dict(), profile_lines=checked.profile.summary_lines(),
        mlflow_run_id=run.run_id, experiment_id=run.experiment_id, tracking_uri=settings.tracking_uri,
        lineage=run.lineage)
    logger.info("Champion: %s", result.champion_change())
    logger.info("MLflow: %s", mlflow_where(result.tracking_uri, result.experiment_id, result.mlflow_run_id))
    publish_training_report(result, checked.profile.to_markdown())
    publish_versions(name)
    return result
