"""Backtest speed and outcome: a 21-window monthly replay of the generated hourly demand (configs/demand.yaml:
two years, ~17,500 rows, one HistGradientBoosting family x 4 trials x 3 folds) in fast mode, the policy
beside never and every-window retraining. Goal: <= 3 minutes on 2 cores.

Runs the engine (mlops.monitoring.backtest) in this process, as the flow does, and writes the
`backtest` section of docs/benchmarks.md with the summary, the per-window table and where the time went.

    .venv/bin/python -m bench.bench_backtest
    .venv/bin/python -m bench.bench_backtest --initial 3M --every 1M --no-write
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

from bench.report import write_section

REPO = Path(__file__).resolve().parent.parent
GOAL_SECONDS = 180.0


def _num(v: float | None, digits: int = 1) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(REPO / "configs" / "demand.yaml"))
    ap.add_argument("--initial", default="3M")
    ap.add_argument("--every", default="1M")
    ap.add_argument("--no-write", action="store_true", help="print the section instead of writing docs/benchmarks.md")
    ap.add_argument("--no-variants", action="store_true", help="skip the policy variants (the policy arm only, each)")
    args = ap.parse_args()

    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    from mlops.core.config import load_config
    from mlops.core.data import read_source
    from mlops.monitoring.backtest import plan_backtest, run_backtest
    from mlops.monitoring.backtest_report import short_reasons

    imports = time.perf_counter() - t0
    cfg = load_config(args.config)
    t1 = time.perf_counter()
    history = read_source(cfg).frame
    plan = plan_backtest(cfg, history, args.initial, args.every)
    planned = time.perf_counter() - t1
    result = run_backtest(cfg, plan, log=print)
    total = time.perf_counter() - t0
    load_after = os.getloadavg()[0]

    s = result.summary()
    arms = result.arms
    m = result.metric
    spec = cfg.models[0]
    lines = [
        "## Backtest",
        "",
        f"`bench/bench_backtest.py`: `{Path(args.config).name}` ({len(history):,} hourly rows, generated), initial "
        f"{args.initial} ({len(plan.initial):,} rows), {len(plan.windows)} windows of {args.every}; "
        f"{', '.join(x.family for x in cfg.models)} x {cfg.search.n_trials} trials x {cfg.search.cv_folds} folds; "
        f"policy `train_on: {result.train_on}`, consecutive_windows {cfg.monitoring.policy.consecutive_windows}, "
        f"cooldown {cfg.monitoring.policy.cooldown_minutes:g} min of data time. Fast mode: in process, no Prefect "
        "task, MLflow run, HTML report or infra validation per window; the baselines run in the same replay.",
        "",
        f"**Wall time {total:.0f} s** (goal <= {GOAL_SECONDS:.0f} s on 2 cores: "
        f"{'met' if total <= GOAL_SECONDS else 'missed'}); load average {load_before:.1f} before, "
        f"{load_after:.1f} after (other work shared the machine).",
        "",
        "| part | seconds |", "| --- | --- |",
        f"| imports | {imports:.1f} |",
        f"| read and plan | {planned:.1f} |",
        f"| first champion ({spec.family}) | {result.first_champion_seconds:.1f} |",
        f"| policy: score, monitor, decide, {arms['policy'].retrains} retrain(s) + gate | {arms['policy'].seconds:.1f} |",
        f"| never retrain: score | {arms['never'].seconds:.1f} |",
        f"| every window (all history): {arms['every_window'].retrains} retrains | {arms['every_window'].seconds:.1f} |",
    ]
    if not arms["every_window_train_on"].same_as:
        lines.append(f"| every window (train_on): {arms['every_window_train_on'].retrains} retrains | "
                     f"{arms['every_window_train_on'].seconds:.1f} |")
    lines += [
        "",
        f"| run | mean {m} | retrains | promotions |", "| --- | --- | --- | --- |",
        f"| policy | {_num(arms['policy'].mean_metric)} | {arms['policy'].retrains} | {arms['policy'].promotions} |",
        f"| never retrain | {_num(arms['never'].mean_metric)} | 0 | 0 |",
        f"| every window, all history | {_num(arms['every_window'].mean_metric)} | {arms['every_window'].retrains} | "
        f"{arms['every_window'].promotions} |",
    ]
    on = arms["every_window_train_on"]
    lines.append(f"| every window, train_on | {_num(on.mean_metric)} | {on.retrains} | {on.promotions} |"
                 + (" (the same run: train_on is original_plus_new)" if on.same_as else ""))
    share = s["recovered_share"]
    lines += ["", f"Recovered share: **{'n/a' if share is None else f'{share:.1%}'}** of every-window retraining's "
              f"gain over never retraining, with {arms['policy'].retrains} retrains against "
              f"{arms['every_window'].retrains}.", "",
              f"| window | start | rows | champion | {m} | never | every window | drift share | decision | "
              "promoted | s | why |", "| --- " * 12 + "|"]
    for w in result.windows:
        b = w.baselines
        why = short_reasons(w.reasons, 90) if not w.retrained else w.retrain_detail[:120]
        lines.append(f"| {w.window} | {w.start[:10]} | {w.rows} | v{w.champion_version} | {_num(w.metric)} | "
                     f"{_num(b.get('never'))} | {_num(b.get('every_window'))} | {_num(w.drift_share, 2)} | "
                     f"{w.decision} | {'yes' if w.promoted else ('rejected' if w.retrained else '')} | "
                     f"{w.seconds:.1f} | {why.replace('|', '/')} |")
    if not args.no_variants:
        lines += _variants(args.config, plan, arms["never"].mean_metric, arms["every_window"].mean_metric, m)
    lines += ["", "Reproduce: `.venv/bin/python -m bench.bench_backtest` (or `mlops backtest --config "
              "configs/demand.yaml` for the same replay with its files, Prefect artifacts and MLflow run)."]
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        write_section("backtest", body)


# Policies the default was chosen against: the same replay, the policy arm only (overrides of monitoring.policy
# and gate). "before" is the policy configs/demand.yaml shipped with when the backtest first ran.
VARIANTS: dict[str, dict[str, dict[str, Any]]] = {
    "default": {},
    "drift also triggers when labels judged the window (drift_trigger: always)": {"policy": {"drift_trigger": "always"}},
    "live baseline from a champion's first 3 windows": {"policy": {"live_baseline_windows": 3}},
    "holdout as the baseline (live_baseline_windows: 0)": {"policy": {"live_baseline_windows": 0}},
    "gate floors never waived (replace_failing_champion: false)": {"gate": {"replace_failing_champion": False}},
    "before: drift always, 1 window, tolerance 10% vs holdout/3 windows, no waiver": {
        "policy": {"drift_trigger": "always", "consecutive_windows": 1, "quality_tolerance": 0.1,
                   "live_baseline_windows": 3},
        "gate": {"replace_failing_champion": False}},
}


def _variants(config: str, plan: Any, never: float | None, every: float | None, metric: str) -> list[str]:
    """The policy arm of each variant on the same plan; recovered share against this run's baselines."""
    import yaml

    from mlops.core.config import METRIC_DIRECTION, parse_config
    from mlops.monitoring.backtest import recovered_share, run_backtest

    raw = yaml.safe_load(Path(config).read_text())
    out = ["", "How the default policy was chosen: the same replay with the policy arm only, one change at a time "
           "(recovered share against the baselines above).", "",
           f"| policy | mean {metric} | retrains | promotions | recovered share |", "| --- | --- | --- | --- | --- |"]
    for name, change in VARIANTS.items():
        cfg_raw = yaml.safe_load(yaml.safe_dump(raw))
        cfg_raw["monitoring"]["policy"] = {**(cfg_raw["monitoring"].get("policy") or {}), **change.get("policy", {})}
        cfg_raw["gate"] = {**cfg_raw["gate"], **change.get("gate", {})}
        arm = run_backtest(parse_config(cfg_raw, config), plan, baselines=False).arms["policy"]
        share = recovered_share(arm.mean_metric, never, every, METRIC_DIRECTION[metric])
        out.append(f"| {name} | {_num(arm.mean_metric)} | {arm.retrains} | {arm.promotions} | "
                   f"{'n/a' if share is None else f'{share:.1%}'} |")
        print(out[-1])
    return out + ["", WHY]


