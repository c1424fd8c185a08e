"""Where a 1,000-row request spends its time in the model server, stage by stage, in one process.

Fits two models the way the training flow builds them (no registry): HistGradientBoosting on scikit-learn's
breast cancer data (30 numeric inputs, the serving bench's model) and on the default generated churn data
(numeric, integer, category and date inputs). For each, sends `--requests` bodies of 1,000 records in
MLflow's `dataframe_records` to the server's `/invocations` handler directly (no socket, prediction log on,
written to a temporary folder) under cProfile and reports the cumulative time of each stage per request.

    .venv/bin/python -m bench.bench_batch_profile            # this tree
    cd OTHER_TREE && /work/main/.venv/bin/python -m bench.bench_batch_profile   # another tree, same script
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

# (stage, function names whose cumulative time is that stage; the first found counts)
STAGES = [
    ("parse JSON", ["parse_json"]),
    ("records from the body", ["records_from_mlflow"]),
    ("contract check", ["check_records", "validate"]),
    ("features + model", ["score"]),
    ("prediction log (request side)", ["submit"]),
    ("response JSON", ["render"]),
]


def models() -> dict[str, tuple[Any, list[dict[str, Any]]]]:
    from mlops.core.data import generate_churn, load_sklearn_dataset
    from mlops.serving.model import build_served_model
    from mlops.serving.records import records_from_frame
    from tests.support.model_server import fit_pipeline

    out = {}
    df, target = load_sklearn_dataset("breast_cancer")
    pipe, contract, frame = fit_pipeline(df, target)
    out["breast cancer (30 numeric)"] = (build_served_model("bc", "1", "r", pipe, contract, None),
                                         records_from_frame(df.drop(columns=[target])))
    churn = generate_churn(20_000, seed=7)
    pipe, contract, frame = fit_pipeline(churn, "churned", id_column="customer_id", timestamp_column="event_time")
    out["churn (numeric, integer, category, date)"] = (
        build_served_model("churn", "1", "r", pipe, contract, None),
        records_from_frame(frame.drop(columns=["churned"]).head(5000)))
    return out


class Source:
    def __init__(self, m: Any) -> None:
        self.m = m

    def resolve(self) -> str:
        return "1"

    def load(self, version: str) -> Any:
        return self.m


def request(body: bytes) -> Any:
    from starlette.requests import Request

    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    return Request({"type": "http", "method": "POST", "path": "/invocations", "headers": headers,
                    "query_string": b""}, receive)


def profile_one(m: Any, records: list[dict[str, Any]], n_requests: int, log_dir: Path) -> dict[str, Any]:
    import mlops.serving.app as app_mod
    from mlops.serving.app import create_app

    app_mod.INLINE_BYTES = 1 << 40  # score in this thread, so cProfile sees it
    app = create_app(m.name, source=Source(m), log_dir=log_dir)
    server = app.state.server
    server.watcher.check()
    if server.plog is not None:
        server.plog.start()
    batch = [records[i % len(records)] for i in range(1000)]
    body = orjson.dumps({"dataframe_records": batch})

    async def go(k: int) -> float:
        t0 = time.perf_counter()
        for _ in range(k):
            resp = await server._score(request(body), "/invocations")
            assert resp.status_code == 200, resp.body[:300]
        return time.perf_counter() - t0

    asyncio.run(go(5))  # warm-up
    wall = asyncio.run(go(n_requests))
    prof = cProfile.Profile()
    prof.enable()
    asyncio.run(go(n_requests))
    prof.disable()
    stats = pstats.Stats(prof)
    cum: dict[str, float] = {}
    for (_file, _line, fn), (_cc, _nc, _tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        if "mlops" in _file or fn in ("render",):
            cum[fn] = max(cum.get(fn, 0.0), ct)
    total = sum(ct for (f, _l, fn), (_cc, _nc, _tt, ct, _c) in stats.stats.items()  # type: ignore[attr-defined]
                if fn == "_score" and "mlops" in f)
    stages = {}
    for stage, names in STAGES:
        hit = next((n for n in names if n in cum), None)
        stages[stage] = cum[hit] / n_requests * 1000 if hit else 0.0
    if server.plog is not None:
        server.plog.close()
    checked = m.validator.validate(batch, 10_000)  # the model alone, on a checked batch (no profiler)
    t0 = time.perf_counter()
    for _ in range(n_requests):
        m.score(checked)
    model_ms = (time.perf_counter() - t0) / n_requests * 1000
    return {"ms_per_request": wall / n_requests * 1000, "profiled_ms": total / n_requests * 1000,
            "stages_ms": stages, "bytes": len(body), "model_ms": model_ms}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--before", type=Path, default=None,
                        help="figures (--json) of the tree before a change: write the before/after section of "
                             "docs/benchmarks.md")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    out = {}
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp:
        for name, (m, records) in models().items():
            out[name] = profile_one(m, records, args.requests, Path(tmp) / name.split()[0])
            r = out[name]
            print(f"{name}: {r['ms_per_request']:.2f} ms per 1,000-row request ({r['bytes'] / 1024:.0f} KiB body); "
                  f"the model alone {r['model_ms']:.2f} ms")
            for stage, ms in r["stages_ms"].items():
                print(f"    {stage:32s} {ms:7.2f} ms")
    out["loadavg"] = os.getloadavg()
    print(f"load average: {out['loadavg'][0]:.2f}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    if args.before:
        from bench.report import write_section

        body = render(json.loads(args.before.read_text()), out, args.requests)
        print(body)
        write_section("batch-profile", body)


def render(before: dict[str, Any], after: dict[str, Any], requests: int) -> str:
    parts = []
    for name, a in after.items():
        if name == "loadavg" or name not in before:
            continue
        b = before[name]
        rows = [f"| {stage} | {b['stages_ms'].get(stage, 0):.2f} | {ms:.2f} |" for stage, ms in a["stages_ms"].items()]
        parts.append(f"""**{name}** ({a['bytes'] / 1024:.0f} KiB body): {b['ms_per_request']:.1f} ms -> \
{a['ms_per_request']:.1f} ms per request without the profiler (**{b['ms_per_request'] / a['ms_per_request']:.1f}x**);
the model alone (features and trees on a checked batch): {a.get('model_ms', 0):.1f} ms, the ceiling of one worker
at {1000 / a['model_ms'] if a.get('model_ms') else 0:,.0f} requests/s

| stage (cumulative ms per request, under cProfile) | before | after |
| --- | ---: | ---: |
{chr(10).join(rows)}
""")
    return f"""## Where a 1,000-row request spends its time (`bench/bench_batch_profile.py`)

```bash
cd <tree before> && /work/main/.venv/bin/python -m bench.bench_batch_profile --json before.json
.venv/bin/python -m bench.bench_batch_profile --before before.json
```

The `/invocations` handler called directly ({requests} requests of 1,000 records in `dataframe_records`, no socket,
one thread, prediction log on), first timed, then under cProfile; a stage's figure is the cumulative time of its
function, so the profiler's own overhead inflates the many-call stages of the tree before most. Load average
{before.get('loadavg', [0])[0]:.1f} (before) and {after.get('loadavg', [0])[0]:.1f} (after): other work shared the two
cores, so the ratio within a model matters more than the milliseconds.

{chr(10).join(parts)}
What is left is the model's own tree walk (scikit-learn's, over the inputs' bins, once per request for labels and probabilities) and
parsing the JSON body; the contract check no longer touches the 30,000 values one by one, and the log's request
side is one append of a packed record to the journal.
"""


if __name__ == "__main__":
    main()
