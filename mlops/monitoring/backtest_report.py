"""A backtest's record: the per-window table, the summary, the metric plot, the files under the state
folder, and the markdown and MLflow views of them (mlops.monitoring.backtest computes them)."""

from __future__ import annotations

import json
import math
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from mlops.core.names import slug
from mlops.monitoring.backtest_result import BacktestResult
from mlops.registry.tracking import TAG_LIMIT, log_run_artifacts
from mlops.registry.versions import client, ensure_experiment


def arm_label(name: str) -> str:
    """How the report names an arm."""
    if name.startswith("every_window_last_"):
        k = name.removeprefix("every_window_last_")
        return f"retrain every window on the last {k} window(s)"
    return {"policy": "policy", "never": "never retrain", "every_window": "retrain every window (all history)",
            "hindsight": "hindsight-optimal keep/retrain schedule"}.get(name, name)
TABLE_COLUMNS = ["window", "start", "end", "rows", "champion_version", "metric", "drift_share", "decision",
                 "retrained", "promoted", "seconds", "reasons"]


def backtest_folder(state_dir: Path, model_name: str, now: datetime | None = None) -> Path:
    """Where one backtest's files go: `<state>/backtest/<model>-<UTC time>` (a new folder per run)."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S")
    return state_dir / "backtest" / f"{slug(model_name)}-{stamp}"


def _num(v: float | None, digits: int = 4) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{v:.{digits}f}"


def short_reasons(reasons: list[str], limit: int = 160) -> str:
    """The decision's reasons in one cell: triggers and blocks first, the drift note after."""
    key = [r for r in reasons if not r.startswith("drift share ")] or reasons
    text = "; ".join(key)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def table_rows(result: BacktestResult) -> list[dict[str, Any]]:
    """The per-window table as plain rows (a Prefect table artifact, the CSV file)."""
    rows = []
    for w in result.windows:
        row = {"window": w.window, "start": w.start, "end": w.end, "rows": w.rows,
               "champion_version": w.champion_version, "metric": w.metric, "drift_share": w.drift_share,
               "decision": w.decision, "retrained": w.retrained, "promoted": w.promoted, "seconds": w.seconds,
               "reasons": short_reasons(w.reasons) + (f" | {w.retrain_detail}" if w.retrain_detail else "")}
        row |= {f"metric_{k}": v for k, v in w.baselines.items()}
        rows.append(row)
    return rows


def to_markdown(result: BacktestResult, files: dict[str, str] | None = None) -> str:
    """The summary and the per-window table, for a Prefect markdown artifact and `report.md`."""
    s = result.summary()
    m = result.metric
    better = "higher" if result.higher_is_better else "lower"
    share = s["recovered_share"]
    best = s["best_fixed"]
    lines = [f"# Backtest: {len(result.windows)} windows of {result.every} after an initial {result.initial} "
             f"({result.initial_rows:,} rows)", "",
             f"Metric `{m}` on each window's labelled rows ({better} is better); policy `train_on: {result.train_on}`; "
             + ("fast: the every-window baseline searched when its rows doubled and refitted between."
                if result.fast else "the every-window baseline searched at every window."),
             "", "| run | mean " + m + " | retrains | fits | training s | failed retrains |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name, a in result.arms.items():
        mark = " (best fixed)" if name == best else ""
        lines.append(f"| {arm_label(name)}{mark} | {_num(a.mean_metric)} | {a.retrains} | {a.fits} | "
                     f"{a.training_seconds:.1f} | {a.failures} |")
    cost = s["retrain_cost"]
    lines += ["", f"Recovered share (the policy's share of the best fixed schedule's gain over never retraining; best "
              f"fixed: {arm_label(best) if best else 'n/a'}): "
              + ("n/a (retraining gained nothing)" if share is None else f"**{share:.1%}**")
              + (f", regret {_num(s['regret'])} {m}" if s["regret"] is not None else "") + "."]
    if cost is not None:
        lines += [f"Hindsight-optimal schedule for a retrain cost of {_num(cost)} {m}: built from "
                  f"{arm_label(s['hindsight_family'] or '')} models."]
    lines += ["", "| window | start | rows | champion | " + m + " | never | every window | drift share | decision "
              "| retrained | promoted | s | reasons |", "| --- " * 13 + "|"]
    for w in result.windows:
        b = w.baselines
        lines.append(f"| {w.window} | {w.start} | {w.rows:,} | v{w.champion_version} | {_num(w.metric)} | "
                     f"{_num(b.get('never'))} | {_num(b.get('every_window'))} | {_num(w.drift_share, 2)} | "
                     f"{w.decision} | {'yes' if w.retrained else ''} | {'yes' if w.promoted else ''} | "
                     f"{w.seconds:.1f} | {short_reasons(w.reasons, 120).replace('|', '/')}"
                     f"{' / ' + w.retrain_detail[:160].replace('|', '/') if w.retrain_detail else ''} |")
    lines += ["", f"Replayed in {result.seconds:.1f} s (first champion {result.first_champion_seconds:.1f} s)."]
    for note in result.notes:
        lines.append(f"- note: {note}")
    if files:
        lines += ["", "Files: " + ", ".join(f"`{p}`" for p in files.values())]
    return "\n".join(lines) + "\n"


def plot_metric(result: BacktestResult, path: Path) -> Path:
    """The metric per window for the policy and the baselines; the policy's promotions marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [pd.Timestamp(w.start) for w in result.windows]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    best = result.best_fixed
    styles = {"never": ("tab:gray", "--"), "every_window": ("tab:green", ":"), "hindsight": ("tab:orange", "-."),
              "policy": ("tab:blue", "-")}
    if best and best != "every_window":
        styles[best] = ("tab:olive", ":")
    for name in [n for n in styles if n in result.arms]:
        arm = result.arms[name]
        if len(arm.metrics) != len(x):
            continue
        color, dash = styles[name]
        ys = [math.nan if v is None else v for v in arm.metrics]
        ax.plot(x, ys, dash, color=color, marker="o", markersize=3, label=f"{arm_label(name)} "
                f"(mean {_num(arm.mean_metric, 3)})")
    promoted = [pd.Timestamp(w.end) for w in result.windows if w.promoted]
    for i, wx in enumerate(promoted):
        ax.axvline(wx, color="tab:blue", alpha=0.25, label="policy promoted a retrain" if i == 0 else None)
    fig.autofmt_xdate()
    ax.set_xlabel("window start")
    ax.set_ylabel(result.metric)
    ax.set_title(f"Backtest: {result.metric} per window ({'higher' if result.higher_is_better else 'lower'} is better)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_files(result: BacktestResult, folder: Path) -> dict[str, str]:
    """The table (CSV, JSON), the summary, the kept predictions, the plot and the markdown report."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {"windows": folder / "windows.csv", "result": folder / "backtest.json",
             "predictions": folder / "predictions.parquet", "plot": folder / "metric.png", "report": folder / "report.md"}
    pd.DataFrame(table_rows(result)).to_csv(files["windows"], index=False)
    files["result"].write_text(json.dumps(result.to_dict(), indent=2, default=str), encoding="utf-8")
    result.predictions.to_parquet(files["predictions"], index=False)
    plot_metric(result, files["plot"])
    out = {k: str(v) for k, v in files.items()}
    files["report"].write_text(to_markdown(result, out), encoding="utf-8")
    return out


