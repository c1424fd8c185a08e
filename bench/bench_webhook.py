"""Webhook bridge benchmark: signed-request throughput, and webhook -> flow run latency.

    .venv/bin/python -m bench.bench_webhook            # writes the `webhook` section of docs/benchmarks.md

(a) Throughput of signed deliveries to the bridge under uvicorn on loopback, driven by `wrk` with a
    Lua script that replays pre-signed requests (every one with its own delivery id, body and
    signature, so none is a replay), or by an httpx async load generator when /usr/bin/wrk is absent.
    Sinks, side by side: a no-op sink (the bridge alone) and a real local Prefect server (each 202 is
    sent once the event is in the bridge's outbox; the forwarder hands events to Prefect in batches
    meanwhile, and the run waits until Prefect has taken every one of them: the drain time).
    Baseline: the same load of events posted straight to Prefect's POST /api/events, one event per
    request, no bridge.
(b) Latency from the 202 to the flow run existing, with a real Prefect server and a deployment
    trigger, over N sequential deliveries. Baseline: the same event posted straight to Prefect.

Everything runs on 127.0.0.1 and stops by itself; the machine has 2 cores shared by the load
generator, the bridge and the Prefect server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import orjson

from mlops.stack.options import SQLITE_PREFECT_SETTINGS
from mlops.webhooks.signing import DELIVERY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from tests.support.webhooks import (
    REPO,
    Running,
    bridge_process,
    create_triggered_deployment,
    free_port,
    prefect_server,
    stop,
    tail,
)

SECRET = "bench-" + uuid.uuid4().hex
SECRET_ENV = "MLOPS_WEBHOOK_DATA_VENDOR_SECRET"
WRK = "/usr/bin/wrk"

LUA = r"""
-- Replays pre-signed requests from a file: path \t name \t value ... \t body, one per line.
local reqs, n, idx, counter = {}, 0, 0, 0
function setup(thread)
  counter = counter + 1
  thread:set("tid", counter)
