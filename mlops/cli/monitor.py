"""`mlops monitor` and `mlops demo-drift`: the monitoring flow from the command line, and the whole
drift loop on the built-in data (train, serve a drifted batch into the prediction log, monitor, retrain,
compare). The flows, the capability packages and the core's config, data and settings are imported
inside the commands (each pulls pydantic, pandas, MLflow or Prefect): `mlops --help` imports this module.

Runnable on its own too: `python -m mlops.cli.monitor demo-drift --config configs/default.yaml`.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mlops.cli.common import check_config as _check_config
from mlops.cli.common import fail as _fail
from mlops.cli.common import prepare_flow_process, stdout_to_stderr
from mlops.cli.common import run_flow as _run_flow
from mlops.core import startup
from mlops.core.errors import ConfigError, MLOpsError

if TYPE_CHECKING:
    from mlops.core.config import PipelineConfig
    from mlops.monitoring.result import MonitorResult

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="pipeline config (YAML)")]
DEFAULT_CONFIG = Path("configs/default.yaml")
DEMO_SHIFT_DAYS = 181  # the drifted batch comes after the ~180 days the built-in data covers


def _fmt(v: Any) -> str:
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.4f}"


def print_monitor_result(r: MonitorResult, report_asked: bool = True) -> None:
    """A few lines a person reads: window, quality, drift, live quality, decision, training."""
    echo = typer.echo
    echo("")
    if r.status == "no_champion" or r.window is None:
        echo(f"Monitor    {r.message}")
        return
    w = r.window
    where = "the prediction log" if w.source == "prediction_log" else w.source
    echo(f"Model      {r.model_name} v{r.model_version} (champion)")
    echo(f"Window     {w.rows:,} rows from {w.files} file(s) of {where}")
    for f in r.corrupt_files:
        echo(typer.style(f"           skipped unreadable file {f}", fg=typer.colors.YELLOW))
    q = r.quality
    if q:
        if q.passed:
            echo(f"Quality    passed ({q.rows_quarantined} row(s) break a row-level rule)")
        else:
            echo(typer.style("Quality    FAILED: no drift verdict, no retrain", fg=typer.colors.RED))
            for f in q.failures:
                echo(f"           - {f}")
    seen = r.seen_in_training
    if seen:
        share = seen.share
        echo(f"Seen       {'unknown' if share is None else f'{share:.1%}'} of the window in training "
             f"(seen_in_training_share): {seen.reason}")
    d = r.drift
    if d:
        drifted = ", ".join(f"{c} {_fmt(d.scores.get(c))}" for c in d.drifted_columns) or "none"
        echo(f"Drift      {len(d.drifted_columns)} of {len(d.scores)} columns drifted (share {d.drift_share:.2f}): "
             f"{drifted}")
        p = d.prediction
        if p:
            echo(f"           prediction `{p.column}` {'drifted' if p.drifted else 'stable'} ({_fmt(p.score)})")
    if r.report_path:
        echo(f"Report     {r.report_path}")
    elif d and not report_asked:
        echo("Report     not built (`--report` renders Evidently's HTML report; the verdict above is the same)")
    lq = r.live_quality
    if lq:
        if lq.status == "ok":
            echo(f"Live       {lq.labelled_rows:,} labelled rows: {lq.reason}")
        else:
            echo(f"Live       no verdict ({lq.reason})")
    dec = r.decision
    if dec:
        word = {"retrain": typer.style("RETRAIN", fg=typer.colors.GREEN), "hold": "hold",
                "no_decision": "no decision"}[dec.verdict]
        echo(f"Decision   {word}")
        for reason in dec.reasons:
            echo(f"           - {reason}")
    t = r.training
    if t:
        echo(f"Training   {t.status}: {t.detail}")
    if r.mlflow_run_id:
        echo(f"MLflow     monitoring run {r.mlflow_run_id}")


def monitor_command(
    config: ConfigOpt = DEFAULT_CONFIG,
    data: Annotated[str | None, typer.Option(help="CSV/Parquet file or folder to check instead of the prediction log")] = None,
    labels: Annotated[str | None, typer.Option(help="labels (CSV/Parquet) with request_id or the id column, and the target")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
    report: Annotated[bool, typer.Option("--report/--no-report", help="also render Evidently's HTML drift report "
                                         "(a few seconds; the verdict is the same without it)")] = False,
) -> None:
    """Check the champion against new data: data quality, drift, live quality, retrain policy (and the retrain)."""
    cfg = _check_config(config)
    startup.one_native_thread(("OMP_NUM_THREADS",))  # before OpenMP loads: see live_cycle
    prepare_flow_process(*startup.MONITORING)
    from flows.monitor import monitor

    with live_cycle(cfg), stdout_to_stderr(json_out):
        result = _run_flow(monitor, config_path=str(config), current_path=data, labels_path=labels,
                           html_report=report)
    if json_out:
        typer.echo(json.dumps(result.to_dict(), indent=2, default=str))
    else:
        print_monitor_result(result, report)
    if result.status == "no_champion":
        raise typer.Exit(4)
    if result.status == "quality_failed":
        raise typer.Exit(3)  # as a DataError would: the data, not the monitor, is at fault


@contextlib.contextmanager
def live_cycle(cfg: PipelineConfig) -> Iterator[None]:
    """What makes a monitor run that may retrain in this process cheaper, without changing any result
    (docs/benchmarks.md, the monitor-cycle section, has the figures).

    - Infra validation's fresh process starts now (`prestart_fresh_process`), so its imports overlap the
      monitor's checks rather than the retrain's search; unused, it ends at exit.
    - The retrain's search runs its trials on threads of this process, one OpenMP/BLAS thread each
      (`startup.search_on_threads`; OMP_NUM_THREADS is set by the command before anything loads
      OpenMP, unless already set), instead of new worker processes. The fits and their seeds are the
      same, so is the chosen model.
    """
    if cfg.monitoring.policy.run_training_locally and cfg.gate.infra_validation:
        from mlops.serving.infra_validation import prestart_fresh_process

        prestart_fresh_process()
    with startup.search_on_threads():
        yield


# ---------------------------------------------------------------------------------------------
# the demo


def run_demo(config: Path, rows: int, drift: float, seed: int, train_on: str | None,
             echo: Any = typer.echo) -> dict[str, Any]:
    """The whole loop on the built-in data; returns what happened and the measured comparison."""
    import mlflow
    import pandas as pd

    from mlops.core.config import METRIC_DIRECTION, GeneratedSource
    from mlops.core.data import CHURN_START, generate_churn
    from mlops.core.settings import configure_environment
    from mlops.monitoring import windows as mon
    from mlops.registry import versions as registry
    from mlops.serving.logbatch import log_scored_frame
    from mlops.training.evaluation import holdout_metrics, predict

    cfg = _check_config(config)
    if not isinstance(cfg.source, GeneratedSource):
        raise ConfigError(f"{config}: demo-drift needs the built-in generated data (source.kind: generated)")
    settings = configure_environment()
    mlflow.set_tracking_uri(settings.tracking_uri)
    name = cfg.registry.model_name
    demo_dir = settings.state_dir / "demo"
    policy: dict[str, Any] = {"consecutive_windows": 1, "cooldown_minutes": 0, "dedupe_seconds": 0,
                              "retrain_budget": 1.0, "min_rows": min(cfg.monitoring.policy.min_rows, rows),
                              "run_training_locally": True}
    if train_on:
        policy["train_on"] = train_on
    derived = mon.write_derived_config(config, {"monitoring": {"policy": policy}}, demo_dir / "demo-config.yaml")
    cfg = _check_config(derived)
    out: dict[str, Any] = {"config": str(derived), "model_name": name, "train_on": cfg.monitoring.policy.train_on}

    from flows.monitor import monitor
    from flows.train import train

    if registry.get_version_by_alias(name, registry.CHAMPION) is None:
        echo(f"1. No champion yet: training one on the built-in data ({cfg.source.rows:,} rows) ...")
        s = _run_flow(train, config_path=str(derived), reason="demo-drift: first champion")
        echo(f"   version {s.version} ({s.family}) is champion, holdout {cfg.primary_metric} "
             f"{s.metrics[cfg.primary_metric]:.4f}")
    else:
        echo("1. A champion exists; the demo starts from it.")
    old = registry.load_bundle(name, registry.CHAMPION, with_reference=False)
    out["old_version"] = old.version
    later = CHURN_START + pd.Timedelta(days=DEMO_SHIFT_DAYS)

    calm_rows = min(rows, 2000)
    echo(f"2. Serving {calm_rows:,} ordinary rows into the prediction log, then monitoring ...")
    calm = generate_churn(calm_rows, seed=seed, drift=0.0, start=later)
    log_scored_frame(calm, old.model, name, old.version, old.contract, settings.prediction_log_dir,
                         cfg.serving.sensitive_columns, cfg.serving.sensitive_mode)
    r1 = _run_flow(monitor, config_path=str(derived))
    out["calm"] = {"drift_share": r1.drift.drift_share if r1.drift else None, "retrain": r1.retrain,
                   "status": r1.status}
    echo(f"   drift share {_fmt(out['calm']['drift_share'])}: {r1.message}")

    echo(f"3. Serving {rows:,} drifted rows (drift={drift}, seed {seed + 1}) into the prediction log; "
         "their labels arrive ...")
    batch = generate_churn(rows, seed=seed + 1, drift=drift, start=later)
    _, ids = log_scored_frame(batch, old.model, name, old.version, old.contract, settings.prediction_log_dir,
                                  cfg.serving.sensitive_columns, cfg.serving.sensitive_mode)
    demo_dir.mkdir(parents=True, exist_ok=True)
    labels_path = demo_dir / f"labels-seed{seed + 1}.csv"
    ids.assign(**{cfg.target: batch[cfg.target].to_numpy()}).to_csv(labels_path, index=False)

    echo("4. Monitoring the drifted window (drift, live quality, policy; retrain when asked) ...")
    r2 = _run_flow(monitor, config_path=str(derived), labels_path=str(labels_path))
    out["monitor"] = r2
    d = r2.drift
    echo(f"   drift share {_fmt(d.drift_share if d else None)}, drifted: "
         f"{', '.join(d.drifted_columns if d else []) or 'none'}")
    if r2.report_path:
        echo(f"   report: {r2.report_path}")
    echo(f"   decision: {r2.decision.verdict if r2.decision else 'none'}: {r2.message}")
    t = r2.training
    echo(f"   training: {t.status if t else 'not started'}: {t.detail if t else ''}")

    new = registry.load_bundle(name, registry.CHAMPION, with_reference=False)
    out["new_version"] = new.version
    out["promoted"] = new.version != old.version

    eval_rows = max(rows, 5000)
    echo(f"5. Measuring old v{old.version} and new v{new.version} on {eval_rows:,} held-out rows never seen "
         f"(seeds {seed + 2}, {seed + 3}) ...")
    held = {"drifted": generate_churn(eval_rows, seed=seed + 2, drift=drift, start=later),
            "undrifted": generate_churn(eval_rows, seed=seed + 3, drift=0.0, start=later)}
    comparison: dict[str, dict[str, dict[str, float]]] = {}
    for kind, frame in held.items():
        X, y = frame.drop(columns=[cfg.target]), frame[cfg.target].to_numpy()
        comparison[kind] = {
            "old": holdout_metrics(cfg.task, y, predict(old.model, X, cfg.task)),
            "new": holdout_metrics(cfg.task, y, predict(new.model, X, cfg.task)),
        }
    out["comparison"] = comparison
    out["eval_rows"] = eval_rows
    metric = cfg.primary_metric
    out["primary_metric"] = metric
    o, n = comparison["drifted"]["old"][metric], comparison["drifted"]["new"][metric]
    out["new_beats_old"] = out["promoted"] and (n > o if METRIC_DIRECTION[metric] else n < o)
    return out


def print_comparison(out: dict[str, Any]) -> None:
    echo = typer.echo
    echo("")
    echo(f"Old champion v{out['old_version']} vs new champion v{out['new_version']} "
         f"({out['eval_rows']:,} held-out rows each; retrained on train_on={out['train_on']}):")
    echo("")
    echo("| held-out data | metric | old | new | change |")
    echo("| --- | --- | --- | --- | --- |")
    for kind, sides in out["comparison"].items():
        for m, old_v in sides["old"].items():
            new_v = sides["new"][m]
            echo(f"| {kind} | {m} | {old_v:.4f} | {new_v:.4f} | {new_v - old_v:+.4f} |")
    echo("")


def demo_drift_command(
    config: ConfigOpt = DEFAULT_CONFIG,
    rows: Annotated[int, typer.Option(min=200, help="drifted rows served and labelled")] = 10_000,
    drift: Annotated[float, typer.Option(min=0.0, max=1.0, help="how far the served data drifts (0..1)")] = 0.8,
    seed: Annotated[int, typer.Option(help="seed of the served batches (the training data uses the config's)")] = 101,
    train_on: Annotated[str | None, typer.Option(help="override policy.train_on: auto, new, window or original_plus_new")] = None,
) -> None:
    """Show the drift loop on the built-in data: drifted traffic -> monitor -> retrain -> a better champion."""
    if train_on is not None and train_on not in {"auto", "new", "window", "original_plus_new"}:
        _fail("--train-on must be one of: auto, new, window, original_plus_new")
    try:
        prepare_flow_process("flows.monitor", "flows.train")
        out = run_demo(config, rows, drift, seed, train_on)
    except MLOpsError as exc:
        _fail(str(exc), exc.exit_code)
        raise  # unreachable
    print_comparison(out)
    metric = out["primary_metric"]
    if not out["monitor"].retrain:
        _fail("the monitor did not ask for a retrain (see the decision above); try a fresh state folder "
              "(`make clean`) or a stronger --drift", 1)
    if not out["promoted"]:
        _fail("the retrained model was not promoted (see the training summary in the Prefect UI)", 1)
    drifted = out["comparison"]["drifted"]
    verdict = "beats" if out["new_beats_old"] else "does NOT beat"
    typer.echo(f"New champion v{out['new_version']} {verdict} the old v{out['old_version']} on drifted data: "
               f"{metric} {drifted['new'][metric]:.4f} vs {drifted['old'][metric]:.4f}.")
    if not out["new_beats_old"]:
        raise typer.Exit(1)


def _app() -> typer.Typer:
    app = typer.Typer(add_completion=False, no_args_is_help=True, help="Drift monitoring commands.")
    app.command("monitor")(monitor_command)
    app.command("demo-drift")(demo_drift_command)
    return app


if __name__ == "__main__":
    _app()()
