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
    lines += ["", "Reproduce: `.venv/bin/python -m bench.bench_backtest` (or `mlops backtest --config "
              "configs/demand.yaml` for the same replay with its files, Prefect artifacts and MLflow run)."]
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        write_section("backtest", body)


if __name__ == "__main__":
    main()
