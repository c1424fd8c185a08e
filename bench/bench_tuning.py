"""Tuning at equal time: the tool's training path (default spaces, `search.time_budget: T`, the shipped families
of each task) against FLAML's AutoML and a plain Optuna TPE search over HistGradientBoosting, each given the
same T seconds on the same fixed 80/20 split, scored on the 20% test part; beside them the tool with the
spaces it shipped before (random search, 6 trials per family, as configs/default.yaml and diabetes.yaml had)
and a default HistGradientBoosting. Every dataset is offline: scikit-learn's bundled sets, its `make_*`
generators and the project's own generators (10k-100k rows). Repeated with other seeds (split and search)
to state the noise. Also the whole `mlops train` run at T = 30 s (goal: under 2 x T on 2 cores).

FLAML is a bench-only extra (`pip install -c constraints.txt -e ".[bench]"`); production code never imports it.

    .venv/bin/python -m bench.bench_tuning --budget 20 --seeds 0 1           # writes docs/benchmarks.md
    .venv/bin/python -m bench.bench_tuning --budget 5 --seeds 0 --datasets breast_cancer --no-write
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.report import write_section

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


# ---- datasets: (frame with a `target` column, task) ------------------------------------------------------


def _bundled(name: str) -> pd.DataFrame:
    from sklearn import datasets

    bunch = getattr(datasets, f"load_{name}")(as_frame=True)
    frame = bunch.frame.copy()
    return frame.rename(columns={bunch.target.name: "target"}) if bunch.target.name != "target" else frame


def _make_classification() -> pd.DataFrame:
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=30_000, n_features=20, n_informative=8, n_redundant=4, n_clusters_per_class=3,
                               flip_y=0.05, class_sep=0.8, random_state=11)
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(X.shape[1])])
    frame["target"] = y
    return frame


def _friedman() -> pd.DataFrame:
    from sklearn.datasets import make_friedman1

    X, y = make_friedman1(n_samples=20_000, n_features=10, noise=1.0, random_state=12)
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(X.shape[1])])
    frame["target"] = y
    return frame


def _churn() -> pd.DataFrame:
    from mlops.core.data import generate_churn

    frame = generate_churn(40_000, seed=13).drop(columns=["customer_id", "event_time"])
    return frame.rename(columns={"churned": "target"})


def _demand() -> pd.DataFrame:
    from mlops.core.generate import generate_demand

    frame = generate_demand(17_520, seed=14).dropna(subset=["demand"])
    ts = pd.to_datetime(frame.pop("timestamp"))
    frame = frame.assign(hour=ts.dt.hour, dayofweek=ts.dt.dayofweek, month=ts.dt.month, year=ts.dt.year)
    return frame.rename(columns={"demand": "target"}).reset_index(drop=True)


def _hastie() -> pd.DataFrame:
    from sklearn.datasets import make_hastie_10_2

    X, y = make_hastie_10_2(n_samples=12_000, random_state=15)
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(X.shape[1])])
    frame["target"] = (y > 0).astype(int)
    return frame


DATASETS: dict[str, tuple[Callable[[], pd.DataFrame], str]] = {
    "breast_cancer": (lambda: _bundled("breast_cancer"), "classification"),
    "diabetes": (lambda: _bundled("diabetes"), "regression"),
    "classification_30k": (_make_classification, "classification"),
    "hastie_12k": (_hastie, "classification"),
    "churn_40k": (_churn, "classification"),
    "friedman1_20k": (_friedman, "regression"),
    "demand_17k": (_demand, "regression"),
}
FAMILIES = {"classification": ["logistic_regression", "random_forest", "hist_gradient_boosting"],
            "regression": ["ridge", "random_forest", "hist_gradient_boosting"]}
# the spaces the configs shipped before default spaces existed (configs/default.yaml, configs/diabetes.yaml)
SHIPPED = {
    "logistic_regression": {"C": {"type": "loguniform", "low": 0.001, "high": 10.0}},
    "ridge": {"alpha": {"type": "loguniform", "low": 0.001, "high": 100.0}},
    "random_forest": {"max_depth": {"type": "choice", "values": [6, 10, 16]},
                      "min_samples_leaf": {"type": "int", "low": 1, "high": 20}},
    "hist_gradient_boosting": {"learning_rate": {"type": "loguniform", "low": 0.02, "high": 0.3},
                               "max_leaf_nodes": {"type": "int", "low": 8, "high": 64},
                               "l2_regularization": {"type": "loguniform", "low": 0.0001, "high": 1.0}},
}


def split(frame: pd.DataFrame, task: str, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    from sklearn.model_selection import train_test_split

    return train_test_split(frame, test_size=0.2, random_state=seed,
                            stratify=frame["target"] if task == "classification" else None)


def test_metric(task: str, model: Any, test: pd.DataFrame) -> float:
    from sklearn.metrics import mean_squared_error, roc_auc_score

    X, y = test.drop(columns=["target"]), test["target"]
    if task == "classification":
        return float(roc_auc_score(y, model.predict_proba(X)[:, 1]))
    return float(np.sqrt(mean_squared_error(y, model.predict(X))))


def _preprocessor(train: pd.DataFrame, task: str) -> Any:
    from mlops.core.config import FeatureConfig, ValidationConfig
    from mlops.core.contract import infer_contract
    from mlops.core.features import build_preprocessor

    contract = infer_contract(train, "target", task, ValidationConfig())
    return build_preprocessor(contract, FeatureConfig())


# ---- the arms ----------------------------------------------------------------------------------------------


def tool(train: pd.DataFrame, task: str, seed: int, budget: float | None, shipped: bool = False) -> tuple[Any, str]:
    """The training flow's search and choice (tasks.tuning -> tune_families, pick_best); the winner is fitted on
    every training row, as the flow's refit on train + holdout does."""
    from mlops.core.config import ModelSpec, SearchConfig
    from mlops.training.tuning import pick_best, scorer_for, tune_families

    specs = [ModelSpec(family=f, search_space=SHIPPED[f] if shipped else None,
                       params={"n_estimators": 100} if shipped and f == "random_forest" else {})
             for f in FAMILIES[task]]
    search = (SearchConfig(strategy="random", n_trials=6, seed=seed) if shipped
              else SearchConfig(time_budget=budget, seed=seed))
    X, y = train.drop(columns=["target"]), train["target"]
    scoring = scorer_for(task, "roc_auc" if task == "classification" else "rmse", True, labels=y)
    t0 = time.perf_counter()
    ended: list[float] = []

    def log(msg: str) -> None:
        if "search ended" in msg:
            ended.append(time.perf_counter() - t0)

    results = tune_families(specs, _preprocessor(train, task), X, y, task, scoring, search, log=log)
    best = pick_best(results)
    note = ", ".join(f"{r.family.split('_')[0]} {r.n_trials}" + (f" ({r.cut} cut)" if r.cut else "") for r in results)
    search_s = f"; search {ended[0]:.1f} s" if ended else ""
    return best.best_estimator, f"{best.family.split('_')[0]}; trials {note}{search_s}"


