"""Local stack benchmark: cold start of `mlops up`, and webhook -> flow run started by the worker.

    .venv/bin/python -m bench.bench_stack                  # writes the `stack` section of docs/benchmarks.md

(a) Cold start: `mlops.stack.up` in a fresh state folder (new SQLite databases, first `prefect
    deploy`) until every component answers its health check, per component and in total. Ours
    starts the four independent servers at once and deploys as soon as Prefect answers; the
    baseline is the same stack started one component after the other, each healthy before the next
    (what a start script does). Alternating runs, median reported. Also a warm restart: `up` again
    on the state folder of a stopped stack.
(b) Dispatch latency through the full stack: a signed delivery to the webhook bridge -> the flow run
    exists (automation fired) -> the worker submitted it (Pending) -> the flow is running in its own
    process (Running). bench/bench_webhook.py already measures webhook -> flow run created with
    the bridge and Prefect alone; this adds the worker. Ours polls every 2 s (`mlops up`'s
    PREFECT_WORKER_QUERY_SECONDS); the baseline is Prefect's default, 10 s, on the same stack with
    the worker restarted. Deliveries are sequential (each run ends before the next delivery, since
    the training deployment cancels a run that would overlap) and point at a missing file, so each
    run fails right after it starts: the timing stops at Running either way.

Everything runs on 127.0.0.1 and stops by itself (2 cores shared by every process).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import uuid
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import orjson

from mlops.stack import supervisor as stack
from mlops.webhooks.signing import signed_headers
from tests.support.webhooks import free_port


def small_config(folder: Path) -> Path:
    from tests.conftest import write_config

    return write_config(folder)


def options(state: Path, config: Path, **kw: Any) -> stack.StackOptions:
    return stack.StackOptions.from_env(
        state_dir=state, config_path=config, prefect_port=free_port(), mlflow_port=free_port(),
        serve_port=free_port(), webhook_port=free_port(), schedules=False, timeout=240.0, **kw,
    )


def cold_start(work: Path, config: Path, parallel: bool) -> dict[str, Any]:
    state = work / f"cold-{'par' if parallel else 'seq'}-{uuid.uuid4().hex[:6]}"
    opts = options(state, config, parallel=parallel)
    try:
        res = stack.up(opts)
    finally:
        stack.down(state, grace=10)
    warm_opts = replace(opts, prefect_port=free_port(), mlflow_port=free_port(), serve_port=free_port(),
                        webhook_port=free_port())
    try:
        warm = stack.up(warm_opts)
    finally:
        stack.down(state, grace=10)
    return {"total": res.total_seconds, "steps": res.timings, "warm_total": warm.total_seconds}


def parse_time(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def dispatch(opts: stack.StackOptions, secret: str, deliveries: int, tag: str) -> dict[str, list[float]]:
    """Seconds from each delivery's 202 to: run created, Pending (worker took it), Running."""
    api = opts.api_url
    out: dict[str, list[float]] = {"created": [], "pending": [], "running": []}
    client = httpx.Client(timeout=30)
    for i in range(deliveries):
        missing = str(Path(tempfile.gettempdir()) / f"bench-stack-missing-{tag}-{i}-{uuid.uuid4().hex[:8]}.csv")
        body = orjson.dumps({"dataset": f"bench-{tag}-{i}", "path": missing})
        sent = time.time()
        resp = client.post(f"{opts.url('webhook-bridge')}/hooks/data-vendor", content=body,
                           headers=signed_headers(secret, body, delivery_id=f"bench-{tag}-{i}-{uuid.uuid4()}"))
        resp.raise_for_status()
        run = None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            found = client.post(f"{api}/flow_runs/filter", json={
                "deployments": {"name": {"any_": ["train"]}}, "sort": "EXPECTED_START_TIME_DESC", "limit": 5}).json()
            run = next((r for r in found if r["parameters"].get("source_path") == missing), None)
            if run and run["state"]["type"] in ("FAILED", "COMPLETED", "CRASHED", "CANCELLED"):
                break
            time.sleep(0.2)
        if run is None or run["state"]["type"] not in ("FAILED", "COMPLETED"):
            raise RuntimeError(f"delivery {i}: run {run and run['state']} did not run to the end")
        states = client.get(f"{api}/flow_run_states/", params={"flow_run_id": run["id"]}).json()
        first = {}
        for s in sorted(states, key=lambda s: s["timestamp"]):
            first.setdefault(s["type"], parse_time(s["timestamp"]))
        out["created"].append(parse_time(run["created"]) - sent)
        out["pending"].append(first["PENDING"] - sent)
        out["running"].append(first["RUNNING"] - sent)
    client.close()
    return out


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cold-runs", type=int, default=3, help="cold starts per mode")
    parser.add_argument("--deliveries", type=int, default=30, help="deliveries timed per worker setting")
    parser.add_argument("--no-write", action="store_true", help="print the markdown, leave docs/benchmarks.md alone")
    args = parser.parse_args(argv)

    t_all = time.monotonic()
    loads = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory(prefix="bench-stack-") as tmp:
        work = Path(tmp)
        config = small_config(work)
        cold: dict[str, list[dict[str, Any]]] = {"parallel": [], "sequential": []}
        for i in range(args.cold_runs):
            for mode in (("parallel", "sequential") if i % 2 == 0 else ("sequential", "parallel")):
                print(f"cold start {i + 1}/{args.cold_runs} ({mode}) ...", flush=True)
                cold[mode].append(cold_start(work, config, parallel=(mode == "parallel")))
                loads.append(os.getloadavg()[0])
                print(f"  {cold[mode][-1]['total']:.1f} s", flush=True)

        print("dispatch latency ...", flush=True)
        opts = options(work / "dispatch", config)
        latency: dict[str, dict[str, list[float]]] = {}
        try:
            stack.up(opts)
            secret = stack.load_webhook_secrets(opts)["MLOPS_WEBHOOK_DATA_VENDOR_SECRET"]
            dispatch(opts, secret, 2, "warmup")
            latency[f"ours (poll {opts.worker_poll_seconds:g} s)"] = dispatch(opts, secret, args.deliveries, "ours")
            stack.kill_component(opts.state_dir, "worker", 15)
            stack.restart_component(replace(opts, worker_poll_seconds=10.0), "worker")
            latency["Prefect default (poll 10 s)"] = dispatch(opts, secret, args.deliveries, "default")
        finally:
            stack.down(opts.state_dir, grace=10)
            loads.append(os.getloadavg()[0])

    md = render(cold, latency, args, time.monotonic() - t_all, loads)
    print(md)
    (Path(__file__).resolve().parent / "out").mkdir(exist_ok=True)
    (Path(__file__).resolve().parent / "out" / "stack.json").write_text(
        json.dumps({"cold": cold, "latency": latency, "loads": loads, "seconds": time.monotonic() - t_all}, indent=2))
    if not args.no_write:
        from bench.report import write_section

        write_section("stack", md)
    return 0


