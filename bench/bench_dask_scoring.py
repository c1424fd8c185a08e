"""Batch scoring of many generated rows: local chunks vs a Dask cluster (scheduler + N workers), side by side.

Setup (not timed): a state folder with one champion trained by `mlops train` on configs/default.yaml's
data (its generator, 20,000 rows; the search cut to one family so the bench does not wait on tuning), and a
Parquet file of `--rows` generated churn rows (default 10,000,000, the same generator with the default
config's 0.2% impossible rows, written about 250,000 rows at a time in row groups of `--chunk-rows`, so the
generator itself stays small). Each side then scores the file in its own fresh process, without the
prediction log: `local` is `score_file` chunk by chunk in that process; `dask` starts `dask scheduler` +
`--workers` `dask worker --nthreads 1 --memory-limit ...` processes on loopback (not timed) and scores
through `score_with_champion`'s Dask path (each worker reads its own row groups). Both write
predictions.parquet and quarantined.csv; the bench checks they are identical before reporting.

`--mode flag` (the default) scores as `mlops score` does (every row, bad ones flagged); `--mode quarantine` as
the score flow does. `--baseline-tree PATH` adds a third side: the local run with the code of another source tree
(a checkout before a change), whose output must be identical. The local side also times the model alone on
pre-built feature arrays (the ceiling).

Peak memory: the resident-set high-water mark (`ru_maxrss`) of the scoring process (the client, on the
Dask side) and of each Dask worker process (asked through `client.run`, before the cluster stops).

    .venv/bin/python -m bench.bench_dask_scoring                 # 10M rows, 2 workers; writes docs/benchmarks.md
    .venv/bin/python -m bench.bench_dask_scoring --rows 500000 --no-write   # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.report import write_section

REPO = Path(__file__).resolve().parent.parent
GENERATE_ROWS = 250_000
SECTION = "dask-scoring"
PREDICTIONS = "predictions.parquet"


def _env(state: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "PREFECT_API", "MLFLOW_"))}
    env.update({"MLOPS_HOME": str(state), "MLFLOW_TRACKING_URI": f"sqlite:///{state / 'mlflow.db'}",
                "PYTHONPATH": str(REPO)})
    return env


def prepare(work: Path, rows: int, chunk_rows: int) -> tuple[Path, Path]:
    """The bench config (default.yaml with one family) trained into a champion, and the Parquet input."""
    import yaml

    raw = yaml.safe_load((REPO / "configs" / "default.yaml").read_text())
    raw["models"] = [m for m in raw["models"] if m["family"] == "hist_gradient_boosting"]
    raw["search"].update({"n_trials": 2, "cv_folds": 2})
    raw["serving"]["batch_chunk_rows"] = chunk_rows
    config = work / "bench.yaml"
    config.write_text(yaml.safe_dump(raw))
    state = work / "state"
    t0 = time.perf_counter()
    res = subprocess.run([str(Path(sys.executable).parent / "mlops"), "train", "--config", str(config)], cwd=REPO,
                         env=_env(state), capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"training the champion failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    print(f"champion trained in {time.perf_counter() - t0:.0f} s", flush=True)
    data = work / "input.parquet"
    t0 = time.perf_counter()
    generate(data, rows, chunk_rows, corrupt=float(raw["source"].get("corrupt", 0.0)))
    print(f"{rows:,} rows generated in {time.perf_counter() - t0:.0f} s ({data.stat().st_size / 2**20:.0f} MiB)",
          flush=True)
    return config, data


def generate(path: Path, rows: int, row_group: int, corrupt: float) -> None:
    """`rows` churn rows (target dropped) written `GENERATE_ROWS` at a time, in row groups of `row_group`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mlops.core.data import generate_churn

    writer = None
    done, seed, block = 0, 1000, row_group * max(1, GENERATE_ROWS // row_group)
    while done < rows:
        n = min(block, rows - done)
        frame = generate_churn(n, seed=seed, corrupt=corrupt).drop(columns=["churned"])
        table = pa.Table.from_pandas(frame, preserve_index=False)
        if writer is None:
            writer = pq.ParquetWriter(path, table.schema)
        writer.write_table(table.cast(writer.schema), row_group_size=row_group)
        done, seed = done + n, seed + 1
    assert writer is not None
    writer.close()


def model_ceiling(bundle: Any, data: Path, chunk_rows: int) -> dict[str, float]:
    """Rows/s of the model alone on pre-built feature arrays (the first chunk, features built once), with
    scikit-learn's default threads and with one: the physical limit the whole run is measured against."""
    import pyarrow.parquet as pq
    from threadpoolctl import threadpool_limits

    from mlops.serving.batchcheck import check_chunk, scorer_for
    from mlops.serving.chunks import scoring_contract

    frame = next(pq.ParquetFile(data).iter_batches(batch_size=chunk_rows)).to_pandas()
    checked = check_chunk(frame, scoring_contract(bundle.contract))
    scorer = scorer_for(bundle.model, bundle.contract)
    if checked is None or scorer.fast is None:
        return {}
    X = checked.frame[list(bundle.model.feature_names_in_)]
    Xt = scorer.fast.features(scorer._batch(X))
    walk = model_walk(scorer.fast)
    out = {}
    for label, threads in (("default_threads", None), ("one_thread", 1)):
        with threadpool_limits(threads):
            walk(Xt)
            t0 = time.perf_counter()
            for _ in range(3):
                walk(Xt)
            out[label] = 3 * len(Xt) / (time.perf_counter() - t0)
    out["trees"] = float(getattr(scorer.fast.estimator, "n_iter_", 0))
    return out


def model_walk(fast: Any) -> Any:
    """The model alone on feature arrays, as the compiled path calls it: HistGradientBoosting's walk over
    the inputs' bins (binning included), else the estimator's predict."""
    if fast.trees is not None:
        return fast.trees.binned_raw
    return fast.estimator.predict


def cpu_budget(bundle: Any, data: Path, chunk_rows: int, version: str, flag: bool, chunks: int = 10) -> dict[str, float]:
    """Where the local loop's CPU goes: CPU seconds (this process, all threads) per 1M rows of each stage, run
    one after another on one thread with one OpenMP thread, on the file's first `chunks` chunks. On a machine
    whose cores are all busy, rows/s is at most cores / (CPU seconds per row), whatever the threads."""
    import itertools

    import pyarrow as pa
    from threadpoolctl import threadpool_limits

    from mlops.serving.batchcheck import check_chunk, scorer_for
    from mlops.serving.chunks import score_chunk, scoring_contract
    from mlops.serving.scoring import PredictionSink, iter_chunks

    contract, clock = scoring_contract(bundle.contract), time.process_time
    scorer = scorer_for(bundle.model, bundle.contract)
    out: dict[str, float] = {}
    arrow_threads = pa.cpu_count()
    pa.set_cpu_count(1)  # Arrow's decoding on one thread too: its pool's hand-offs otherwise vary the figure
    with threadpool_limits(1, user_api="openmp"), tempfile.TemporaryDirectory() as tmp:
        t = clock()
        frames = [f for _, f in itertools.islice(iter_chunks(data, chunk_rows, None), chunks)]
        out["read"] = clock() - t
        rows = sum(len(f) for f in frames)
        score_chunk(bundle.model, bundle.contract, frames[0], 0, version, flag)  # compiled and checked once
        t = clock()
        checked = [check_chunk(f, contract) for f in frames]
        out["check"] = clock() - t
        if scorer.fast is None or any(c is None for c in checked):
            return {}
        names = list(bundle.model.feature_names_in_)
        t = clock()
        features = [scorer.fast.features(scorer._batch(c.frame[names])) for c in checked]  # type: ignore[union-attr]
        out["features"] = clock() - t
        walk = model_walk(scorer.fast)
        t = clock()
        for x in features:
            walk(x)
        out["model"] = clock() - t
        t = clock()
        results = [score_chunk(bundle.model, bundle.contract, f, 0, version, flag) for f in frames]
        out["chunk"] = clock() - t  # all of a chunk's work: check, features, model and the output frames
        sink = PredictionSink(Path(tmp) / PREDICTIONS)
        t = clock()
        for r in results:
            sink.write(r.predictions)
        sink.close(results[0].predictions.iloc[0:0])
        out["write"] = clock() - t
    pa.set_cpu_count(arrow_threads)
    out = {k: v / rows * 1e6 for k, v in out.items()}
    out["other"] = max(0.0, out["chunk"] - out["check"] - out["features"] - out["model"])
    return out


def run_side(side: str, config: Path, data: Path, out: Path, workers: int, memory_limit: str,
             flag: bool = True) -> dict[str, Any]:
    """One side in this (fresh) process: score the file, return the figures."""
    import resource

    from mlops.core.config import load_config
    from mlops.core.settings import configure_environment
    from mlops.registry import versions as registry
    from mlops.serving.scoring import score_file

    cfg = load_config(config)
    configure_environment()
    bundle = registry.load_champion(cfg.registry.model_name)
    assert bundle is not None, "no champion"
    args = (bundle.model, bundle.contract, bundle.name, bundle.version, bundle.run_id, data, out, f"bench-{side}",
            cfg.serving.batch_chunk_rows, None, cfg.validation.max_quarantine_fraction, None, flag)
    figures: dict[str, Any] = {"side": side}
    if side in ("local", "before"):
        used = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        run = score_file(*args)
        figures["seconds"] = time.perf_counter() - t0
        now = resource.getrusage(resource.RUSAGE_SELF)
        figures["cpu_per_million"] = ((now.ru_utime + now.ru_stime - used.ru_utime - used.ru_stime)
                                      / max(run.rows_read, 1) * 1e6)
        figures["client_peak_mib"] = now.ru_maxrss / 1024  # the scoring's peak, before the ceiling and budget below
        if side == "local":
            figures["ceiling"] = model_ceiling(bundle, data, cfg.serving.batch_chunk_rows)
            figures["budget"] = cpu_budget(bundle, data, cfg.serving.batch_chunk_rows, str(bundle.version), flag)
    else:
        from mlops.serving.dask_scoring import cluster_chunks
        from mlops.stack.dask_cluster import dask_cluster

        with dask_cluster(workers, memory_limit=memory_limit) as cluster:
            t0 = time.perf_counter()
            with cluster_chunks(cluster.address, bundle.model, bundle.contract, data, cfg.serving.batch_chunk_rows,
                                str(bundle.version), flag, keep_inputs=False) as chunks:
                run = score_file(*args, chunks=chunks, backend="dask")
            figures["seconds"] = time.perf_counter() - t0
            with cluster.client() as client:
                peaks = client.run(lambda dask_worker: (str(dask_worker.name),
                                                        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))
            figures["worker_peak_mib"] = {name: kib / 1024 for name, kib in sorted(peaks.values())}
            figures["chunks_by_worker"] = run.chunks_by_worker
    figures.update(rows=run.rows_read, scored=run.rows_scored, quarantined=run.rows_quarantined + run.rows_flagged,
                   chunks=run.chunks, load=os.getloadavg()[0], rows_per_second=run.rows_read / figures["seconds"])
    figures.setdefault("client_peak_mib", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return figures


def same_outputs(a: Path, b: Path, reason_order: bool = True) -> int:
    """Both sides wrote the same predictions (compared batch by batch) and the same quarantine. With
    `reason_order=False` a row's reasons may come in another order (the tree before this change listed them as
    Great Expectations grouped its results, by column); returns how many rows differ only so."""
    import pandas as pd
    import pyarrow.parquet as pq

    fa, fb = pq.ParquetFile(a / PREDICTIONS), pq.ParquetFile(b / PREDICTIONS)
    if fa.metadata.num_rows != fb.metadata.num_rows:
        sys.exit(f"the sides scored different row counts: {fa.metadata.num_rows} vs {fb.metadata.num_rows}")
    reordered = 0
    for x, y in zip(fa.iter_batches(batch_size=500_000), fb.iter_batches(batch_size=500_000), strict=True):
        fx, fy = x.to_pandas(), y.to_pandas()
        if not reason_order and "contract_violation" in fx.columns:
            rx, ry = fx.pop("contract_violation"), fy.pop("contract_violation")
            differ = rx.fillna("") != ry.fillna("")
            for u, v in zip(rx[differ], ry[differ], strict=True):
                if u is None or v is None or sorted(u.split("; ")) != sorted(v.split("; ")):
                    sys.exit(f"the sides flagged a row differently: {u!r} vs {v!r}")
            reordered += int(differ.sum())
        pd.testing.assert_frame_equal(fx, fy)
    qa, qb = a / "quarantined.csv", b / "quarantined.csv"
    if qa.exists() != qb.exists() or (qa.exists() and not reason_order and qa.stat().st_size != qb.stat().st_size) or (
            qa.exists() and reason_order and qa.read_bytes() != qb.read_bytes()):
        sys.exit("the sides quarantined different rows")
    return reordered


def budget_text(local: dict[str, Any], cores: int) -> str:
    """The CPU budget table of the local side (empty when the model was not compiled)."""
    b = local.get("budget") or {}
    if not b:
        return ""
    stages = (("read", "reading the Parquet chunks (decoding, missing-value markers)"),
              ("check", "contract check and coercion"), ("features", "feature columns (compiled transformers)"),
              ("model", "the model: binning and the tree walk (scikit-learn)"), ("other", "the rest of a chunk (output frames, flags)"),
              ("write", "writing predictions.parquet"))
    total = sum(b[k] for k, _ in stages)
    rows = "\n".join(f"| {what} | {b[k]:.2f} | {b[k] / total:.0%} |" for k, what in stages)
    return f"""Where the CPU goes (`cpu_budget`: each stage alone on one thread with one OpenMP thread, the first 10 chunks; CPU
seconds per 1,000,000 rows):

| stage | CPU s per 1M rows | share |
| --- | ---: | ---: |
{rows}
| **total** | **{total:.2f}** | |

The whole local run used {local['cpu_per_million']:.2f} CPU s per 1M rows ({local['cpu_per_million'] * local['rows_per_second']
/ 1e6:.2f} cores busy on average): at that cost {cores} fully busy cores give at most
{cores / local['cpu_per_million'] * 1e6:,.0f} rows/s. At 500,000 rows/s the {cores} cores have {cores / 0.5:.1f} CPU s per 1M
rows; of the stages above, the model's walk, reading and writing alone take {b['model'] + b['read'] + b['write']:.2f}."""


def render(results: list[dict[str, Any]], rows: int, chunk_rows: int, workers: int, memory_limit: str,
           command: str, mode: str) -> str:
    local = next(r for r in results if r["side"] == "local")
    dask = next(r for r in results if r["side"] == "dask")
    before = next((r for r in results if r["side"] == "before"), None)
    worker_cells = ", ".join(f"{n} {v:,.0f}" for n, v in dask["worker_peak_mib"].items())
    ratio = dask["rows_per_second"] / local["rows_per_second"]
    heaviest = max(dask["worker_peak_mib"].values())
    verdict = "faster" if ratio >= 1.05 else "slower" if ratio <= 0.95 else "about the same speed"
    lines = [
        "| side | seconds | rows/s | peak RSS, scoring process (MiB) | peak RSS per Dask worker (MiB) | load avg |",
        "| --- | ---: | ---: | ---: | --- | ---: |",
    ]
    if before is not None:
        lines.append(f"| local, the tree before this change (`--baseline-tree`) | {before['seconds']:.0f} | "
                     f"{before['rows_per_second']:,.0f} | {before['client_peak_mib']:,.0f} | - | {before['load']:.1f} |")
    lines += [
        f"| local chunks (1 process) | {local['seconds']:.0f} | {local['rows_per_second']:,.0f} | "
        f"{local['client_peak_mib']:,.0f} | - | {local['load']:.1f} |",
        f"| Dask cluster ({workers} workers x 1 thread) | {dask['seconds']:.0f} | {dask['rows_per_second']:,.0f} | "
        f"{dask['client_peak_mib']:,.0f} (client) | {worker_cells} | {dask['load']:.1f} |",
    ]
    ceiling = local.get("ceiling") or {}
    ceiling_text = (f"Model-only ceiling (the champion's {ceiling.get('trees', 0):.0f} trees on pre-built feature arrays of "
                    f"one {chunk_rows:,}-row chunk, binned and walked as the compiled path does): {ceiling.get('default_threads', 0):,.0f} "
                    f"rows/s with its default threads ({os.cpu_count()} here), {ceiling.get('one_thread', 0):,.0f} rows/s "
                    f"on one thread; the local run reaches {local['rows_per_second'] / ceiling['default_threads']:.0%} "
                    "of the first.") if ceiling.get("default_threads") else ""
    goal = (f"Goal (>= 500,000 rows/s locally, Dask faster than local on the same cores): "
            f"{'**met**' if local['rows_per_second'] >= 500_000 else '**not met**'} locally "
            f"({local['rows_per_second']:,.0f} rows/s); Dask {'**faster**' if ratio > 1 else '**not faster**'} "
            f"({ratio:.2f}x).")
    was = (f" The tree before this change scored the same input at {before['rows_per_second']:,.0f} rows/s: "
           f"**{local['rows_per_second'] / before['rows_per_second']:.1f}x** now, with the same rows, predictions and "
           "flags (checked)" + (f"; {before['reordered']:,} rows that broke rules on several columns list their "
                                "reasons in another order (the tree before listed them as Great Expectations grouped its "
                                "results, by column; now in the suite's order, as validation does)"
                                if before.get("reordered") else "") + ".") if before is not None else ""
    table = "\n".join(lines)
    budget = budget_text(local, os.cpu_count() or 1)
    return f"""## Batch scoring: local chunks vs a Dask cluster (`bench/bench_dask_scoring.py`)

```bash
{command}
```

{rows:,} generated churn rows in one Parquet file (row groups of {chunk_rows:,}; {local['quarantined']:,} rows break
the contract), scored by the champion of a model trained on `configs/default.yaml`'s data
(hist_gradient_boosting), mode `{mode}` ({"every row scored, bad rows flagged, as `mlops score` runs" if mode == "flag"
else "bad rows quarantined, as the score flow runs"}), without the prediction log, each side in a fresh process.
Local: `score_file` scores {chunk_rows:,}-row chunks two at a time (a thread per core, one OpenMP thread each), the next read and the last written meanwhile
(mlops.serving.overlap; contract check column by column,
model compiled to numpy and called once per chunk). Dask: `dask scheduler` + {workers} `dask worker --nthreads 1
--memory-limit {memory_limit}` on loopback (started before the clock), the model broadcast once, each worker reading
its own row groups; the client writes the results in input order. Every side wrote identical predictions files
(checked). Peak RSS is each process's `ru_maxrss`. The load average at the
end of each side is in the table, so compare the sides rather than the absolute figures.

{table}

{goal}{was}

{ceiling_text}

{budget}

Reading: the cluster scored {ratio:.2f}x the rows per second of the local loop ({verdict}; {dask['chunks']}
partitions: {", ".join(f"{n} {c}" for n, c in dask['chunks_by_worker'].items())}). This machine has {os.cpu_count()}
cores shared by the client and all {workers} workers; the local process already scores two chunks at once (one OpenMP
thread each) and reads and writes beside them, so the cluster adds only its own costs (sending chunks and results
between processes). What limits the local loop is the CPU itself (table above): every core is busy, so only less
work per row makes it faster.
Memory is bounded on both sides and does not grow with the input: each worker peaks at {heaviest:,.0f} MiB or
less, under its {memory_limit} limit, and the client holds only the results in flight.
"""


def child(side: str, work: Path, args: argparse.Namespace, baseline: Path | None) -> dict[str, Any]:
    """Run one side in a fresh process (the `before` side with the baseline tree's code) and read its figures."""
    env = _env(work / "state")
    cmd = [sys.executable, "-m", "bench.bench_dask_scoring"]
    cwd = REPO
    if side == "before":
        assert baseline is not None
        env["PYTHONPATH"] = str(baseline)  # mlops from the tree before; this script's own code
        cmd, cwd = [sys.executable, str(Path(__file__).resolve())], baseline
    cmd += ["--side", side, "--work", str(work), "--workers", str(args.workers), "--memory-limit", args.memory_limit,
            "--mode", args.mode]
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    line = next((x for x in res.stdout.splitlines() if x.startswith("RESULT ")), None)
    if res.returncode != 0 or line is None:
        sys.exit(f"the {side} side failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return json.loads(line.removeprefix("RESULT "))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--chunk-rows", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--memory-limit", default="2GiB")
    parser.add_argument("--mode", choices=["flag", "quarantine"], default="flag",
                        help="flag: every row scored, bad ones flagged (what `mlops score` runs); quarantine: the score flow")
    parser.add_argument("--baseline-tree", type=Path, default=None,
                        help="also score with the code of this source tree (a checkout before a change), side by side")
    parser.add_argument("--work", type=Path, default=None, help="keep the state and data here (default: a temp folder)")
    parser.add_argument("--no-write", action="store_true", help="print, do not write docs/benchmarks.md")
    parser.add_argument("--side", choices=["local", "dask", "before"], help=argparse.SUPPRESS)  # a child's side
    args = parser.parse_args()
    if args.side:
        out = args.work / f"out-{args.side}"
        figures = run_side(args.side, args.work / "bench.yaml", args.work / "input.parquet", out, args.workers,
                           args.memory_limit, args.mode == "flag")
        print("RESULT " + json.dumps(figures), flush=True)
        return
    with tempfile.TemporaryDirectory(prefix="bench-dask-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        if not (work / "input.parquet").exists():
            prepare(work, args.rows, args.chunk_rows)
        results = []
        sides = ["local", "dask"] + (["before"] if args.baseline_tree else [])
        for side in sides:
            results.append(child(side, work, args, args.baseline_tree))
            print(json.dumps(results[-1]), flush=True)
        for side in sides[1:]:
            reordered = same_outputs(work / "out-local", work / f"out-{side}", reason_order=side != "before")
            if side == "before":
                results[-1]["reordered"] = reordered
        given = " ".join(a for a in sys.argv[1:] if a != "--no-write")
        body = render(results, args.rows, args.chunk_rows, args.workers, args.memory_limit,
                      f".venv/bin/python -m bench.bench_dask_scoring {given}".rstrip(), args.mode)
        print(body)
        if not args.no_write:
            write_section(SECTION, body)


if __name__ == "__main__":
    main()
