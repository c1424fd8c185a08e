"""Validation stage: the batch checked with Great Expectations (structure and the user's rules), and the
data contract evolved from the rows kept."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from prefect import get_run_logger

from mlops.core.config import PipelineConfig
from mlops.core.contract import DataContract
from mlops.core.data import LoadedData
from mlops.core.profile import DataProfile
from mlops.core.validation import ValidationOutcome, validate_training_batch
from tasks.common import stage_task


class CheckedData(NamedTuple):
    """What validation hands on: the outcome (accepted and quarantined rows), this version's contract (its
    `changes` hold the diff from the champion's), the quarantine file (None when no row was set aside)
    and the profile."""

    outcome: ValidationOutcome
    contract: DataContract
    quarantine_file: Path | None
    profile: DataProfile


@stage_task("validate_training_data")
def validate_training_data(loaded: LoadedData, cfg: PipelineConfig, contract: DataContract | None,
                           quarantine_dir: Path) -> CheckedData:
    """Check the batch; quarantine rows that break structure or the user's rules, and malformed rows; stop on
    structural failures or too many bad rows; infer this version's contract from the rows kept. Rows without
    a label are left out first and counted (`outcome.unlabelled`), not quarantined.

    `contract` is the champion's (None before the first training): its columns and null budgets hold,
    but a value outside its observed range or categories is kept (the data moved, as it does between
    seasons) and counted. The new contract keeps the champion's structure where the data agrees, takes
    ranges and categories from the kept rows and the config's rules; its `changes` say what moved.
    """
    logger = get_run_logger()
    profile = loaded.profile
    batch = validate_training_batch(loaded.frame, contract, cfg, profile, loaded.malformed, quarantine_dir)
    outcome = batch.outcome
    if outcome.unlabelled:
        logger.info("Left out %d row(s) without a label (blank target '%s'): not checked, not quarantined",
                    outcome.unlabelled, cfg.target)
    logger.info("Validated %d rows: %d accepted, %d quarantined", outcome.checked, len(outcome.good),
                len(outcome.quarantined))
    if outcome.outside_observed:
        logger.info("Kept %d row(s) outside the champion's observed ranges or categories (%s)",
                    outcome.rows_outside_observed, ", ".join(f"{c} {n}" for c, n in outcome.outside_observed.items()))
    if batch.contract.changes is not None:
        logger.info("Data contract: %s", batch.contract.changes.summary())
    if contract is not None:
        profile = profile.follow_contract({c.name: (c.role, c.kind) for c in batch.contract.columns},
                                          "the champion's data contract")
    for line in profile.summary_lines():
        logger.info("%s", line)
    return CheckedData(outcome, batch.contract, batch.quarantine_file, profile)
