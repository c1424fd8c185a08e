"""Evaluation and gate stages: holdout metrics and plots; the verdict (thresholds, champion, slices,
leakage); and the files the version's run keeps (reference sample, row hashes, summaries)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from mlops.core.config import PipelineConfig
from mlops.core.contract import DataContract
from mlops.core.data import Split
from mlops.core.rowkeys import save_training_hashes
from mlops.monitoring.live_quality import holdout_slice_metrics
from mlops.registry.tracking import dumps
from mlops.registry.versions import ModelBundle, training_row_hashes
from mlops.training.assessment import Evaluation, evaluate, judge, reference_sample
from mlops.training.gate import GateVerdict
from mlops.training.window import WindowChoice
from tasks.common import stage_task
from tasks.validation import CheckedData


@dataclass
class RunArtifacts:
    """Files for the version's run (by artifact folder) and generated texts (by relative path)."""

    files: list[tuple[str, Path]] = field(default_factory=list)
    texts: dict[str, str] = field(default_factory=dict)


@stage_task("evaluate_challenger")
def evaluate_challenger(model: Any, test: pd.DataFrame, cfg: PipelineConfig, plots_dir: Path) -> Evaluation:
    """Holdout metrics (binary ones for the configured positive class) and the plots."""
    return evaluate(model, test, cfg, plots_dir)


@stage_task("gate_challenger")
def gate_challenger(evaluation: Evaluation, champion: ModelBundle | None, split: Split, cfg: PipelineConfig,
                    model: Any, contract: DataContract) -> GateVerdict:
    """The gate verdict against the champion (if any) on the holdout rows it never trained on; the training
    rows and the contract let the leakage check name the columns to look at."""
    seen = training_row_hashes(champion.run_id) if champion else None
    return judge(evaluation, champion.model if champion else None, champion.version if champion else None,
                 split.test, cfg, model=model, train=split.train, contract=contract, champion_rows=seen)


@stage_task("collect_artifacts")
def collect_artifacts(evaluation: Evaluation, model: Any, split: Split, cfg: PipelineConfig, contract: DataContract,
                      leaderboard: list[dict[str, Any]], checked: CheckedData, work: Path,
                      window: WindowChoice | None = None) -> RunArtifacts:
    """Plots, the reference sample for drift (rows with the served `model`'s predictions), the hashes of the rows
    it trained on (with the holdout when refitted), quarantined rows, and the metric, leaderboard, slice,
    validation and profile summaries, and how the training window was chosen."""
    work.mkdir(parents=True, exist_ok=True)
    ref_path = work / "reference.parquet"
    trained_on = pd.concat([split.train, split.test], ignore_index=True) if cfg.refit else split.train
    reference_sample(trained_on, model, cfg).to_parquet(ref_path, index=False)
    files = [("evaluation", p) for p in evaluation.plots.values()] + [("reference", ref_path)]
    files.append(("reference", save_training_hashes(trained_on, contract, cfg.serving.sensitive_columns,
                                                    work / "train_row_hashes.npz")))
    if checked.quarantine_file:
        files.append(("quarantine", checked.quarantine_file))
    texts = {
        "evaluation/holdout_metrics.json": dumps(evaluation.metrics),
        "evaluation/leaderboard.json": dumps(leaderboard),
        "evaluation/slice_metrics.json": dumps(holdout_slice_metrics(split.test, evaluation.predictions, cfg)),
        "data/validation_summary.json": dumps(checked.outcome.summary()),
        "data/profile.json": dumps(checked.profile.to_dict()),
        "data/profile.md": checked.profile.to_markdown(),
    }
    if window is not None:
        texts["evaluation/training_window.json"] = dumps(window.to_dict())
        texts["evaluation/training_window.md"] = window.to_markdown()
    return RunArtifacts(files, texts)
