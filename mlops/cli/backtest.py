"""`mlops backtest`: replay a labelled history through the monitor, the retrain policy and the gate, against
never and every-window retraining. The inputs are checked before Prefect starts, so a bad history ends
in one sentence at once; the replay itself is the `backtest` flow (mlops.monitoring.backtest inside).
The flow and the monitoring and data modules are imported inside the command (pandas, Prefect, MLflow):
`mlops --help` imports this module."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any

import typer

from mlops.cli.common import check_config, fail, prepare_flow_process, run_flow, stdout_to_stderr
from mlops.core.errors import MLOpsError

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="pipeline config (YAML); its timestamp_column orders "
                                                                 "the history")]


def _num(v: Any) -> str:
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.4f}"


def print_result(out: dict[str, Any]) -> None:
    """The per-window table and the summary, for a person."""
    from mlops.monitoring.backtest_report import arm_label

    s = out["summary"]
    echo = typer.echo
    echo("")
    echo(f"{'window':>6}  {'start':16}  {'rows':>6}  {'champ':>5}  {s['metric']:>9}  {'never':>9}  {'every':>9}  "
         f"{'drift':>5}  decision")
    for w in out["windows"]:
        b = w["baselines"]
        what = w["decision"] + (" -> retrained" if w["retrained"] else "") + (", promoted" if w["promoted"] else "")
        echo(f"{w['window']:>6}  {w['start']:16}  {w['rows']:>6}  v{w['champion_version']:<4}  {_num(w['metric']):>9}  "
             f"{_num(b.get('never')):>9}  {_num(b.get('every_window')):>9}  "
             f"{'n/a' if w['drift_share'] is None else format(w['drift_share'], '.2f'):>5}  {what}")
    echo("")
    share = s["recovered_share"]
    echo(f"{'policy':40s} mean {s['metric']} {_num(s['mean_metric'])}, {s['retrains']} retrain(s), "
         f"{s['promotions']} promotion(s), {s['fits']} fits in {s['training_seconds']:.1f} s")
    for name, b in s["baselines"].items():
        mark = " <- best fixed" if name == s["best_fixed"] else ""
        echo(f"{arm_label(name)[:40]:40s} mean {s['metric']} {_num(b['mean_metric'])}, {b['retrains']} retrain(s), "
             f"{b['fits']} fits in {b['training_seconds']:.1f} s{mark}")
    echo(f"Recovered  {'n/a (retraining gained nothing)' if share is None else f'{share:.1%}'} of the best fixed "
         f"schedule's gain over never retraining ({arm_label(s['best_fixed']) if s['best_fixed'] else 'n/a'})")
    echo(f"Files      {out['files']['report']} (plot {out['files']['plot']})")
    echo(f"Time       {s['seconds']:.1f} s")


def backtest_command(
    config: ConfigOpt = Path("configs/demand.yaml"),
    data: Annotated[str | None, typer.Option(help="CSV/Parquet file with the labelled history (default: the "
                                                  "config's source)")] = None,
    initial: Annotated[str, typer.Option(help="period the first champion trains on: 3M, 8W, 90D ...")] = "3M",
    every: Annotated[str, typer.Option(help="length of each replayed window: 1M, 2W, 7D, 24H ...")] = "1M",
    fast: Annotated[bool, typer.Option("--fast", help="the every-window baseline searches only when its rows "
                                                      "doubled, refitting between (long replays)")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="print {windows, summary} as JSON")] = False,
) -> None:
    """Replay history window by window: would the retrain policy have kept the model good, at what cost?"""
    cfg = check_config(config)
    try:
        from mlops.monitoring.backtest_plan import plan_backtest, read_history

        if data:
            history, notes = read_history(data, cfg)
        else:
            from mlops.core.data import read_source

            history, notes = read_source(cfg).frame, []
        plan_backtest(cfg, history, initial, every, notes)
    except MLOpsError as exc:
        fail(str(exc), exc.exit_code)
    prepare_flow_process("flows.backtest")
    from flows.backtest import backtest as backtest_flow

    with stdout_to_stderr(json_out):
        out = run_flow(backtest_flow, config_path=str(config), data_path=data, initial=initial, every=every,
                       fast=fast)
    if json_out:
        typer.echo(json.dumps({"windows": out["windows"], "summary": out["summary"], "files": out["files"],
                               "mlflow_run_id": out["mlflow_run_id"]}, indent=2, default=str))
    else:
        print_result(out)
