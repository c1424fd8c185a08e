"""Training overhead: `mlops train` (Prefect + GX + MLflow) against bench/bare_train.py (same computations,
none of those), alternated in one run on the default data; plus `make run` warm and `mlops --help`.

Run: .venv/bin/python -m bench.bench_training [--repeats 3] [--baseline-tree PATH]

`--baseline-tree PATH` (a checkout of an earlier commit) adds a third run to each round: `mlops train` with that
tree's code (first on PYTHONPATH, same venv, same config), so a change's effect on the fixed overhead is measured
side by side with the code before it.
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


# Output lines that mark where the search starts and ends (flow log lines, bare script prints).
SEARCH_START = ("Task run 'split_data", "phase: search starts")
SEARCH_END = ("Task run 'tune-", "phase: search done")
PHASES: dict[str, list[dict[str, float]]] = {"flow": [], "bare": []}
BEFORE: list[float] = []  # `mlops train` with the --baseline-tree's code, one per round


def timed(cmd: list[str], env: dict[str, str], phases: str | None = None, cwd: Path = REPO) -> float:
    """Wall time of a command (run in `cwd`); with `phases`, also when its output said the search started and
    ended."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    marks: dict[str, float] = {}
    lines = []
    for line in proc.stdout:
        now = time.perf_counter() - t0
        lines.append(line)
        if any(m in line for m in SEARCH_START):
            marks.setdefault("search_start", now)
        if any(m in line for m in SEARCH_END):
            marks["search_end"] = now  # the last family's end
    proc.wait()
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{''.join(lines)[-2000:]}")
    if phases and len(marks) == 2:
        PHASES[phases].append({"before": marks["search_start"], "search": marks["search_end"] - marks["search_start"],
                               "after": elapsed - marks["search_end"]})
    return elapsed


def tree_env(base_env: dict[str, str], tree: Path) -> dict[str, str]:
    """The environment that runs `tree`'s code (checked: its mlops, flows and tasks are the ones imported)."""
    env = dict(base_env, PYTHONPATH=os.pathsep.join([str(tree), *filter(None, [base_env.get("PYTHONPATH")])]))
    probe = "import mlops, flows, tasks; print(mlops.__file__, flows.__path__[0], tasks.__path__[0])"
    where = subprocess.run([sys.executable, "-c", probe], env=env, cwd=tree, capture_output=True, text=True,
                           check=True).stdout.split()
    if not all(Path(w).resolve().is_relative_to(tree.resolve()) for w in where):
        raise SystemExit(f"--baseline-tree {tree}: the runs would import {where}, not that tree's code")
    return env


