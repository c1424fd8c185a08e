"""`mlops status --history` reads like a report: times to the second, long reasons cut between words (issue 21)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mlops.cli import common
from mlops.cli.main import app
from mlops.registry import versions as registry

LONG = ("drift monitor: drift share 0.61 >= 0.3 in 2 consecutive windows; live roc_auc 0.71 below the champion's "
        "0.78 by more than the retrain cost")


def fake_status(name: str) -> dict[str, Any]:
    version = {"version": "2", "metrics": {"roc_auc": 0.8}, "trained_at": "2026-06-01T13:45:07.123000+00:00",
               "promoted_at": "2026-06-01T13:46:00.987654321+00:00"}
    return {
        "versions": 2, "champion": version, "previous": None, "outside_moves": [],
        "recent_versions": [{"version": "2", "trained_at": "2026-06-01T13:45:07.123000+00:00",
                             "family": "hist_gradient_boosting", "gate_passed": "false", "aliases": [],
                             "failures": ["threshold roc_auc: 0.6427 misses >= 0.65 because the holdout of "
                                          "the newest rows is harder than the cross-validation folds suggested "
                                          "for this family, and the slice region=south misses it by more"]}],
        "history": [{"at": "2026-06-01T13:46:00.987654321+00:00", "alias": "champion", "from_version": "1",
                     "to_version": "2", "by": "train", "reason": LONG}],
    }


def test_history_prints_readable_times_and_whole_words(config_path: Path, state_dir: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(common, "use_running_stack", lambda: None)
    monkeypatch.setattr(registry, "status", fake_status)
    res = CliRunner().invoke(app, ["status", "--config", str(config_path), "--history"])
    assert res.exit_code == 0, res.output
    out = res.output
    assert "2026-06-01 13:46:00 UTC  champion: v1 -> v2" in out and "987654321" not in out
    assert "trained 2026-06-01 13:45:07 UTC  promoted 2026-06-01 13:46:00 UTC" in out
    move = next(line for line in out.splitlines() if "champion: v1 -> v2" in line)
    reason = move.split("(", 1)[1].rsplit(")", 1)[0]
    assert reason.endswith(" ...") and LONG.startswith(reason.removesuffix(" ..."))
    assert LONG[len(reason.removesuffix(" ...")):].startswith(" ")  # cut between words
    failure = next(line for line in out.splitlines() if "threshold roc_auc" in line).split("- ", 1)[1]
    assert failure.endswith(" ...") and len(failure) <= 154 and failure.removesuffix(" ...").endswith("suggested for this family")


def test_clip_and_when() -> None:
    assert common.clip("short reason", 80) == "short reason"
    assert common.clip("one two three four", 9) == "one two ..."
    assert common.clip("x" * 20, 5) == "xxxxx ..."
    assert common.when("2026-06-01T13:46:00.987654321+00:00") == "2026-06-01 13:46:00 UTC"
    assert common.when(None) == "?"
