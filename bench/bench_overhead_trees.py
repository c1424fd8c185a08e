"""Training fixed overhead (flow - bare) of two checkouts, alternated in one run: this tree against another.

Each round, in each tree: `mlops init` and `mlops train --config configs/default.yaml` in a fresh state
folder, then `bench/bare_train.py` (the same computations without Prefect, MLflow or GX); medians.

    git worktree add /tmp/pre-redesign 4221c93~1
    .venv/bin/python -m bench.bench_overhead_trees --other /tmp/pre-redesign --other-entry mlops.cli --rounds 4
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

REPO = Path(__file__).resolve().parent.parent


def _timed(tree: Path, args: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, *args], cwd=tree, env=dict(env, PYTHONPATH=str(tree)), check=True,
                   capture_output=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--other", required=True, help="the other checkout (e.g. a git worktree of an older commit)")
    ap.add_argument("--other-entry", default="mlops.cli.main", help="module with the CLI's main() in that checkout")
    ap.add_argument("--rounds", type=int, default=4)
    args = ap.parse_args()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PREFECT_", "MLOPS_"))}
    trees = {"other": (Path(args.other), args.other_entry), "this": (REPO, "mlops.cli.main")}
    times: dict[str, dict[str, list[float]]] = {k: {"flow": [], "bare": []} for k in trees}
    for i in range(args.rounds):
        for name, (tree, entry) in trees.items():
            cli = ["-c", f"import sys; from {entry} import main; sys.argv[0] = 'mlops'; main()"]
            with tempfile.TemporaryDirectory() as tmp:
                env = dict(base, MLOPS_HOME=tmp)
                _timed(tree, [*cli, "init"], env)
                times[name]["flow"].append(_timed(tree, [*cli, "train", "--config", "configs/default.yaml"], env))
            times[name]["bare"].append(_timed(tree, ["-m", "bench.bare_train", "configs/default.yaml"], base))
            print(f"round {i + 1} {name}: flow {times[name]['flow'][-1]:.1f} s, bare {times[name]['bare'][-1]:.1f} s",
                  flush=True)
    for name, t in times.items():
        flow, bare = statistics.median(t["flow"]), statistics.median(t["bare"])
        print(f"{name}: flow {flow:.2f} s, bare {bare:.2f} s, fixed overhead {flow - bare:.2f} s")


if __name__ == "__main__":
    main()
