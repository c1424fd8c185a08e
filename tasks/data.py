"""Data stage: load the configured source and split it reproducibly."""

from __future__ import annotations

import pandas as pd
from prefect import task
from prefect.cache_policies import NONE

from mlops.core import data
from mlops.core.config import FileSource, PipelineConfig


@task(name="load_data", cache_policy=NONE)
def load_data(cfg: PipelineConfig, source_path: str | None = None) -> data.LoadedData:
    """Load the source (or a file given at run time): the frame, its fingerprint, malformed rows set aside, the profile."""
    if source_path:
        cfg = cfg.model_copy(update={"source": FileSource(path=source_path)})
    return data.load_training_data(cfg)


@task(name="split_data", cache_policy=NONE)
def split_data(df: pd.DataFrame, cfg: PipelineConfig, new_rows: pd.DataFrame | None = None) -> data.Split:
    """Split reproducibly; `new_rows` (what a retraining file marked new, see mlops.core.rowkeys.pop_new_rows)
    are the only rows a retrain holds out."""
    from prefect import get_run_logger

    from mlops.core.rowkeys import new_row_mask

    mask = None if new_rows is None else new_row_mask(df, new_rows, cfg.id_column)
    split = data.split_frame(df, cfg.target, cfg.task, cfg.split, cfg.timestamp_column, mask)
    get_run_logger().info("Split: %d rows train, %d held out; %s", len(split.train), len(split.test), split.holdout)
    return split
