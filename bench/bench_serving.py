"""Serving benchmark: this model server vs `mlflow models serve`, same registered model, same request.

Trains HistGradientBoosting with the project's own training flow on scikit-learn's breast cancer data
(configs/breast_cancer.yaml restricted to that family; 30 numeric inputs) and on the default config's
generated churn data (numeric, integer, category and date inputs), then, one model at a time, starts on
loopback and side by side `python -m mlops.serving` (contract validation and prediction logging on, as
deployed), `mlflow models serve --env-manager local -m models:/NAME@champion` (default threads and one
OpenMP thread) and, with `--baseline-tree`, this server from another source tree (a checkout before a
change), all with the same number of uvicorn workers, and drives each with wrk: one-row requests at 1 and
16 connections and 1,000-row batches of each model, in MLflow's scoring protocol on `/invocations` (the
same bytes to all), plus this server's `/predict`. Runs alternate between the servers and the median of
the repeats is reported. Writes the `serving` section of docs/benchmarks.md.

    .venv/bin/python -m bench.bench_serving --baseline-tree /path/to/checkout-before
    .venv/bin/python -m bench.bench_serving --duration 5 --repeats 1 --no-write

Needs wrk (`apt-get install -y wrk`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
MODEL = "bench-breast-cancer-hgb"
MIXED_MODEL = "bench-churn-hgb"
LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open(os.getenv("BENCH_BODY"), "rb")
wrk.body = f:read("*all")
f:close()
"""
GOALS = {"rps_16": 880.0, "p99_16_ms": 50.0, "p50_1_ms": 3.0}
SERVERS = {
    "ours": "this server",
    "mlflow": "`mlflow models serve`",
    "mlflow_1t": "`mlflow models serve`, 1 OpenMP/BLAS thread",
}
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def run(cmd: list[str], env: dict[str, str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, env=env, cwd=REPO, text=True, capture_output=True, **kw)


def train(work: Path, env: dict[str, str], config: str = "breast_cancer.yaml", name: str = MODEL) -> dict[str, Any]:
    """A champion: the training flow on a shipped config's data, HistGradientBoosting only."""
    cfg = yaml.safe_load((REPO / "configs" / config).read_text())
    cfg["models"] = [m for m in cfg["models"] if m["family"] == "hist_gradient_boosting"]
    cfg["search"] = {**cfg.get("search", {}), "n_trials": 4, "cv_folds": 3}
    cfg["registry"] = {**cfg["registry"], "model_name": name}
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = run([sys.executable, "-c", "from mlops.cli.main import main; main()", "train", "--config", str(path)], env,
              timeout=1800)
    if out.returncode != 0:
        raise SystemExit(f"training failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    from mlops.registry import versions as registry

    registry.client(env["MLFLOW_TRACKING_URI"])
    mv = registry.get_version_by_alias(name, registry.CHAMPION)
    if mv is None:
        raise SystemExit(f"training registered no champion:\n{out.stdout[-2000:]}")
    bundle = registry.load_bundle(name, str(mv.version), with_reference=False)
    est = bundle.model.steps[-1][1]
    kinds = sorted({c.kind for c in bundle.contract.columns if c.role != "target"})
    return {"name": name, "version": str(mv.version), "family": type(est).__name__,
            "trees": int(getattr(est, "n_iter_", 0)), "features": len(bundle.contract.input_columns), "kinds": kinds}


def bodies(work: Path) -> dict[str, Path]:
    import orjson

    from mlops.core.data import load_sklearn_dataset
    from mlops.serving.records import records_from_frame

    df, target = load_sklearn_dataset("breast_cancer")
    records = records_from_frame(df.drop(columns=[target]))
    batch = [records[i % len(records)] for i in range(1000)]
    from mlops.core.data import generate_churn

    mixed = records_from_frame(generate_churn(1000, seed=8).drop(columns=["churned"]))
    out = {
        "one": orjson.dumps({"dataframe_records": records[:1]}),
        "batch": orjson.dumps({"dataframe_records": batch}),
        "predict_one": orjson.dumps(records[0]),
        "mixed_batch": orjson.dumps({"dataframe_records": mixed}),
    }
    paths = {}
    for name, body in out.items():
        paths[name] = work / f"{name}.json"
        paths[name].write_bytes(body)
    (work / "post.lua").write_text(LUA)
    return paths


def free_port() -> int:
    from tests.support.model_server import free_port as fp

    return fp()


def wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 180.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"{url} not up after {timeout} s:\n{log.read_text()[-3000:]}")


def start(name: str, cmd: list[str], env: dict[str, str], work: Path, ready: str,
          cwd: Path = REPO) -> subprocess.Popen[bytes]:
    log = work / f"{name}.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    wait_http(ready, proc, log)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, 15)  # the server's own process group (uvicorn workers included)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(10)


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text.strip())
    if not m:
        raise ValueError(text)
    return float(m.group(1)) * _UNITS[m.group(2)]