def mlflow_metrics(result: BacktestResult) -> dict[str, float]:
    """Summary figures for the MLflow run (None and non-finite values left out)."""
    s = result.summary()
    raw: dict[str, Any] = {"mean_metric": s["mean_metric"], "retrains": s["retrains"], "promotions": s["promotions"],
                           "recovered_share": s["recovered_share"], "regret": s["regret"], "fits": s["fits"],
                           "training_seconds": s["training_seconds"], "windows": s["windows"], "seconds": s["seconds"]}
    for name, b in s["baselines"].items():
        raw |= {f"{name}_mean_metric": b["mean_metric"], f"{name}_retrains": b["retrains"]}
    return {k: float(v) for k, v in raw.items() if v is not None and math.isfinite(float(v))}


def mlflow_window_metrics(result: BacktestResult) -> dict[str, list[float]]:
    """Per-window series (step = window number) for MLflow's charts."""
    out: dict[str, list[float]] = {}
    for name, arm in result.arms.items():
        out[f"window_metric_{name}"] = [math.nan if v is None else float(v) for v in arm.metrics]
    out["window_drift_share"] = [math.nan if w.drift_share is None else float(w.drift_share) for w in result.windows]
    return out


def log_backtest_run(result: BacktestResult, files: dict[str, str], experiment: str, artifact_root: str,
                     tracking_uri: str, tags: dict[str, str]) -> tuple[str, str]:
    """One MLflow run in `<experiment>-backtest`: parameters, summary metrics, per-window series and the files.

    Built from the registry's client, experiment and artifact helpers (no registry helper opens a run
    that is neither training nor monitoring). Returns (run id, experiment id).
    """
    from mlflow.entities import Metric, Param, RunTag

    c = client(tracking_uri)
    exp_id = ensure_experiment(f"{experiment}-backtest", artifact_root)
    s = result.summary()
    run = c.create_run(exp_id, run_name=f"backtest-{len(result.windows)}x{result.every}",
                       tags={"mlops.stage": "backtest", **{k: str(v)[:TAG_LIMIT] for k, v in tags.items()}})
    rid = run.info.run_id
    now = int(time.time() * 1000)
    params = [Param(k, str(v)) for k, v in {"initial": result.initial, "every": result.every,
                                            "train_on": result.train_on, "metric": result.metric,
                                            "windows": len(result.windows), "initial_rows": result.initial_rows}.items()]
    metrics = [Metric(k, v, now, 0) for k, v in mlflow_metrics(result).items()]
    for name, series in mlflow_window_metrics(result).items():
        metrics += [Metric(name, v, now, i + 1) for i, v in enumerate(series) if math.isfinite(v)]
    recovered = s["recovered_share"]
    run_tags = [RunTag("backtest.recovered_share", "n/a" if recovered is None else f"{recovered:.4f}")]
    for i in range(0, max(len(metrics), 1), 900):
        c.log_batch(rid, metrics=metrics[i:i + 900], params=params if i == 0 else [], tags=run_tags if i == 0 else [])
    log_run_artifacts(rid, [("backtest", Path(p)) for p in files.values()], {})
    c.set_terminated(rid)
    return rid, exp_id