def flaml(train: pd.DataFrame, task: str, seed: int, budget: float) -> tuple[Any, str]:
    from flaml import AutoML

    automl = AutoML()
    X, y = train.drop(columns=["target"]), train["target"]
    X = X.astype({c: "category" for c in X.columns if X[c].dtype == object or str(X[c].dtype) == "str"})
    automl.fit(X, y, task=task, time_budget=budget, metric="roc_auc" if task == "classification" else "rmse",
               seed=seed, n_jobs=-1, verbose=0)

    class Wrapped:
        def _x(self, frame: pd.DataFrame) -> pd.DataFrame:
            return frame.astype({c: "category" for c in frame.columns if c in X and str(X[c].dtype) == "category"})

        def predict(self, frame: pd.DataFrame) -> Any:
            return automl.predict(self._x(frame))

        def predict_proba(self, frame: pd.DataFrame) -> Any:
            return automl.predict_proba(self._x(frame))

    return Wrapped(), f"{automl.best_estimator}"


def optuna_hgb(train: pd.DataFrame, task: str, seed: int, budget: float) -> tuple[Any, str]:
    """A plain Optuna TPE search over HistGradientBoosting: 3-fold CV, study.optimize(timeout=T), one trial at a
    time using every core; the best refitted on all training rows."""
    import optuna
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cls = HistGradientBoostingClassifier if task == "classification" else HistGradientBoostingRegressor
    scoring = "roc_auc" if task == "classification" else "neg_root_mean_squared_error"
    X, y = train.drop(columns=["target"]), train["target"]
    pre = _preprocessor(train, task)

    def params(trial: Any) -> dict[str, Any]:
        return {"learning_rate": trial.suggest_float("learning_rate", 0.01, 0.3, log=True),
                "max_leaf_nodes": trial.suggest_int("max_leaf_nodes", 8, 256, log=True),
                "min_samples_leaf": trial.suggest_int("min_samples_leaf", 2, 100, log=True),
                "l2_regularization": trial.suggest_float("l2_regularization", 1e-4, 10, log=True),
                "max_iter": trial.suggest_int("max_iter", 50, 1000, log=True)}

    def objective(trial: Any) -> float:
        model = make_pipeline(pre, cls(random_state=seed, early_stopping=True, **params(trial)))
        return float(cross_val_score(model, X, y, cv=3, scoring=scoring).mean())

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.optimize(objective, timeout=budget)
    best = make_pipeline(pre, cls(random_state=seed, early_stopping=True, **study.best_params)).fit(X, y)
    return best, f"{len(study.trials)} trials"


