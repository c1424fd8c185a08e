"""Train on a messy CSV with the training flow, then `mlops score` the same file: no row breaks the contract,
because training and scoring read the file with one reader (mlops.core.tabular)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from flows.train import train
from mlops.cli.main import app
from tests.conftest import write_config
from tests.support.state import state_folder
from tests.support.tabular import messy_csv

pytestmark = pytest.mark.slow  # a whole training flow, then scoring its file


def test_scoring_the_file_the_model_trained_on_flags_no_row(tmp_path: Path) -> None:
    src = messy_csv(tmp_path / "census.csv", rows=2500, seed=8)
    with state_folder(tmp_path / "state"):
        config = write_config(tmp_path, source={"kind": "file", "path": str(src)}, data_roots=[str(tmp_path)],
                              registry={"model_name": "messy-file", "reference_rows": 300},
                              gate={"thresholds": {"roc_auc": 0.5}})
        state = train(config_path=str(config), return_state=True)
        assert state.is_completed(), state.message
        assert state.result().promoted

        out = tmp_path / "scored.csv"
        res = CliRunner().invoke(app, ["score", "--config", str(config), "--data", str(src), "--out", str(out),
                                       "--no-prediction-log", "--json"])
        assert res.exit_code == 0, res.output
        run = json.loads(res.stdout)
        assert run["rows_read"] == 2500 and run["rows_flagged"] == 0, run["quarantine_reasons"]
        scored = pd.read_csv(out)
        assert len(scored) == 2500 and scored["contract_violation"].isna().all()
