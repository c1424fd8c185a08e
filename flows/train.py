"""Training flow: data -> validate -> features -> tune -> evaluate -> gate -> register -> promote."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, runtime
from prefect.states import Failed

from mlops.core.config import load_config
from mlops.core.errors import MLOpsError
from mlops.core.settings import configure_environment
from mlops.serving.infra_validation import FreshProcess


@flow(name="train", log_prints=False)
def train(config_path: str = "configs/default.yaml", source_path: str | None = None, reason: str = "manual") -> Any:
    """Train, tune, evaluate and gate a challenger; register it; make it champion if it passes.

    `source_path` overrides the config's data source with a CSV/Parquet file or folder (e.g. from a
    `mlops.data.arrived` event); `reason` is recorded with the run.
    """
    logger = get_run_logger()
    try:
        return run_training(config_path, source_path, reason)
    except MLOpsError as exc:
        logger.error("%s", exc)
        return Failed(message=str(exc), data=exc)


def run_training(config_path: str, source_path: str | None, reason: str) -> dict[str, Any]:
    cfg = load_config(config_path)
    # The fresh process for infra validation starts now and imports the serving stack while this one
    # validates and tunes; it is ended here if the run stops before using it.
    fresh = FreshProcess() if cfg.gate.infra_validation else None
    try:
        return _run_training(cfg, config_path, source_path, reason, fresh)
    finally:
        if fresh is not None:
            fresh.close()


def _run_training(cfg: Any, config_path: str, source_path: str | None, reason: str,
                  fresh: FreshProcess | None) -> dict[str, Any]:
    import mlflow

    from mlops.core.features import build_preprocessor
    from mlops.core.preload import preload
    from mlops.core.rowkeys import pop_new_rows, save_training_hashes
    from mlops.monitoring.live_quality import holdout_slice_metrics
    from mlops.registry import versions as registry
    from mlops.registry.tracking import dumps
    from mlops.training.assessment import reference_sample
    from mlops.training.card import model_card
    from mlops.training.tuning import pick_best, scorer_for
    from tasks.data import load_data, split_data
    from tasks.deployment import finish_infra_validation, start_infra_validation
    from tasks.evaluation import evaluate_challenger, gate_challenger
    from tasks.registry import (
        attach_artifacts,
        find_champion,
        promote_champion,
        record_verdict,
        register_challenger,
        version_tags,
    )
    from tasks.reporting import mlflow_run_url, publish_training_report
    from tasks.tuning import tune_candidates
    from tasks.validation import validate_training_data

    settings = configure_environment()
    mlflow.set_tracking_uri(settings.tracking_uri)
    flow_run_id = str(runtime.flow_run.id or "local")
    work = settings.runs_dir / flow_run_id
    name = cfg.registry.model_name

    loaded = load_data(cfg, source_path)
    df, fingerprint, profile = loaded.frame, loaded.fingerprint, loaded.profile
    df, new_rows = pop_new_rows(df)  # a retraining file marks the rows the champion never trained on
    champion = find_champion(name)
    outcome, contract, quarantine_file, profile = validate_training_data(
        df, cfg, champion.contract if champion else None, settings.quarantine_dir / flow_run_id, loaded.malformed,
        profile,
    )
    split = split_data(outcome.good, cfg, new_rows)
    X, y = split.train.drop(columns=[cfg.target]), split.train[cfg.target]
    binary = cfg.task == "classification" and y.nunique() == 2
    scoring = scorer_for(cfg.task, cfg.primary_metric, binary, cfg.search.scoring,
                         labels=y, positive_class=cfg.positive_class)
    preprocessor = build_preprocessor(contract, cfg.features)

    exp_id = registry.ensure_experiment(cfg.registry.experiment or cfg.name, settings.artifact_root)
    lineage = {
        "data_fingerprint": fingerprint,
        "config_hash": cfg.config_hash(),
        "config_path": str(config_path),
        "code_version": registry.code_version(),
        "prefect_flow_run_id": flow_run_id,
        "data_source": source_path or cfg.source.kind,
        "reason": reason,
        "holdout": split.holdout,
    }
    with mlflow.start_run(run_name=f"train-{cfg.name}") as run:
        run_id = run.info.run_id
        mlflow.set_tags({f"lineage.{k}": v for k, v in lineage.items()} | {"mlops.stage": "training"})
        mlflow.log_params({"task": cfg.task, "primary_metric": cfg.primary_metric, "scoring": scoring,
                           "n_trials": cfg.search.n_trials, "cv_folds": cfg.search.cv_folds,
                           "strategy": cfg.search.strategy, "seed": cfg.search.seed,
                           "rows_train": len(split.train), "rows_holdout": len(split.test)})

    # registration and the plots need these; import them while the search keeps the cores busy
    preloading = preload("skops.io", "mlflow.sklearn", "matplotlib.pyplot")
    results = [tune_candidates(spec, preprocessor, X, y, cfg.task, scoring, cfg.search, run_id) for spec in cfg.models]
    preloading.join()
    best = pick_best(results)
    leaderboard = sorted((r.leaderboard_row() for r in results), key=lambda r: -r["cv_score"])

    # Register first, then infra-validate in a fresh process (on the other core) while the holdout
    # evaluation, the gate and the artifacts are computed here.
    X_test = split.test.drop(columns=[cfg.target])
    version = register_challenger(run_id, best.best_estimator, name, X.head(50), contract.to_json())
    infra = None
    if fresh is not None:
        model = best.best_estimator
        expected = model.predict_proba(X_test) if cfg.task == "classification" else model.predict(X_test)
        # the checks run in the fresh process during evaluation; the latency is timed afterwards
        infra = start_infra_validation(name, version, X_test, expected, cfg.gate.latency_budget_ms,
                                       settings.tracking_uri, fresh, cfg.gate.latency_percentile)

    evaluation = evaluate_challenger(best.best_estimator, split.test, cfg, work / "evaluation")
    verdict = gate_challenger(evaluation, champion.model if champion else None,
                              champion.version if champion else None, split.test, cfg,
                              model=best.best_estimator, train=split.train, contract=contract)
    reference = reference_sample(split.train, best.best_estimator, cfg)
    work.mkdir(parents=True, exist_ok=True)
    ref_path = work / "reference.parquet"
    reference.to_parquet(ref_path, index=False)
    artifacts = [("evaluation", p) for p in evaluation.plots.values()] + [("reference", ref_path)]
    artifacts.append(("reference", save_training_hashes(split.train, contract, cfg.serving.sensitive_columns,
                                                        work / "train_row_hashes.npz")))
    if quarantine_file:
        artifacts.append(("quarantine", quarantine_file))
    attach_artifacts(run_id, artifacts, {
        "evaluation/holdout_metrics.json": dumps(evaluation.metrics),
        "evaluation/leaderboard.json": dumps(leaderboard),
        "evaluation/slice_metrics.json": dumps(holdout_slice_metrics(split.test, evaluation.predictions, cfg)),
        "data/validation_summary.json": dumps(outcome.summary()),
        "data/profile.json": dumps(profile.to_dict()),
        "data/profile.md": profile.to_markdown(),
    })
    with mlflow.start_run(run_id=run_id):
        mlflow.log_metrics({f"holdout_{k}": v for k, v in evaluation.metrics.items()})
        mlflow.set_tag("best_family", best.family)
    if infra is not None:
        verdict.add(finish_infra_validation(infra))
    card = model_card(cfg, version, best.family, best.best_params, evaluation.metrics, verdict, contract, lineage,
                      outcome.summary())
    record_verdict(run_id, name, version, verdict.to_json(),
                   version_tags(verdict.passed, verdict.reasons, evaluation.metrics, lineage, cfg.task, best.family),
                   card)
    promotion = promote_champion(name, version, verdict.passed, verdict.reasons if verdict.passed else verdict.failures,
                                 by=f"train flow run {flow_run_id}")
    current = registry.get_version_by_alias(name, registry.CHAMPION)
    summary = {
        "model_name": name,
        "version": version,
        "family": best.family,
        "metrics": evaluation.metrics,
        "gate_passed": verdict.passed,
        "gate_reasons": verdict.reasons,
        "promoted": promotion is not None,
        "champion_version": current.version if current else None,
        "previous_champion": promotion["from_version"] if promotion else None,
        "leaderboard": leaderboard,
        "quarantine_file": str(quarantine_file) if quarantine_file else None,
        "data": outcome.summary(),
        "profile": profile.to_dict(),
        "profile_lines": profile.summary_lines(),
        "mlflow_run_id": run_id,
        "experiment_id": exp_id,
        "tracking_uri": settings.tracking_uri,
        "lineage": lineage,
    }
    publish_training_report(summary, leaderboard, verdict.to_markdown(), profile.to_markdown(),
                            mlflow_run_url(settings.tracking_uri, exp_id, run_id))
    return summary


if __name__ == "__main__":
    import sys

    configure_environment()
    print(train(sys.argv[1] if len(sys.argv) > 1 else "configs/default.yaml"))