def render(cold: dict[str, list[dict[str, Any]]], latency: dict[str, dict[str, list[float]]],
           args: argparse.Namespace, seconds: float, loads: list[float]) -> str:
    med = statistics.median
    par, seq = cold["parallel"], cold["sequential"]
    lines = [
        "Cold start of the local stack (`mlops up`: Prefect server, MLflow server, process work pool + "
        "`prefect deploy` of 6 deployments + automations, worker, model server, webhook bridge) in a fresh "
        "state folder until every component answers its health check; the baseline starts the same "
        "components one after the other, each healthy before the next. Then webhook -> flow run started "
        "by the worker, through the whole stack.",
        "",
        f"Command: `.venv/bin/python -m bench.bench_stack --cold-runs {args.cold_runs} --deliveries "
        f"{args.deliveries}` (whole run {seconds:.0f} s). The 1-minute load average during the run was "
        f"{min(loads):.1f}-{max(loads):.1f} on 2 cores: other work shared the machine, so single runs vary.",
        "",
        "| start | median (s) | min (s) | max (s) | warm restart, median (s) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for label, rows in (("ours: independent servers at once", par), ("baseline: one after the other", seq)):
        totals = [r["total"] for r in rows]
        lines.append(f"| {label} | {med(totals):.1f} | {min(totals):.1f} | {max(totals):.1f} | "
                     f"{med([r['warm_total'] for r in rows]):.1f} |")
    lines += ["", f"**Cold start: {med([r['total'] for r in par]):.1f} s** to all healthy "
              f"({med([r['total'] for r in seq]) / med([r['total'] for r in par]):.2f}x faster than one by one).", ""]
    steps = list(seq[0]["steps"])
    lines += ["Per step (median s; ours counts each server from its own launch, so they overlap):", "",
              "| step | ours | one by one |", "| --- | --- | --- |"]
    for s in steps:
        lines.append(f"| {s} | {med([r['steps'].get(s, 0) for r in par]):.1f} | "
                     f"{med([r['steps'].get(s, 0) for r in seq]):.1f} |")
    lines += ["", f"Webhook -> flow run, {args.deliveries} sequential signed deliveries per setting (seconds "
              "from the bridge's 202):", "",
              "| worker polling | created p50 | created p95 | worker took it (Pending) p50 | p95 | "
              "flow running p50 | p95 |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for label, lat in latency.items():
        lines.append(f"| {label} | {pct(lat['created'], .5):.2f} | {pct(lat['created'], .95):.2f} | "
                     f"{pct(lat['pending'], .5):.2f} | {pct(lat['pending'], .95):.2f} | "
                     f"{pct(lat['running'], .5):.2f} | {pct(lat['running'], .95):.2f} |")
    lines += ["", "Created is the automation firing (bench_webhook measures it without the worker); Pending "
              "waits for the worker's next poll, so it is spread over one polling interval; Running adds "
              "the flow-run process start (Python and Prefect imports, the flow file)."]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