WHY = """Why these defaults, and why they should hold on data they were not tuned on (they were chosen among the
variants above on this generator, so the reasons matter more than the figures):

- **Labels decide when there are labels.** A retrain answers "did the model get worse?", which labels measure
  directly; input drift is a proxy, and on seasonal data it fires in every window (drift share 0.33-0.83 in all 21
  here) whether or not the model holds. Drift in labelled windows bought about 3 points of recovered share for 5
  more retrains. Windows without labels still retrain on drift (`drift_trigger: without_labels`).
- **A model is compared with itself, live.** The baseline is the champion's first labelled window after training,
  when it is freshest; a holdout is one period and the windows are others, which made nearly every window look
  degraded (the holdout baseline recovers 77.5%). A new champion is held to its predecessor's live level until it
  has its own, so a bad retrain is caught in its first window.
- **Tolerance by metric kind.** Errors (rmse, mae) move with the data's scale: here 10-20% from month to month with
  the season, against 40-300% when a retrain was needed; so 20% of the baseline for errors, 5 points for bounded
  scores (AUC, accuracy, r2).
- **A floor does not keep a worse model serving.** After the shift the first retrain missed the r2 floor while the
  champion missed it by far more; waiving the floor only in that case (challenger significantly better on the same
  holdout) recovers 7 more points.

None of this uses anything particular to the generator: no period, column or value was fitted to it. What it
assumes is that labels arrive with the windows (else drift decides, as before) and that a needed retrain moves the
error by more than the month-to-month noise. On data where neither holds, `drift_trigger`, `quality_tolerance` and
`live_baseline_windows` are the settings to revisit, and `mlops backtest` shows their effect before production."""


if __name__ == "__main__":
    main()
