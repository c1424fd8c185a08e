"""Validation stage: the data contract (inferred or the champion's) checked with Great Expectations."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NONE

from mlops.core.config import PipelineConfig
from mlops.core.contract import DataContract, infer_contract, merge_expectations
from mlops.core.data import MalformedRow
from mlops.core.profile import DataProfile, profile_frame
from mlops.core.validation import (
    ValidationOutcome,
    add_malformed,
    enforce_quarantine_limit,
    validate_batch,
    write_quarantine,
)


@task(name="validate_batch", cache_policy=NONE)
def validate_training_data(
    df: pd.DataFrame,
    cfg: PipelineConfig,
    contract: DataContract | None,
    quarantine_dir: Path,
    malformed: Sequence[MalformedRow] = (),
    profile: DataProfile | None = None,
) -> tuple[ValidationOutcome, DataContract, Path | None, DataProfile]:
    """Check the batch against the contract; quarantine bad and malformed rows; stop on structural failures
    or too many bad rows.

    With no contract yet (first training), the contract is inferred from this data following the
    profile's decisions; with the champion's contract, the profile is brought in line with it. The
    user's expectations from config always apply.
    """
    logger = get_run_logger()
    if profile is None:
        profile = profile_frame(df, cfg.target, cfg.task, cfg.validation.max_categories, cfg.id_column,
                                cfg.timestamp_column, cfg.columns, malformed=[m.detail for m in malformed])
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
    outcome = add_malformed(validate_batch(df, contract), malformed)
    path = write_quarantine(outcome, quarantine_dir)
    logger.info("Validated %d rows: %d accepted, %d quarantined", outcome.checked, len(outcome.good),
                len(outcome.quarantined))
    enforce_quarantine_limit(outcome, cfg.validation.max_quarantine_fraction, path)
    return outcome, contract, path, profile