def default_hgb(train: pd.DataFrame, task: str, seed: int, budget: float) -> tuple[Any, str]:
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.pipeline import make_pipeline

    cls = HistGradientBoostingClassifier if task == "classification" else HistGradientBoostingRegressor
    return make_pipeline(_preprocessor(train, task), cls(random_state=seed)).fit(
        train.drop(columns=["target"]), train["target"]), ""


ARMS: dict[str, Callable[..., tuple[Any, str]]] = {
    "tool": lambda tr, task, seed, T: tool(tr, task, seed, T),
    "tool, shipped spaces": lambda tr, task, seed, T: tool(tr, task, seed, None, shipped=True),
    "FLAML": flaml,
    "Optuna TPE HGB": optuna_hgb,
    "default HGB": default_hgb,
}


def run_dataset(name: str, seeds: list[int], budget: float) -> dict[str, Any]:
    load, task = DATASETS[name]
    frame = load()
    out: dict[str, Any] = {"rows": len(frame), "task": task, "scores": {a: [] for a in ARMS},
                           "seconds": {a: [] for a in ARMS}, "notes": {a: [] for a in ARMS}}
    out["load"] = []
    for seed in seeds:
        train, test = split(frame, task, seed)
        for arm, fn in ARMS.items():
            out["load"].append(os.getloadavg()[0])
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model, note = fn(train, task, seed, budget)
            out["seconds"][arm].append(time.perf_counter() - t0)
            out["scores"][arm].append(test_metric(task, model, test))
            out["notes"][arm].append(note)
            print(f"{name} seed {seed} {arm}: {out['scores'][arm][-1]:.4f} in {out['seconds'][arm][-1]:.1f} s "
                  f"({note})", flush=True)
    return out


