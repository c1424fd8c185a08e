"""Validation stage: the data contract (inferred or the champion's) checked with Great Expectations."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from prefect import get_run_logger

from mlops.core.config import PipelineConfig
from mlops.core.contract import DataContract, infer_contract, merge_expectations
from mlops.core.data import LoadedData
from mlops.core.profile import DataProfile
from mlops.core.validation import (
    ValidationOutcome,
    add_malformed,
    enforce_quarantine_limit,
    validate_batch,
    write_quarantine,
)
from tasks.common import stage_task


class CheckedData(NamedTuple):
    """What validation hands on: the outcome (accepted and quarantined rows), the contract the data was
    checked against, the quarantine file (None when no row was set aside) and the profile."""

    outcome: ValidationOutcome
    contract: DataContract
    quarantine_file: Path | None
    profile: DataProfile


@stage_task("validate_batch")
def validate_training_data(loaded: LoadedData, cfg: PipelineConfig, contract: DataContract | None,
                           quarantine_dir: Path) -> CheckedData:
    """Check the batch against the contract; quarantine bad and malformed rows; stop on structural failures
    or too many bad rows.

    With no contract yet (first training), the contract is inferred from this data following the
    profile's decisions; with the champion's contract, the profile is brought in line with it. The
    user's expectations from config always apply.
    """
    logger = get_run_logger()
    df, profile = loaded.frame, loaded.profile
    if contract is None:
        contract = infer_contract(df, cfg.target, cfg.task, cfg.validation, cfg.id_column, cfg.timestamp_column,
                                  cfg.columns, profile)
        logger.info("Inferred a data contract from this data (%d columns)", len(contract.columns))
    else:
        contract = merge_expectations(contract, cfg.validation.expectations)
        profile = profile.follow_contract({c.name: (c.role, c.kind) for c in contract.columns},
                                          "the champion's data contract")
    for line in profile.summary_lines():
        logger.info("%s", line)
    outcome = add_malformed(validate_batch(df, contract), loaded.malformed)
    path = write_quarantine(outcome, quarantine_dir)
    logger.info("Validated %d rows: %d accepted, %d quarantined", outcome.checked, len(outcome.good),
                len(outcome.quarantined))
    enforce_quarantine_limit(outcome, cfg.validation.max_quarantine_fraction, path)
    return CheckedData(outcome, contract, path, profile)