def side_by_side(config: str, repeats: int, base_env: dict[str, str], label: str,
                 cold: bool = True, before: tuple[Path, dict[str, str]] | None = None,
                 ) -> tuple[list[float], list[float], list[float]]:
    """Alternate flow and bare runs. The flow runs in a new state folder prepared by `mlops init`
    (MLflow store and Prefect database exist, no champion: the same computations as the bare script);
    `cold` also times one run in an unprepared folder."""
    flow_t, bare_t, cold_t = [], [], []
    for i in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            env = dict(base_env, MLOPS_HOME=tmp)
            timed([str(BIN / "mlops"), "init"], env)
            flow_t.append(timed([str(BIN / "mlops"), "train", "--config", config], env, "flow" if cold else None))
        bare_t.append(timed([sys.executable, "-m", "bench.bare_train", config], base_env, "bare" if cold else None))
        if before is not None:
            with tempfile.TemporaryDirectory() as tmp:
                tree, env = before[0], dict(before[1], MLOPS_HOME=tmp)
                timed([str(BIN / "mlops"), "init"], env, cwd=tree)
                BEFORE.append(timed([str(BIN / "mlops"), "train", "--config", config], env, cwd=tree))
        print(f"{label} round {i + 1}: flow {flow_t[-1]:.1f}s  bare {bare_t[-1]:.1f}s"
              + (f"  flow (baseline tree) {BEFORE[-1]:.1f}s" if before is not None else ""), flush=True)
    if cold:
        with tempfile.TemporaryDirectory() as tmp:
            cold_t.append(timed([str(BIN / "mlops"), "train", "--config", config], dict(base_env, MLOPS_HOME=tmp)))
    return flow_t, bare_t, cold_t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--config", default="configs/default.yaml")
    ap.add_argument("--large-trials", type=int, default=30, help="trials per family for the larger search")
    ap.add_argument("--baseline-tree", type=Path, help="also time `mlops train` with this checkout's code, alternated")
    args = ap.parse_args()
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PREFECT_", "MLOPS_"))}
    before = (args.baseline_tree, tree_env(base_env, args.baseline_tree)) if args.baseline_tree else None
    flow_t, bare_t, cold_t = side_by_side(args.config, args.repeats, base_env, "default", before=before)
    with tempfile.TemporaryDirectory() as tmp:
        import yaml

        raw = yaml.safe_load((REPO / args.config).read_text())
        raw["search"]["n_trials"] = args.large_trials
        large = Path(tmp) / "large.yaml"
        large.write_text(yaml.safe_dump(raw))
        lflow, lbare, _ = side_by_side(str(large), 1, base_env, f"{args.large_trials} trials", cold=False)
    make_t = []
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(base_env, MLOPS_HOME=tmp)
        make_t.append(timed(["make", "run", f"CONFIG={args.config}"], env))
        make_t.append(timed(["make", "run", f"CONFIG={args.config}"], env))
    helps = [timed([str(BIN / "mlops"), "--help"], base_env) for _ in range(5)]
    f, b = statistics.median(flow_t), statistics.median(bare_t)
    ratio = f / b
    lf, lb = lflow[0], lbare[0]
    phase_rows = "\n".join(
        f"| {name} | {statistics.median(r[key] for r in PHASES['flow']):.1f} | "
        f"{statistics.median(r[key] for r in PHASES['bare']):.1f} | "
        f"{statistics.median(r[key] for r in PHASES['flow']) - statistics.median(r[key] for r in PHASES['bare']):+.1f} |"
        for name, key in (("before the search", "before"), ("search", "search"), ("after the search", "after"))
    )
    md = f"""## Training overhead (`bench/bench_training.py`)

Command: `.venv/bin/python -m bench.bench_training --repeats {args.repeats}` (config `{args.config}`: 20,000
generated rows, 3 families x 6 trials x 3 folds). Baseline: `bench/bare_train.py`, the same data,
filters, split, search and holdout metrics with no Prefect, MLflow or Great Expectations. Runs
alternate, each a fresh process; the flow gets a new state folder every time, prepared by `mlops init`
(MLflow store and Prefect database created, no champion), so both do the same computations.

The flow's extra cost is close to a constant, not a share of the training work, so the ratio depends
on how long training takes; the larger search shows where it lands when the search dominates. Where
the time goes (median s of the runs above, from process start; "search" is from the split to the
last family's end):

| phase | flow | bare | flow - bare |
| --- | --- | --- | --- |
{phase_rows}

- Before the search: starting Python with Prefect, MLflow and Great Expectations imported (the
  bare script imports scikit-learn and pandas only), while the local Prefect server boots on the
  other core; then the flow run is created, the data validated and split.
- The search itself runs the same fits; the flow's main process also logs each family to MLflow,
  while the fresh process for infra validation imports the serving stack.
- After the search: the holdout evaluation (plots) and the gate, with registration (skops,
  signature) submitted beside them; infra validation of the registered version in the fresh process
  meanwhile; the run's artifacts, the verdict, promotion, the report, exit.

| what | median s | runs |
| --- | --- | --- |
| `mlops train` (flow) | {f:.1f} | {', '.join(f'{x:.1f}' for x in flow_t)} |
| bare script | {b:.1f} | {', '.join(f'{x:.1f}' for x in bare_t)} |
| **ratio flow / bare** | **{ratio:.2f}** (goal <= 1.25) | |
| fixed overhead (flow - bare) | {f - b:.1f} | |
| `mlops train` in an unprepared state folder (creates both databases) | {cold_t[0]:.1f} | |
| same, {args.large_trials} trials per family: flow / bare | {lf:.1f} / {lb:.1f} = **{lf / lb:.2f}** | |
| `make run`, warm env, first run in a new state folder | {make_t[0]:.1f} (goal < 90) | |
| `make run`, warm env, second run (champion exists) | {make_t[1]:.1f} | |
| `mlops --help` | {statistics.median(helps):.2f} | {', '.join(f'{x:.2f}' for x in helps)} |
{baseline_rows(args.baseline_tree, f, b)}"""
    print(md)
    write_section("training", md)


def baseline_rows(tree: Path | None, flow: float, bare: float) -> str:
    """The baseline tree's rows of the table (nothing without --baseline-tree)."""
    if tree is None:
        return ""
    commit = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or str(tree)
    old = statistics.median(BEFORE)
    rows = (f"| `mlops train`, the tree at {commit} (alternated with the rows above) | {old:.1f} | "
            f"{', '.join(f'{x:.1f}' for x in BEFORE)} |\n")
    if min(flow - bare, old - bare) <= 0:  # an overhead within the noise: a ratio of the two would mean nothing
        return rows + (f"| `mlops train`: this tree / the tree at {commit} (an overhead came out within the noise, "
                       f"{flow - bare:.1f} / {old - bare:.1f} s, so the flows are compared) | "
                       f"{flow:.1f} / {old:.1f} = **{flow / old:.2f}** | |\n")
    return rows + (f"| fixed overhead: this tree / the tree at {commit} | {flow - bare:.1f} / {old - bare:.1f} = "
                   f"**{(flow - bare) / (old - bare):.2f}** (limit 1.10) | |\n")


if __name__ == "__main__":
    main()