end
function init(args)
  local me, nthreads, i = tonumber(tid), tonumber(args[2]), 0
  for line in io.lines(args[1]) do
    i = i + 1
    if (i % nthreads) == (me - 1) then
      local f = {}
      for part in string.gmatch(line, "[^\t]+") do f[#f + 1] = part end
      local headers = {}
      for k = 2, #f - 1, 2 do headers[f[k]] = f[k + 1] end
      n = n + 1
      reqs[n] = wrk.format("POST", f[1], headers, f[#f])
    end
  end
end
function request()
  idx = idx + 1
  if idx > n then idx = 1 end
  return reqs[idx]
end
function done(summary, latency, requests)
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "non2xx": %d, "errors": %d, "p50_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""

NULL_SINK_SERVER = """
import logging, sys, uvicorn
from mlops.webhooks.app import create_app
from mlops.webhooks.sinks import NullSink
logging.basicConfig(level="WARNING")
app = create_app(sys.argv[1], state_dir=sys.argv[2], sink=NullSink())
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[3]), log_level="warning", access_log=False, server_header=False)
"""


# ---- request sets ------------------------------------------------------------------------------


def signed_requests(count: int, tag: str) -> list[tuple[str, dict[str, str], bytes]]:
    """`count` distinct signed deliveries for the data-vendor source (datasets that match no trigger)."""
    ts = int(time.time())
    out = []
    for i in range(count):
        body = orjson.dumps({"dataset": f"load-{tag}", "path": f"/data/incoming/load/{tag}-{i}.parquet", "rows": i})
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: str(ts),
            DELIVERY_HEADER: f"{tag}-{i}",
            SIGNATURE_HEADER: sign(SECRET, ts, body),
        }
        out.append(("/hooks/data-vendor", headers, body))
    return out


def direct_event_requests(count: int, tag: str) -> list[tuple[str, dict[str, str], bytes]]:
    """The baseline: the same events posted straight to Prefect's POST /api/events."""
    now = datetime.now().astimezone().isoformat()
    out = []
    for i in range(count):
        event = {
            "occurred": now,
            "event": "mlops.data.arrived",
            "resource": {"prefect.resource.id": f"mlops.dataset.load-{tag}"},
            "payload": {"path": f"/data/incoming/load/{tag}-{i}.parquet", "rows": i},
            "id": str(uuid.uuid4()),
        }
        out.append(("/api/events", {"Content-Type": "application/json"}, orjson.dumps([event])))
    return out


# ---- load generators ---------------------------------------------------------------------------


def run_wrk(
    base_url: str, reqs: list[tuple[str, dict[str, str], bytes]], duration: int, connections: int, threads: int
) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "requests.tsv"
        with open(data, "wb") as out:
            for path, headers, body in reqs:
                fields = [path.encode()] + [x.encode() for kv in headers.items() for x in kv] + [body]
                out.write(b"\t".join(fields) + b"\n")
        script = Path(tmp) / "signed.lua"
        script.write_text(LUA)
        cmd = [
            WRK,
            f"-t{threads}",
            f"-c{connections}",
            f"-d{duration}s",
            "--timeout",
            "10s",
            "-s",
            str(script),
            base_url,
            "--",
            str(data),
            str(threads),
        ]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    line = next((ln for ln in res.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed:\n{res.stdout}\n{res.stderr}")
    raw = json.loads(line.removeprefix("BENCH_JSON "))
    return {
        "rps": raw["requests"] / (raw["duration_us"] / 1e6),
        "requests": raw["requests"],
        "non2xx": raw["non2xx"],
        "errors": raw["errors"],
        "p50_ms": raw["p50_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
    }


def run_httpx(
    base_url: str, reqs: list[tuple[str, dict[str, str], bytes]], duration: int, connections: int
) -> dict[str, float]:
    async def go() -> dict[str, float]:
        latencies: list[float] = []
        non2xx = errors = 0
        it = iter(reqs)
        deadline = time.perf_counter() + duration

        async def worker(client: httpx.AsyncClient) -> None:
            nonlocal non2xx, errors
            for path, headers, body in it:
                if time.perf_counter() >= deadline:
                    return
                t0 = time.perf_counter()
                try:
                    resp = await client.post(path, content=body, headers=headers)
                    non2xx += not (200 <= resp.status_code < 300)
                except httpx.HTTPError:
                    errors += 1
                latencies.append(time.perf_counter() - t0)

        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=10) as client:
            start = time.perf_counter()
            await asyncio.gather(*(worker(client) for _ in range(connections)))
            elapsed = time.perf_counter() - start
        latencies.sort()
        return {
            "rps": len(latencies) / elapsed,
            "requests": len(latencies),
            "non2xx": non2xx,
            "errors": errors,
            "p50_ms": latencies[len(latencies) // 2] * 1000,
            "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
        }

    return asyncio.run(go())


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measured(
    base_url: str, reqs: list[tuple[str, dict[str, str], bytes]], args: argparse.Namespace, pids: dict[str, int]
) -> dict[str, float]:
    """`load`, plus CPU milliseconds per request spent by each named process: a figure that holds
    even when other work shares the machine."""
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    result = load(base_url, reqs, args)
    for name, pid in pids.items():
        result[f"cpu_ms_{name}"] = (cpu_seconds(pid) - before[name]) * 1000 / max(result["requests"], 1)
    return result


def drained(bridge_url: str, timeout: float = 600.0) -> dict[str, float]:
    """Wait until the bridge's outbox is empty (Prefect took every accepted event); seconds waited and
    how many events the bridge forwarded in all."""
    t0 = time.perf_counter()
    while True:
        health = httpx.get(f"{bridge_url}/health", timeout=10).json()
        if health["outbox"]["queued"] == 0:
            return {"drain_s": time.perf_counter() - t0, "forwarded": float(health["forwarded"]),
                    "dead_letters": float(health["outbox"]["dead_letters"])}
        if time.perf_counter() - t0 > timeout:
            raise RuntimeError(f"the outbox still holds {health['outbox']['queued']} events after {timeout:.0f} s")
        time.sleep(0.1)


def load(base_url: str, reqs: list[tuple[str, dict[str, str], bytes]], args: argparse.Namespace) -> dict[str, float]:
    if Path(WRK).exists() and not args.httpx:
        return run_wrk(base_url, reqs, args.duration, args.connections, args.wrk_threads)
    return run_httpx(base_url, reqs, args.duration, args.connections)


@contextmanager
def null_sink_bridge(work: Path) -> Iterator[Running]:
    port = free_port()
    log = work / "bridge-null.log"
    env = {**os.environ, SECRET_ENV: SECRET}
    cmd = [
        sys.executable,
        "-c",
        NULL_SINK_SERVER,
        str(REPO / "configs" / "webhooks.yaml"),
        str(work / "null-state"),
        str(port),
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(150):
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            raise RuntimeError(f"null-sink bridge did not start:\n{tail(log)}")
        yield Running(url, proc, log)
    finally:
        stop(proc)


# ---- latency -----------------------------------------------------------------------------------


def run_count(api: str, deployment_id: uuid.UUID, client: httpx.Client) -> int:
    resp = client.post(f"{api}/flow_runs/count", json={"deployments": {"id": {"any_": [str(deployment_id)]}}})
    resp.raise_for_status()
    return int(resp.json())


def newest_run_created(api: str, deployment_id: uuid.UUID, client: httpx.Client) -> float:
    resp = client.post(
        f"{api}/flow_runs/filter", json={"deployments": {"id": {"any_": [str(deployment_id)]}}, "limit": 200}
    )
    resp.raise_for_status()
    return max(datetime.fromisoformat(r["created"]).timestamp() for r in resp.json())


def measure_latency(
    api: str, send: Any, deployment_id: uuid.UUID, n: int, warmup: int = 3, poll: float = 0.005
) -> dict[str, Any]:
    """Send n deliveries one at a time; for each, time from acceptance to the flow run existing."""
    created_lat: list[float] = []
    observed_lat: list[float] = []
    accept_lat: list[float] = []
    with httpx.Client(timeout=30) as client:
        for i in range(warmup + n):
            before = run_count(api, deployment_id, client)
            t_send = time.time()
            status = send(i, client)
            t_accepted = time.time()
            if status not in (202, 204):
                raise RuntimeError(f"delivery {i} answered {status}")
            deadline = t_accepted + 30
            while run_count(api, deployment_id, client) <= before:
                if time.time() > deadline:
                    raise RuntimeError(f"no flow run for delivery {i} within 30 s")
                time.sleep(poll)
            t_seen = time.time()
            created = newest_run_created(api, deployment_id, client)
            if i >= warmup:
                accept_lat.append(t_accepted - t_send)
                created_lat.append(created - t_accepted)
                observed_lat.append(t_seen - t_accepted)
    return {"accept": accept_lat, "created": created_lat, "observed": observed_lat}


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def late_total(latency: dict[str, dict[str, dict[str, list[float]]]], index: int) -> int:
    setup = list(latency.values())[index]
    return sum(1 for path in setup.values() for v in path["created"] if v > 1.0)


def late_of(latency: dict[str, dict[str, dict[str, list[float]]]], path: str) -> int:
    return sum(1 for setup in latency.values() for v in setup[path]["created"] if v > 1.0)


def latency_verdict(latency: dict[str, dict[str, dict[str, list[float]]]]) -> str:
    parts = []
    for setup, paths in latency.items():
        p95 = pct(paths["bridge"]["created"], 0.95)
        if p95 < 1.0:
            word = "met"
        elif p95 < 2.0:
            word = "met only narrowly (the p95 run is one Prefect retried after its jittered ~2 s backoff)"
        else:
            word = "NOT met"
        parts.append(f"{word} with {setup} (p95 {p95 * 1000:.0f} ms)")
    return "; ".join(parts)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# ---- main --------------------------------------------------------------------------------------


# Prefect's own defaults for the event persister (the e2e test speeds it up; the benchmark does not),
# and the settings `mlops up` gives a Prefect server on SQLite (mlops.stack.options.SQLITE_PREFECT_SETTINGS).
PREFECT_SETUPS = {
    "Prefect defaults": {"PREFECT_SERVER_SERVICES_EVENT_PERSISTER_FLUSH_INTERVAL": "5"},
    "Prefect as `mlops up` runs it": dict(SQLITE_PREFECT_SETTINGS),
}


def sender_via_bridge(bridge_url: str) -> Any:
    def send(i: int, client: httpx.Client) -> int:
        body = orjson.dumps({"dataset": f"bench-bridge-{i}", "path": f"/data/bench/{i}.parquet"})
        ts = int(time.time())
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: str(ts),
            DELIVERY_HEADER: f"latency-{i}-{uuid.uuid4()}",
            SIGNATURE_HEADER: sign(SECRET, ts, body),
        }
        return client.post(f"{bridge_url}/hooks/data-vendor", content=body, headers=headers).status_code

    return send


def sender_direct(api: str) -> Any:
    def send(i: int, client: httpx.Client) -> int:
        event = {
            "occurred": datetime.now().astimezone().isoformat(),
            "event": "mlops.data.arrived",
            "resource": {"prefect.resource.id": f"mlops.dataset.bench-direct-{i}"},
            "payload": {"path": f"/data/bench/{i}.parquet"},
            "id": str(uuid.uuid4()),
        }
        return client.post(f"{api}/events", json=[event]).status_code

    return send


def warm(url: str, reqs: list[tuple[str, dict[str, str], bytes]], args: argparse.Namespace) -> None:
    load(url, reqs, argparse.Namespace(**{**vars(args), "duration": 2}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_webhook", description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per throughput run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--wrk-threads", type=int, default=1)
    parser.add_argument("--deliveries", type=int, default=50, help="deliveries timed for latency")
    parser.add_argument("--httpx", action="store_true", help="use the httpx load generator even if wrk exists")
    parser.add_argument("--no-write", action="store_true", help="print the markdown, leave docs/benchmarks.md alone")
    args = parser.parse_args(argv)

    tool = "wrk" if Path(WRK).exists() and not args.httpx else "httpx"
    args.load_before = os.getloadavg()[0]  # the machine may be shared: say how busy it was
    per_run = 6000 * args.duration  # far more than any run sends: no request repeats
    throughput: dict[str, dict[str, float]] = {}
    latency: dict[str, dict[str, dict[str, list[float]]]] = {}
    work = Path(tempfile.mkdtemp(prefix="bench-webhook-"))
    try:
        print("throughput: bridge with a no-op sink ...", flush=True)
        with null_sink_bridge(work) as bridge:
            warm(bridge.url, signed_requests(2000, "warm"), args)
            reqs = signed_requests(per_run, "null")
            throughput["null"] = measured(bridge.url, reqs, args, {"bridge": bridge.proc.pid})

        for n, (setup, extra_env) in enumerate(PREFECT_SETUPS.items()):
            stack_dir = work / f"stack{n}"
            stack_dir.mkdir()
            print(f"starting a local Prefect server ({setup}) ...", flush=True)
            with prefect_server(stack_dir, extra_env=extra_env) as server:
                api = server.url
                match = {"prefect.resource.id": "mlops.dataset.bench-bridge*"}
                via_bridge = create_triggered_deployment(
                    api,
                    flow_name="bench-webhook",
                    deployment_name="via-bridge",
                    expect="mlops.data.arrived",
                    match=match,
                )
                match = {"prefect.resource.id": "mlops.dataset.bench-direct*"}
                direct = create_triggered_deployment(
                    api, flow_name="bench-webhook", deployment_name="direct", expect="mlops.data.arrived", match=match
                )
                time.sleep(1.0)  # let the triggers service load the new automations
                with bridge_process(stack_dir, api, {SECRET_ENV: SECRET}) as bridge:
                    print(f"latency: webhook -> flow run ({setup}) ...", flush=True)
                    latency[setup] = {
                        "bridge": measure_latency(api, sender_via_bridge(bridge.url), via_bridge, args.deliveries),
                        "direct": measure_latency(api, sender_direct(api), direct, args.deliveries),
                    }
                    if n == 0:
                        print("throughput: bridge -> Prefect server ...", flush=True)
                        warm(bridge.url, signed_requests(2000, "warm2"), args)
                        reqs = signed_requests(per_run, "prefect")
                        pids = {"bridge": bridge.proc.pid, "prefect": server.proc.pid}
                        base = drained(bridge.url)  # the warm-up's events are all in Prefect
                        throughput["prefect"] = measured(bridge.url, reqs, args, pids)
                        after = drained(bridge.url)
                        throughput["prefect"].update(
                            drain_s=after["drain_s"], forwarded=after["forwarded"] - base["forwarded"],
                            dead_letters=after["dead_letters"] - base["dead_letters"])
                if n == 0:
                    print("throughput: baseline, straight to Prefect ...", flush=True)
                    reqs = direct_event_requests(per_run, "direct")
                    pids = {"prefect": server.proc.pid}
                    throughput["direct"] = measured(api.removesuffix("/api"), reqs, args, pids)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    args.load_after = os.getloadavg()[0]
    md = report(args, tool, throughput, latency)
    print(md)
    out = REPO / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "webhook.json").write_text(
        json.dumps({"tool": tool, "throughput": throughput, "latency": latency}, indent=2)
    )
    if not args.no_write:
        from bench.report import write_section

        write_section("webhook", md)
    return 0


def report(
    args: argparse.Namespace,
    tool: str,
    throughput: dict[str, dict[str, float]],
    latency: dict[str, dict[str, dict[str, list[float]]]],
) -> str:
    gen = (
        f"`wrk -t{args.wrk_threads} -c{args.connections} -d{args.duration}s` replaying pre-signed requests from a Lua script"
        if tool == "wrk"
        else f"an httpx async load generator, {args.connections} connections, {args.duration} s"
    )
    null, pre, direct = throughput["null"], throughput["prefect"], throughput["direct"]
    rows = [
        ("bridge, no-op sink (the bridge alone)", throughput["null"]),
        ("bridge -> local Prefect server (202 once queued in the outbox)", throughput["prefect"]),
        ("baseline: POST /api/events straight to Prefect, 1 event per request", throughput["direct"]),
    ]
    lines = [
        "## Webhook bridge",
        "",
        "`.venv/bin/python -m bench.bench_webhook` — the bridge under uvicorn (one process, uvloop + httptools) "
        "and a real `prefect server start` (SQLite), all on 127.0.0.1, sharing the 2 cores with the load generator "
        f"(1-minute load average {args.load_before:.2f} before the run, {args.load_after:.2f} after: other work "
        "on the machine lowers req/s, so CPU milliseconds per request of each process are given too).",
        "",
        f"**Signed-request throughput** ({gen}; every request has its own delivery id, body and signature, so "
        "none is a replay; goal >= 500 req/s). The Prefect server runs with its default settings.",
        "",
        "| setup | req/s | p50 ms | p99 ms | non-2xx | socket errors | bridge CPU ms/req | Prefect CPU ms/req |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in rows:
        cpu = " | ".join(f"{r[k]:.2f}" if k in r else "-" for k in ("cpu_ms_bridge", "cpu_ms_prefect"))
        lines.append(
            f"| {name} | {r['rps']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {int(r['non2xx'])} | {int(r['errors'])} | {cpu} |"
        )
    lines += [
        "",
        f"**Webhook -> flow run latency** ({args.deliveries} sequential deliveries after 3 warm-up ones; a "
        "`DeploymentEventTrigger` on `mlops.data.arrived` creates a Scheduled run, no worker; goal p95 < 2 s). "
        '"202 -> run created" is the run\'s `created` time on the server minus the moment the sender got its 202 '
        "(slightly negative when Prefect creates the run before its answer reaches the sender); "
        '"202 -> run seen" is when polling `/api/flow_runs/count` every 5 ms first saw it. Baseline: the same event '
        "posted straight to Prefect's `POST /api/events`.",
        "",
        "| Prefect server | path | send -> 202 p50 / p95 ms | 202 -> run created p50 / p95 / max ms | "
        "202 -> run seen p50 / p95 ms | runs > 1 s late |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for setup, paths in latency.items():
        for name, key in (("signed webhook via the bridge", "bridge"), ("baseline: straight to Prefect", "direct")):
            lat = paths[key]
            accept = f"{pct(lat['accept'], 0.5) * 1000:.0f} / {pct(lat['accept'], 0.95) * 1000:.0f}"
            created = " / ".join(
                f"{v * 1000:.0f}" for v in (pct(lat["created"], 0.5), pct(lat["created"], 0.95), max(lat["created"]))
            )
            seen = f"{pct(lat['observed'], 0.5) * 1000:.0f} / {pct(lat['observed'], 0.95) * 1000:.0f}"
            late = sum(1 for v in lat["created"] if v > 1.0)
            lines.append(f"| {setup} | {name} | {accept} | {created} | {seen} | {late} of {len(lat['created'])} |")
    lines += [
        "",
        "Reading it:",
        "",
        f"- Throughput goal (>= 500 signed req/s): {verdict(pre['rps'] >= 500)} with a real Prefect server behind "
        f"the bridge on the same cores: {pre['rps']:.0f} signed deliveries/s accepted (each durably queued before its "
        f"202), and Prefect had taken all {int(pre['forwarded']):,} of them {pre['drain_s']:.1f} s after the load "
        f"stopped ({int(pre['dead_letters'])} refused), i.e. {pre['requests'] / (args.duration + pre['drain_s']):.0f} "
        f"events/s end to end. The bridge alone (no-op sink) takes {null['rps']:.0f}/s at "
        f"{null['cpu_ms_bridge']:.2f} ms of CPU per request (about {1000 / null['cpu_ms_bridge']:.0f}/s per core). "
        f"Prefect is the slower side: it spends {pre['cpu_ms_prefect']:.2f} ms of CPU per event arriving in the "
        f"forwarder's batches, and takes only {direct['rps']:.0f}/s ({direct['cpu_ms_prefect']:.2f} ms per event) "
        "when events come one per request. The outbox absorbs the difference during a burst, and the bridge "
        "answers 503 with Retry-After only once `max_queued_events` (100,000) are waiting.",
        f"- Latency goal (p95 < 2 s from 202 to run): {latency_verdict(latency)}. Of {args.deliveries} runs, "
        f"{args.deliveries - round(0.95 * (args.deliveries - 1))} caught in Prefect's ~2 s retry (below) are "
        "enough to put p95 near or over 2 s, so this verdict can flip from one run of the benchmark to the next; "
        "the count of late runs is the steadier figure. The bridge's own share is its "
        "send -> 202 time; from acceptance on, the path is Prefect's (event bus -> triggers service -> "
        "run-deployment action), and events posted straight to Prefect meet the same ~2 s outliers "
        f"({late_of(latency, 'direct')} of {len(latency) * args.deliveries} here, against "
        f"{late_of(latency, 'bridge')} via the bridge).",
        "- The ~2 s outliers come from Prefect on SQLite: the event persister's batch write sometimes collides "
        "with the run-deployment action's insert, the API answers 503 and Prefect's client retries after its "
        "fixed 2 s backoff (in a server debug log, 7 of the 8 retries traced came within 20 ms of "
        '"Finished persisting events"). '
        "By default the persister writes every 20 events or 5 s, and a delivery makes about 6 events (the "
        "webhook's plus the automation's and the run's), so back-to-back deliveries as here trigger a write every "
        "few deliveries. `mlops up` runs Prefect on SQLite with "
        + ", ".join(f"`{k}={v}`" for k, v in SQLITE_PREFECT_SETTINGS.items())
        + f" (writes on a timer only): late runs here went from {late_total(latency, 0)} to "
        f"{late_total(latency, 1)} of {2 * args.deliveries}, at the cost of events showing in the UI's event feed "
        "up to that interval later. PostgreSQL, the design's back end beyond one machine, has no database-wide "
        "write lock; it is not measured here.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
