"""Backtest flow: replay a labelled history window by window through the monitor, the retrain policy and
the gate (mlops.monitoring.backtest), then record it: files under the state folder, a Prefect table and
markdown artifact, and one MLflow run.

Fast by design: the replay runs in this process as plain function calls (no task, MLflow run, HTML
report or infra validation per window), so a two-year hourly history replays in minutes.
"""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, runtime
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.states import Completed, State

from flows.forms import LEFT_OUT, ConfigPath, OptionalPath, form_flow, given_path, model_of, run_name
from mlops.core.config import PipelineConfig, load_config
from mlops.core.data import read_source
from mlops.core.errors import MLOpsError
from mlops.core.names import artifact_key
from mlops.core.settings import configure_environment
from mlops.monitoring.backtest import run_backtest
from mlops.monitoring.backtest_plan import BacktestPlan, plan_backtest, read_history
from mlops.monitoring.backtest_report import backtest_folder, log_backtest_run, table_rows, to_markdown, write_files
from tasks.reporting import failed_run, outcome_tags, tag_flow_run


@form_flow(name="backtest", log_prints=False, flow_run_name=run_name("backtest"))
def backtest(config_path: ConfigPath = "configs/demand.yaml", data_path: OptionalPath = LEFT_OUT, initial: str = "3M",
             every: str = "1M", fast: bool = False) -> dict[str, Any] | State:
    """Replay a labelled history in data time: first champion, then monitor, policy, retrain and gate per window.

    Args:
        config_path: The pipeline config (YAML); its timestamp_column orders the history.
        data_path: A CSV or Parquet file holding the labelled history; leave it empty for the config's own source.
        initial: The period the first champion trains on, e.g. 3M (months), 8W, 90D.
        every: The length of each replayed window, e.g. 1M, 2W, 7D, 24H.
        fast: The every-window baseline searches only when its rows doubled and refits between (for long
            replays); off, it searches at every window.
    """
    try:
        out = run_backtest_flow(config_path, given_path(data_path), initial, every, fast)
    except MLOpsError as exc:
        return failed_run(exc, model_of(config_path))
    tag_flow_run(*outcome_tags(model_of(config_path), None, "replayed"))
    return Completed(message=outcome_line(out["summary"]), data=out)


def outcome_line(s: dict[str, Any]) -> str:
    """The final state's message: windows, the policy's mean metric and retrains against never retraining."""
    def num(x: Any) -> str:
        return f"{x:.4g}" if isinstance(x, (int, float)) else "n/a"

    return (f"{s['windows']} windows replayed: mean {s['metric']} {num(s['mean_metric'])} with {s['retrains']} "
            f"retrain(s) (never retraining: {num(s['baselines']['never']['mean_metric'])})")


def load_plan(cfg: PipelineConfig, data_path: str | None, initial: str, every: str) -> BacktestPlan:
    """The history (the file, or the config's source) cut into the initial period and the windows."""
    if data_path is not None:
        history, notes = read_history(data_path, cfg)
    else:
        history, notes = read_source(cfg).frame, []
    return plan_backtest(cfg, history, initial, every, notes)


def run_backtest_flow(config_path: str, data_path: str | None, initial: str, every: str,
                      fast: bool = False) -> dict[str, Any]:
    """Plan, replay, write the files, publish the artifacts and the MLflow run; returns the JSON the CLI prints."""
    logger = get_run_logger()
    cfg = load_config(config_path)
    settings = configure_environment()
    plan = load_plan(cfg, data_path, initial, every)
    logger.info("Backtest: %d rows, initial %s (%d rows), %d windows of %s", plan.rows, initial, len(plan.initial),
                len(plan.windows), every)
    result = run_backtest(cfg, plan, log=lambda m: logger.info("%s", m), fast=fast)
    files = write_files(result, backtest_folder(settings.state_dir, cfg.registry.model_name))
    flow_run_id = str(runtime.flow_run.id or "local")
    run_id, _ = log_backtest_run(result, files, cfg.registry.experiment or cfg.name, settings.artifact_root,
                                 settings.tracking_uri, {"config_path": str(config_path), "data_path": str(data_path),
                                                         "config_hash": cfg.config_hash(),
                                                         "prefect_flow_run_id": flow_run_id})
    name = cfg.registry.model_name
    create_table_artifact(table_rows(result), key=artifact_key(name, "backtest-windows"),
                          description="Backtest: one row per replayed window")
    create_markdown_artifact(to_markdown(result, files), key=artifact_key(name, "backtest-summary"),
                             description="Backtest: the policy against never and every-window retraining")
    out = result.to_dict()
    out["files"], out["mlflow_run_id"] = files, run_id
    logger.info("Backtest done in %.1f s: mean %s %s (never %s, every window %s), recovered share %s; files in %s",
                result.seconds, result.metric, out["summary"]["mean_metric"],
                out["summary"]["baselines"]["never"]["mean_metric"],
                out["summary"]["baselines"]["every_window"]["mean_metric"], out["summary"]["recovered_share"],
                files["report"])
    return out
