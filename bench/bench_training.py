"""Training overhead: `mlops train` (Prefect + GX + MLflow) against bench/bare_train.py (same computations,
none of those), alternated in one run on the default data; plus `make run` warm and `mlops --help`.

Run: .venv/bin/python -m bench.bench_training [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.report import write_section

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def timed(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{res.stderr[-2000:]}")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--config", default="configs/default.yaml")
    args = ap.parse_args()
    flow_t, bare_t, make_t = [], [], []
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PREFECT_", "MLOPS_"))}
    for i in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            env = dict(base_env, MLOPS_HOME=tmp)
            # a fresh store each time: the flow pays its first-run costs (Prefect and MLflow databases)
            flow_t.append(timed([str(BIN / "mlops"), "train", "--config", args.config], env))
        bare_t.append(timed([sys.executable, "-m", "bench.bare_train", args.config], base_env))
        print(f"round {i + 1}: flow {flow_t[-1]:.1f}s  bare {bare_t[-1]:.1f}s", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(base_env, MLOPS_HOME=tmp)
        make_t.append(timed(["make", "run", f"CONFIG={args.config}"], env))
        make_t.append(timed(["make", "run", f"CONFIG={args.config}"], env))
    helps = [timed([str(BIN / "mlops"), "--help"], base_env) for _ in range(5)]
    f, b = statistics.median(flow_t), statistics.median(bare_t)
    ratio = f / b
    md = f"""## Training overhead (`bench/bench_training.py`)

Command: `.venv/bin/python -m bench.bench_training --repeats {args.repeats}` (config `{args.config}`: 20,000
generated rows, 3 families x 6 trials x 3 folds). Baseline: `bench/bare_train.py`, the same data,
filters, split, search and holdout metrics with no Prefect, MLflow or Great Expectations. Runs
alternate, each a fresh process; the flow gets a fresh state folder every time.

| what | median s | runs |
| --- | --- | --- |
| `mlops train` (flow) | {f:.1f} | {', '.join(f'{x:.1f}' for x in flow_t)} |
| bare script | {b:.1f} | {', '.join(f'{x:.1f}' for x in bare_t)} |
| **ratio flow / bare** | **{ratio:.2f}** (goal <= 1.25) | |
| `make run`, warm env, first run in a new state folder | {make_t[0]:.1f} (goal < 90) | |
| `make run`, warm env, second run (champion exists) | {make_t[1]:.1f} | |
| `mlops --help` | {statistics.median(helps):.2f} | {', '.join(f'{x:.2f}' for x in helps)} |
"""
    print(md)
    write_section("training", md)


if __name__ == "__main__":
    main()