def wrk(url: str, body: Path, connections: int, seconds: float, lua: Path) -> dict[str, float]:
    env = {**os.environ, "BENCH_BODY": str(body)}
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "10s", "--latency", "-s", str(lua), url]
    out = subprocess.run(cmd, env=env, text=True, capture_output=True, timeout=seconds + 60).stdout
    res: dict[str, float] = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}  # type: ignore[union-attr]
    for q in ("50", "99"):
        res[f"p{q}"] = _ms(re.search(rf"^\s+{q}%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    total = re.search(r"(\d+) requests in", out)
    res["requests"] = float(total.group(1)) if total else 0.0
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    res["errors"] = float(bad.group(1)) if bad else 0.0
    res["errors"] += sum(float(x) for x in sock.groups()) if sock else 0.0
    return res


def check_same_answers(ours: str, mlflow: str, paths: dict[str, Path], names: tuple[str, ...]) -> None:
    import httpx

    for name in names:
        body = paths[name].read_bytes()
        h = {"content-type": "application/json"}
        a = httpx.post(f"{ours}/invocations", content=body, headers=h, timeout=60).json()
        b = httpx.post(f"{mlflow}/invocations", content=body, headers=h, timeout=60).json()
        if a != b:
            raise SystemExit(f"the servers disagree on the {name} request")


def median(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]} | {"errors": sum(r["errors"] for r in runs)}


def start_servers(model: str, env: dict[str, str], work: Path, workers: int, baseline: Path | None
                  ) -> tuple[dict[str, str], dict[str, subprocess.Popen[bytes]]]:
    """This server, `mlflow models serve` (default and one OpenMP thread) and, given a baseline tree, this server
    as that tree had it, all serving `model` from the same registry."""
    names = list(SERVERS) + (["before"] if baseline else [])
    urls = {name: f"http://127.0.0.1:{free_port()}" for name in names}
    ours = [sys.executable, "-m", "mlops.serving", "--model", model, "--host", "127.0.0.1", "--workers", str(workers),
            "--log-level", "warning", "--port"]
    procs = {"ours": start(f"ours-{model}", [*ours, urls["ours"].rsplit(":", 1)[1]], env, work, f"{urls['ours']}/ready")}
    if baseline:
        procs["before"] = start(f"before-{model}", [*ours, urls["before"].rsplit(":", 1)[1]],
                                {**env, "PYTHONPATH": str(baseline)}, work, f"{urls['before']}/ready", cwd=baseline)
    for name, extra in (("mlflow", {}), ("mlflow_1t", dict.fromkeys(THREAD_VARS, "1"))):
        procs[name] = start(f"{name}-{model}", [str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m",
                                                f"models:/{model}@champion", "--env-manager", "local", "-h", "127.0.0.1",
                                                "-p", urls[name].rsplit(":", 1)[1], "-w", str(workers)],
                            {**env, **extra}, work, f"{urls[name]}/health")
    return urls, procs


def scenario(urls: dict[str, str], path: Path, conns: int, args: argparse.Namespace, lua: Path,
             route: str = "/invocations") -> dict[str, dict[str, float]]:
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in urls}
    for url in urls.values():  # warm-up
        wrk(f"{url}{route}", path, conns, 2, lua)
    for rep in range(args.repeats):
        order = list(urls)
        order = order[rep % len(order):] + order[:rep % len(order)]  # rotate who goes first
        for name in order:
            runs[name].append(wrk(f"{urls[name]}{route}", path, conns, args.duration, lua))
    return {k: median(v) for k, v in runs.items()}


