"""Validation time against the number of columns: the contract's suite evaluated column by column
(`mlops.core.expectations`, what validation runs) side by side with the same suite run whole through
Great Expectations' pandas engine (`engine="gx"`, what validation ran before), on the same batches.

    .venv/bin/python -m bench.bench_validation                       # 50, 500, 1500 columns; writes docs
    .venv/bin/python -m bench.bench_validation --columns 50 500 --no-write

For each width: 1,000 rows of numeric and categorical columns (a tenth categorical), a contract inferred
from a clean copy, then a messy batch (values out of range, unknown categories, '?' in a numeric column)
validated by both engines; both must quarantine the same rows for the same reasons. The old engine runs in
a child process with a time limit (`--old-timeout`), so a width it cannot finish is reported as such.
Also timed: the training flow's data steps on a CSV of that width (read, profile, check, contract), and
the refusal of a 1,000 x 5,001 CSV (32 MB) by `validation.max_columns` (default 2,000) from its header.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROWS = 1000


def batches(cols: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(clean training frame, messy batch) with `cols` columns including the target."""
    rng = np.random.default_rng(seed)
    data: dict[str, Any] = {}
    for i in range(cols - 1):
        data[f"c{i}"] = rng.choice(["a", "b", "c"], ROWS) if i % 10 == 0 else np.round(rng.normal(i % 50, 3, ROWS), 3)
    data["y"] = rng.integers(0, 2, ROWS)
    clean = pd.DataFrame(data)
    messy = clean.sample(frac=1.0, random_state=seed + 1).reset_index(drop=True)
    messy = messy.astype({"c1": object})
    for i in range(1, cols - 1, max(1, (cols - 1) // 40)):
        hit = rng.choice(ROWS, 2, replace=False)
        messy.loc[hit, f"c{i}"] = "zz" if i % 10 == 0 else 1e6
    messy.loc[[3, 7], "c1"] = "?"
    return clean, messy


def _validate(cols: int, engine: str) -> tuple[float, list[tuple[int, str]]]:
    from mlops.core.config import ValidationConfig
    from mlops.core.contract import infer_contract
    from mlops.core.validation import QUARANTINE_REASON_COLUMN, validate_batch

    clean, messy = batches(cols)
    contract = infer_contract(clean, "y", "classification", ValidationConfig())
    validate_batch(clean.head(20), contract, engine=engine)  # type: ignore[arg-type]  # imports, first calls
    seconds = float("inf")
    for _ in range(3 if engine == "columns" else 1):  # the best of three where a run is short (a shared machine)
        start = time.perf_counter()
        out = validate_batch(messy, contract, engine=engine)  # type: ignore[arg-type]
        seconds = min(seconds, time.perf_counter() - start)
    q = out.quarantined
    return seconds, list(zip(q.index.tolist(), q[QUARANTINE_REASON_COLUMN].tolist(), strict=True))


def _child(cols: int, engine: str, queue: Any) -> None:
    queue.put(_validate(cols, engine))


def validate_in_child(cols: int, engine: str, timeout: float) -> tuple[float, list[tuple[int, str]]] | None:
    """Validation timed in a fresh process; None past `timeout` seconds (the process is stopped)."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(cols, engine, queue))
    proc.start()
    try:
        return queue.get(timeout=timeout)
    except Exception:  # noqa: BLE001 - queue.Empty: past the limit
        return None
    finally:
        if proc.is_alive():
            proc.terminate()
        proc.join()


def training_steps(cols: int, folder: Path) -> float:
    """Seconds for the training flow's data steps on a CSV of this width: read, profile, check, contract."""
    from mlops.core.config import parse_config
    from mlops.core.data import load_training_data
    from mlops.core.validation import validate_training_batch

    clean, _ = batches(cols)
    path = folder / f"train-{cols}.csv"
    clean.to_csv(path, index=False)
    cfg = parse_config({"name": "bench", "task": "classification", "source": {"kind": "file", "path": str(path)},
                        "target": "y", "models": [{"family": "logistic_regression"}],
                        "registry": {"model_name": "bench"}})
    best = float("inf")
    for _ in range(2):
        start = time.perf_counter()
        loaded = load_training_data(cfg)
        validate_training_batch(loaded.frame, None, cfg, loaded.profile)
        best = min(best, time.perf_counter() - start)
    return best


def refusal(folder: Path) -> tuple[float, float, str]:
    """(MB, seconds, message) for a 1,000 x 5,001 CSV refused by validation.max_columns."""
    from mlops.core.config import parse_config
    from mlops.core.data import load_training_data
    from mlops.core.errors import DataError

    rng = np.random.default_rng(2)
    path = folder / "wide-5001.csv"
    lines = [",".join(f"{v:.4f}" for v in rng.normal(size=5000)) + f",{i % 2}" for i in range(ROWS)]
    path.write_text(",".join(f"c{i}" for i in range(5000)) + ",y\n" + "\n".join(lines) + "\n")
    cfg = parse_config({"name": "bench", "task": "classification", "source": {"kind": "file", "path": str(path)},
                        "target": "y", "models": [{"family": "logistic_regression"}],
                        "registry": {"model_name": "bench"}})
    start = time.perf_counter()
    try:
        load_training_data(cfg)
        message = "not refused"
    except DataError as exc:
        message = str(exc).replace(str(path), "wide-5001.csv")
    return path.stat().st_size / 1e6, time.perf_counter() - start, message


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().split(" ")[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--columns", type=int, nargs="+", default=[50, 500, 1500])
    parser.add_argument("--old-timeout", type=float, default=900.0, help="seconds the old engine gets per width")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args()

    loads = [loadavg()]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        training_steps(5, Path(tmp))  # imports (Great Expectations, sklearn) out of the timed runs
        for cols in args.columns:
            new = validate_in_child(cols, "columns", args.old_timeout)
            old = validate_in_child(cols, "gx", args.old_timeout)
            steps = training_steps(cols, Path(tmp))
            loads.append(loadavg())
            assert new is not None
            same = "-" if old is None else ("yes" if old[1] == new[1] else "NO")
            old_s = f"> {args.old_timeout:.0f} s (stopped)" if old is None else f"{old[0]:.2f} s"
            rows.append(f"| {cols:,} | {len(new[1])} | {old_s} | {new[0]:.2f} s | {same} | {steps:.1f} s |")
            print(rows[-1], flush=True)
        mb, refused_s, message = refusal(Path(tmp))
        loads.append(loadavg())
    body = f"""## Validation against columns (`bench/bench_validation.py`)

One batch of {ROWS:,} rows, a tenth of the columns categorical, values out of range, unknown categories and
`?` in a numeric column scattered over it; the contract inferred from a clean copy. *Old*: the contract's
Great Expectations suite run whole by GE's pandas engine (`validate_batch(..., engine="gx")`, what
validation ran before; it filters the whole frame for every expectation). *New*: the same suite
evaluated column by column (`mlops.core.expectations`, what validation runs now), best of three runs. Each
engine in a fresh process, after a 20-row warm-up (imports); old and new must quarantine the same rows for
the same reasons.
*Training data steps*: read, profile, check and contract of a CSV of that width (the training flow's
`load_training_data` + `validate_training_batch`, new engine; best of two).

| columns | rows quarantined | old (GE whole suite) | new (column by column) | same rows and reasons | training data steps |
| --- | --- | --- | --- | --- | --- |
{chr(10).join(rows)}

A {ROWS:,} x 5,001 CSV ({mb:.0f} MB) is refused by `validation.max_columns` (default 2,000) from its header in
{refused_s:.2f} s: "{message}"

Load (1-minute average, `/proc/loadavg`) over the run: {" -> ".join(loads)}; the machine was shared with other
test and benchmark runs, so absolute times are high and vary; the ratio between columns is the point.
"""
    print(body)
    if not args.no_write:
        from bench.report import write_section

        write_section("validation", body)


if __name__ == "__main__":
    main()
