"""`mlops score` as a user runs it: a new process, a registered champion, a messy file in, one output row per
input row out (CSV or Parquet by extension), bad rows flagged not dropped; bad input is one sentence and a
non-zero exit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from tests.conftest import REPO
from tests.support.model_server import churn_frame, fit_pipeline, isolated_state, register_model

MLOPS = str(Path(sys.executable).parent / "mlops")
NAME = "churn-score-cli"
pytestmark = pytest.mark.e2e


def _config(folder: Path, model_name: str) -> Path:
    path = folder / f"{model_name}.yaml"
    path.write_text(yaml.safe_dump({
        "name": "score-cli", "task": "classification", "source": {"kind": "generated"}, "target": "churned",
        "id_column": "customer_id", "timestamp_column": "event_time",
        "models": [{"family": "hist_gradient_boosting"}], "registry": {"model_name": model_name},
        "serving": {"batch_chunk_rows": 400}, "validation": {"max_quarantine_fraction": 0.05},
    }))
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A champion registered in its own state folder; the config and the data in one folder (a data root)."""
    work = tmp_path_factory.mktemp("score-cli")
    with isolated_state(work) as state:
        pipe, contract, frame = fit_pipeline(churn_frame(1200, seed=41), "churned", params={"max_iter": 20},
                                             id_column="customer_id", timestamp_column="event_time")
        version = register_model(NAME, pipe, contract, frame)
        env = dict(os.environ)
        env.pop("PREFECT_API_URL", None)
        yield {"work": work, "state": state, "version": version, "env": env, "config": _config(work, NAME)}


def mlops(setup: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([MLOPS, *args], cwd=REPO, env=setup["env"], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_score_writes_one_row_per_input_row_and_flags_bad_ones(setup: dict[str, Any], suffix: str) -> None:
    work = setup["work"]
    df = churn_frame(1000, seed=42).drop(columns=["churned"])
    df = df.astype({"tenure_months": object})
    df.loc[7, "age"] = 150.0  # outside the config's rule
    df.loc[512, "tenure_months"] = "a year"  # not a number
    src = work / "to_score.csv"
    df.to_csv(src, index=False)
    out = work / f"scored{suffix}"
    res = mlops(setup, "score", "--config", str(setup["config"]), "--data", str(src), "--out", str(out), "--json")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Traceback" not in res.stderr
    record = json.loads(res.stdout)

    preds = pd.read_parquet(out) if suffix == ".parquet" else pd.read_csv(out)
    assert len(preds) == 1000 and preds["row"].tolist() == list(range(1000))
    assert preds["customer_id"].tolist() == df["customer_id"].tolist()
    flagged = preds.set_index("row")["contract_violation"].dropna()
    assert {7, 512} <= set(flagged.index)
    assert "age" in flagged[7] and "tenure_months" in flagged[512]
    assert preds["prediction_proba"].between(0, 1).all() and set(preds["prediction"].astype(str)) <= {"0", "1"}
    assert set(preds["model_version"].astype(str)) == {setup["version"]}
    assert record["rows_read"] == record["rows_scored"] == 1000 and record["rows_flagged"] == len(flagged)
    assert record["predictions_path"] == str(out) and record["chunks"] == 3
    assert Path(record["output_dir"], "run.json").is_file()


def test_score_bad_input_is_one_sentence_and_a_non_zero_exit(setup: dict[str, Any]) -> None:
    work = setup["work"]
    ok = work / "ok.csv"
    churn_frame(50, seed=43).drop(columns=["churned"]).to_csv(ok, index=False)
    (work / "broken.parquet").write_bytes(b"PAR1 this is not parquet")
    cases = [
        (["--data", str(work / "missing.csv"), "--out", str(work / "o.csv")], 3, "input not found"),
        (["--data", str(work / "broken.parquet"), "--out", str(work / "o.csv")], 3, "not a readable Parquet file"),
        (["--data", str(ok), "--out", str(work / "o.txt")], 3, "must end in .csv or .parquet"),
        (["--config", str(_config(work, "never-trained")), "--data", str(ok), "--out", str(work / "o.csv")], 4,
         "'never-trained' has no version with alias 'champion'"),
    ]
    for args, code, message in cases:
        if "--config" not in args:
            args = ["--config", str(setup["config"]), *args]
        res = mlops(setup, "score", *args)
        assert res.returncode == code, (args, res.stdout, res.stderr[-2000:])
        lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], res.stderr
        assert not (work / "o.csv").exists()