def isolated_env(work: Path) -> dict[str, str]:
    """A state folder under `work` with its own MLflow store and Prefect home, for this process and its children."""
    state = work / "state"
    state.mkdir()
    env = {**os.environ, "MLOPS_HOME": str(state), "MLFLOW_TRACKING_URI": f"sqlite:///{state / 'mlflow.db'}",
           "MLOPS_ARTIFACT_ROOT": (state / "mlartifacts").as_uri(), "PREFECT_HOME": str(state / "prefect"),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("PREFECT_API_URL", None)
    os.environ.update({k: env[k] for k in ("MLOPS_HOME", "MLFLOW_TRACKING_URI", "MLOPS_ARTIFACT_ROOT")})
    return env


def one_row_only(args: argparse.Namespace) -> int:
    """This server and the tree before on one-row requests only: the cost of the journal, side by side."""
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        work = Path(tmp)
        env = isolated_env(work)
        train(work, env)
        paths = bodies(work)
        lua = work / "post.lua"
        base = [sys.executable, "-m", "mlops.serving", "--model", MODEL, "--host", "127.0.0.1", "--workers",
                str(args.workers), "--log-level", "warning", "--port"]
        urls = {name: f"http://127.0.0.1:{free_port()}" for name in ("ours", "before")}
        procs = {"ours": start("ours", [*base, urls["ours"].rsplit(":", 1)[1]], env, work, f"{urls['ours']}/ready"),
                 "before": start("before", [*base, urls["before"].rsplit(":", 1)[1]],
                                 {**env, "PYTHONPATH": str(args.baseline_tree)}, work, f"{urls['before']}/ready",
                                 cwd=args.baseline_tree)}
        rows = []
        try:
            for route, body in (("/invocations", "one"), ("/predict", "predict_one")):
                for conns in (1, 16):
                    r = scenario(urls, paths[body], conns, args, lua, route)
                    change = r["ours"]["rps"] / r["before"]["rps"] - 1
                    rows.append(f"| `{route}`, {conns} connection{'s' if conns > 1 else ''} | {r['before']['rps']:,.0f} | "
                                f"{r['ours']['rps']:,.0f} | {change:+.1%} | {r['before']['p50']:.2f} / "
                                f"{r['ours']['p50']:.2f} |")
                    print(rows[-1], flush=True)
        finally:
            for proc in procs.values():
                stop(proc)
    md = f"""## One-row requests: the prediction log's journal, side by side with the tree before

`python -m bench.bench_serving --one-row-only --baseline-tree <tree before> --repeats {args.repeats} --duration \
{args.duration:g}`: the same server from the tree before the journal and from this tree, {args.workers} workers each,
the breast cancer model, wrk runs alternating (median of {args.repeats}). Load average {load[0]:.1f} at the start,
{os.getloadavg()[0]:.1f} at the end (other sessions' work).

| route | before req/s | now req/s | change | p50 ms before / now |
| --- | ---: | ---: | ---: | --- |
{chr(10).join(rows)}
"""
    print(md)
    if not args.no_write:
        from bench.report import write_section

        write_section("serving-one-row", md)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per server and scenario (median reported)")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn workers for both servers")
    parser.add_argument("--baseline-tree", type=Path, default=None,
                        help="also run this server from another source tree (a checkout before a change), side by side")
    parser.add_argument("--one-row-only", action="store_true",
                        help="with --baseline-tree: only one-row requests, this server against the tree before")
    parser.add_argument("--no-write", action="store_true", help="print the markdown, leave docs/benchmarks.md alone")
    args = parser.parse_args(argv)
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed: apt-get update && apt-get install -y wrk")
    if args.one_row_only:
        if not args.baseline_tree:
            raise SystemExit("--one-row-only compares with the tree before: give --baseline-tree")
        return one_row_only(args)

    started = time.monotonic()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        work = Path(tmp)
        env = isolated_env(work)
        print("training the champions (HistGradientBoosting on breast cancer and on the default churn data) ...",
              flush=True)
        model = train(work, env)
        mixed_model = train(work, env, "default.yaml", MIXED_MODEL)
        for m in (model, mixed_model):
            print(f"  {m['name']} v{m['version']}: {m['family']}, {m['trees']} trees", flush=True)
        paths = bodies(work)
        lua = work / "post.lua"

        print("starting the servers for the bench model ...", flush=True)
        urls, procs = start_servers(MODEL, env, work, args.workers, args.baseline_tree)
        results: dict[str, dict[str, dict[str, float]]] = {}
        predict: dict[str, dict[str, float]] = {}
        try:
            for name in ("mlflow", "mlflow_1t"):
                check_same_answers(urls["ours"], urls[name], paths, ("one", "batch"))
            for label, body, conns in [("one row, 1 connection", "one", 1), ("one row, 16 connections", "one", 16),
                                       ("1,000-row batch, 4 connections", "batch", 4)]:
                results[label] = scenario(urls, paths[body], conns, args, lua)
                print(f"  {label}: " + " | ".join(f"{k} {r['rps']:.0f} req/s p50 {r['p50']:.2f} p99 {r['p99']:.2f} ms"
                                                  for k, r in results[label].items()), flush=True)
            mine = {k: v for k, v in urls.items() if k in ("ours", "before")}
            for conns in (1, 16):
                label = f"one row, {conns} connection{'s' if conns > 1 else ''}"
                predict[label] = scenario(mine, paths["predict_one"], conns, args, lua, "/predict")
            import httpx

            metrics = httpx.get(f"{urls['ours']}/metrics", timeout=10).text
            served = httpx.get(f"{urls['ours']}/model", timeout=10).json()
        finally:
            for proc in procs.values():
                stop(proc)
        print("starting the servers for the mixed-type default model ...", flush=True)
        urls, procs = start_servers(MIXED_MODEL, env, work, args.workers, args.baseline_tree)
        try:
            for name in ("mlflow", "mlflow_1t"):
                check_same_answers(urls["ours"], urls[name], paths, ("mixed_batch",))
            label = "1,000-row batch, 4 connections, mixed types"
            results[label] = scenario(urls, paths["mixed_batch"], 4, args, lua)
            print(f"  {label}: " + " | ".join(f"{k} {r['rps']:.0f} req/s p50 {r['p50']:.2f} p99 {r['p99']:.2f} ms"
                                              for k, r in results[label].items()), flush=True)
        finally:
            for proc in procs.values():
                stop(proc)
        from mlops.serving.predictlog import read_prediction_log

        logged = len(read_prediction_log(work / "state" / "predictions"))
    dropped = sum(float(ln.rsplit(" ", 1)[1]) for ln in metrics.splitlines()
                  if ln.startswith("mlops_prediction_log_dropped_rows_total"))
    md = render(results, predict, model, mixed_model, served, args, logged, dropped, load_before, os.getloadavg(),
                time.monotonic() - started)
    print(md)
    (REPO / "bench" / "out").mkdir(exist_ok=True)
    (REPO / "bench" / "out" / "serving.json").write_text(json.dumps(
        {"model": model, "mixed_model": mixed_model, "invocations": results, "predict": predict,
         "logged_rows": logged, "dropped_rows": dropped}, indent=2))
    if not args.no_write:
        from bench.report import write_section

        write_section("serving", md)
    return 0


