"""Data stage: load the configured source (or a file given at run time) and split it reproducibly."""

from __future__ import annotations

import dataclasses

import pandas as pd
from prefect import get_run_logger

from mlops.core import data
from mlops.core.config import PipelineConfig
from mlops.core.rowkeys import new_row_mask, pop_new_rows
from mlops.core.settings import get_settings
from tasks.common import stage_task


@stage_task("load_data")
def load_data(cfg: PipelineConfig, source_path: str | None = None) -> tuple[data.LoadedData, pd.DataFrame | None]:
    """Load the source (or a file given at run time): the frame, its fingerprint, malformed rows set aside,
    the profile; and the rows a retraining file marks new (None when it marks none), the marker removed.

    A file given at run time must lie inside the data roots (mlops.core.data_roots) and within the size
    cap; an empty `source_path` is refused rather than read as "the config's own source"."""
    roots = data.data_roots(cfg, get_settings())
    if source_path is not None:
        cfg = data.with_source_path(cfg, source_path)
    loaded = data.load_training_data(cfg, roots)
    frame, new_rows = pop_new_rows(loaded.frame)
    return dataclasses.replace(loaded, frame=frame), new_rows


@stage_task("split_data")
def split_data(df: pd.DataFrame, cfg: PipelineConfig, new_rows: pd.DataFrame | None = None) -> data.Split:
    """Split reproducibly; `new_rows` (what a retraining file marked new, see mlops.core.rowkeys.pop_new_rows)
    are the only rows a retrain holds out."""
    mask = None if new_rows is None else new_row_mask(df, new_rows, cfg.id_column)
    split = data.split_frame(df, cfg.target, cfg.task, cfg.split, cfg.timestamp_column, mask)
    get_run_logger().info("Split: %d rows train, %d held out; %s", len(split.train), len(split.test), split.holdout)
    return split