def whole_run(budget: float) -> float:
    """`mlops train` on the default data (20,000 churn rows) with default spaces and search.time_budget."""
    import yaml

    raw = yaml.safe_load((REPO / "configs" / "default.yaml").read_text())
    raw["models"] = [{"family": f} for f in FAMILIES["classification"]]
    raw["search"] = {"time_budget": budget, "cv_folds": 3, "seed": 42}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PREFECT_", "MLOPS_"))}
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "budget.yaml"
        cfg.write_text(yaml.safe_dump(raw))
        env["MLOPS_HOME"] = str(Path(tmp) / "state")
        subprocess.run([str(BIN / "mlops"), "init"], cwd=REPO, env=env, check=True, capture_output=True)
        t0 = time.perf_counter()
        proc = subprocess.run([str(BIN / "mlops"), "train", "--config", str(cfg)], cwd=REPO, env=env,
                              capture_output=True, text=True)
        took = time.perf_counter() - t0
    if proc.returncode not in (0, 1):  # 1: the gate refused; the run still happened
        raise SystemExit(f"mlops train failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    print(proc.stdout[-1500:])
    return took


def _cell(values: list[float], best: bool) -> str:
    mean = statistics.fmean(values)
    spread = (max(values) - min(values)) / 2 if len(values) > 1 else 0.0
    text = f"{mean:.4f} ± {spread:.4f}" if abs(mean) < 10 else f"{mean:.2f} ± {spread:.2f}"
    return f"**{text}**" if best else text


def report(results: dict[str, dict[str, Any]], seeds: list[int], budget: float, overhead: float | None,
           overhead_budget: float = 30.0) -> str:
    rows = []
    for name, r in results.items():
        higher = r["task"] == "classification"
        means = {a: statistics.fmean(v) for a, v in r["scores"].items()}
        top = max(means.values()) if higher else min(means.values())
        cells = " | ".join(_cell(r["scores"][a], means[a] == top) for a in ARMS)
        rows.append(f"| {name} ({r['rows']:,} rows, {'roc_auc' if higher else 'rmse'}) | {cells} |")
    secs = " | ".join(f"{statistics.fmean(x for r in results.values() for x in r['seconds'][a]):.1f}" for a in ARMS)
    notes = "\n".join(f"- {name}: tool picked {'; '.join(r['notes']['tool'])}; FLAML picked "
                      f"{', '.join(r['notes']['FLAML'])}; Optuna HGB ran {', '.join(r['notes']['Optuna TPE HGB'])}"
                      for name, r in results.items())
    verdict = []
    for name, r in results.items():
        higher = r["task"] == "classification"
        tool_m, flaml_m = statistics.fmean(r["scores"]["tool"]), statistics.fmean(r["scores"]["FLAML"])
        noise = max((max(v) - min(v)) / 2 for v in (r["scores"]["tool"], r["scores"]["FLAML"]))
        gap = (tool_m - flaml_m) if higher else (flaml_m - tool_m)
        ship = statistics.fmean(r["scores"]["tool, shipped spaces"])
        ahead = tool_m >= ship if higher else tool_m <= ship
        verdict.append(f"| {name} | {gap:+.4f} | {noise:.4f} | {'yes' if gap >= -noise else 'NO'} | "
                       f"{'yes' if ahead else 'no'} |")
    searched = [float(m.group(1)) for r in results.values() for note in r["notes"]["tool"]
                for m in [re.search(r"search ([0-9.]+) s", note)] if m]
    loads = [x for r in results.values() for x in r.get("load", [])]
    budget_line = (f"The tool's search (until it ended, before the winner's fit on all rows): mean "
                   f"{statistics.fmean(searched):.1f} s, longest {max(searched):.1f} s for T = {budget:g} s "
                   f"({len(searched)} runs).\n" if searched else "")
    load_line = (f"Load while it ran (1-minute load average on {os.cpu_count()} cores, sampled before each arm): "
                 f"{min(loads):.1f}-{max(loads):.1f}, mean {statistics.fmean(loads):.1f}.\n" if loads else "")
    over = (f"\nWhole `mlops train` on the default data (20,000 churn rows, three families, default spaces, "
            f"`search.time_budget: {overhead_budget:g}`): **{overhead:.1f} s** = {overhead / overhead_budget:.2f} x T "
            "(goal under 2 x T).\n"
            if overhead is not None else "")
    return f"""## Tuning at equal time (`bench/bench_tuning.py`)

Command: `.venv/bin/python -m bench.bench_tuning --budget {budget:g} --seeds {' '.join(map(str, seeds))}`.
Fixed 80/20 split per seed (stratified for classification), test metric on the 20%; mean ± half the range
over the seeds {', '.join(map(str, seeds))} (split and search seed together). Each arm gets T = {budget:g} s:
the tool's search (`tune_families`: default spaces for the shipped families of the task, TPE with pruning,
`search.time_budget: {budget:g}`, the winner fitted on all training rows as the flow's refit does),
FLAML `AutoML.fit(time_budget={budget:g})` with its default learners, and a plain Optuna TPE search
over HistGradientBoosting (3-fold CV, `timeout={budget:g}`, one trial at a time on both cores). "tool,
shipped spaces" is the tool before this change: random search, 6 trials per family over the spaces
configs/default.yaml and diabetes.yaml shipped (no time budget). Best mean per row in bold (higher
roc_auc, lower rmse).

| dataset | {' | '.join(ARMS)} |
| --- | {' | '.join('---' for _ in ARMS)} |
{chr(10).join(rows)}
| mean seconds per run (search + final fit) | {secs} |

{budget_line}{load_line}
Tool against FLAML (positive: the tool is better; noise: the larger half-range of the two over seeds):

| dataset | tool - FLAML | noise | within noise or ahead | tool ahead of shipped spaces |
| --- | --- | --- | --- | --- |
{chr(10).join(verdict)}

{notes}
{over}"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", type=float, default=20.0)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS))
    ap.add_argument("--overhead-budget", type=float, default=30.0)
    ap.add_argument("--no-overhead", action="store_true")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--save", help="write the results so far to this JSON file after each dataset")
    ap.add_argument("--render", help="only render the report from a --save file (with --overhead-seconds)")
    ap.add_argument("--overhead-seconds", type=float)
    args = ap.parse_args()
    if args.render:
        md = report(json.loads(Path(args.render).read_text()), args.seeds, args.budget, args.overhead_seconds,
                    args.overhead_budget)
        print(md)
        if not args.no_write:
            write_section("tuning", md)
        return
    results = {}
    for name in args.datasets:
        results[name] = run_dataset(name, args.seeds, args.budget)
        if args.save:
            Path(args.save).write_text(json.dumps(results))
    overhead = None if args.no_overhead else whole_run(args.overhead_budget)
    md = report(results, args.seeds, args.budget, overhead, args.overhead_budget)
    print(md)
    if not args.no_write:
        write_section("tuning", md)


if __name__ == "__main__":
    main()