def render(results: dict[str, dict[str, dict[str, float]]], predict: dict[str, dict[str, dict[str, float]]],
           model: dict[str, Any], mixed: dict[str, Any], served: dict[str, Any], args: argparse.Namespace, logged: int,
           dropped: float, load: tuple[float, float, float], load_end: tuple[float, float, float], seconds: float) -> str:
    titles = {**SERVERS, "before": "this server, the tree before (`--baseline-tree`)"}
    rows = []
    for label, r in results.items():
        o = r["ours"]
        for name, x in r.items():
            vs = "" if name == "ours" else (f"**{o['rps'] / x['rps']:.1f}x** the req/s, "
                                            f"{x['p99'] / o['p99']:.1f}x lower p99")
            rows.append(f"| {label} | {titles[name]} | {x['rps']:,.0f} | {x['p50']:.2f} | {x['p99']:.2f} | "
                        f"{int(x['errors'])} | {vs} |")
    prow = [f"| {label} | {titles[name]} | {x['rps']:,.0f} | {x['p50']:.2f} | {x['p99']:.2f} | {int(x['errors'])} |"
            for label, r in predict.items() for name, x in r.items()]
    one, many = results["one row, 1 connection"]["ours"], results["one row, 16 connections"]["ours"]
    met = (many["rps"] >= GOALS["rps_16"] and many["p99"] < GOALS["p99_16_ms"] and one["p50"] < GOALS["p50_1_ms"])
    goals = [(f"One row (>= {GOALS['rps_16']:.0f} req/s with p99 < {GOALS['p99_16_ms']:.0f} ms at 16 connections, "
              f"p50 < {GOALS['p50_1_ms']:.0f} ms at 1 connection, validation and logging on): "
              + ("**met**" if met else "**not met**")
              + f" ({many['rps']:,.0f} req/s, p99 {many['p99']:.1f} ms at 16; p50 {one['p50']:.2f} ms at 1).")]
    for label, need in (("1,000-row batch, 4 connections", 10.0), ("1,000-row batch, 4 connections, mixed types", 5.0)):
        r = results[label]
        worst = min(r["ours"]["rps"] / r[m]["rps"] for m in ("mlflow", "mlflow_1t"))
        goals.append(f"{label} (>= {need:.0f}x `mlflow models serve`, either thread setting): "
                     + ("**met**" if worst >= need else "**not met**")
                     + f" ({r['ours']['rps'] / r['mlflow']['rps']:.1f}x and {r['ours']['rps'] / r['mlflow_1t']['rps']:.1f}x).")
    if "before" in results["one row, 1 connection"]:
        drops = []
        for label in ("one row, 1 connection", "one row, 16 connections"):
            r = results[label]
            drops.append(f"{label}: {r['ours']['rps'] / r['before']['rps'] - 1:+.1%} on `/invocations`"
                         + (f", {predict[label]['ours']['rps'] / predict[label]['before']['rps'] - 1:+.1%} on `/predict`"
                            if label in predict and "before" in predict[label] else ""))
        worst_drop = min(results[lb]["ours"]["rps"] / results[lb]["before"]["rps"]
                         for lb in ("one row, 1 connection", "one row, 16 connections"))
        goals.append("One-row throughput against the tree before (the journal's cost; at most -10% allowed): "
                     + ("**met**" if worst_drop >= 0.9 else "**not met**") + f" ({'; '.join(drops)}).")
    goal_text = "\n".join(f"- {g}" for g in goals)
    before_note = (" The tree before is the same server from a checkout before the batch path and the journal, run "
                   "side by side." if args.baseline_tree else "")
    return f"""## Serving: this model server vs `mlflow models serve`

`python -m bench.bench_serving{' --baseline-tree <tree before>' if args.baseline_tree else ''}`: wrk
({args.duration:g} s per run, median of {args.repeats} runs with the order of the servers rotated, {args.workers}
uvicorn workers per server, everything on loopback on the same {os.cpu_count()}-core machine as wrk). Models, both
trained by the training flow, HistGradientBoosting: `{MODEL}` v{model['version']} ({model['trees']} trees) on
scikit-learn's breast cancer data ({model['features']} numeric inputs), and `{MIXED_MODEL}` v{mixed['version']}
({mixed['trees']} trees) on the default config's generated churn data ({mixed['features']} inputs:
{", ".join(mixed['kinds'])}). Every server gets the same bytes on `/invocations` (MLflow's `dataframe_records`); their
answers are checked identical before timing. This server ran as deployed: every request checked against the data
contract, every row written to the prediction log and its journal before the response ({logged:,} rows logged,
{dropped:,.0f} dropped); scoring path: {served.get('fast_path') or served.get('fast_path_note')}. The MLflow server
also runs with OMP/BLAS threads limited to 1, as this server runs: without that, each of its workers'
HistGradientBoosting calls starts OpenMP threads that fight over the two cores.{before_note}

| scenario | server | req/s | p50 ms | p99 ms | errors | this server vs it |
| --- | --- | --- | --- | --- | --- | --- |
{chr(10).join(rows)}

This server's own `POST /predict` (one record; answers with class probabilities, model version and request id):

| scenario | server | req/s | p50 ms | p99 ms | errors |
| --- | --- | --- | --- | --- | --- |
{chr(10).join(prow)}

{goal_text}

Why: `mlflow models serve` turns each request into a pandas DataFrame, enforces the signature and calls
`Pipeline.predict` (pandas and scikit-learn input checks: milliseconds per call). This server checks a one-row
request in plain Python and a request of many rows column by column with numpy (the same answers, proven on messy
generated requests), then scores with the fitted ColumnTransformer compiled to numpy arrays and the trees walked
once for labels and probabilities, bit-identical to `Pipeline.predict_proba` (proven when a version loads, on its
reference sample). One BLAS/OpenMP thread per worker, orjson, uvloop, httptools; the loaded model is moved out of
the garbage collector's scans (`gc.freeze`). Load average at the start {load[0]:.1f}, at the end {load_end[0]:.1f}
(other work on the machine: compare the servers within a row, not the absolute figures); whole run
{seconds / 60:.1f} min.
"""


if __name__ == "__main__":
    raise SystemExit(main())
