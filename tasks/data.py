"""Data stage: load the configured source and split it reproducibly."""

from __future__ import annotations

import pandas as pd
from prefect import task
from prefect.cache_policies import NONE

from mlops import data
from mlops.config import FileSource, PipelineConfig


@task(name="load_data", cache_policy=NONE)
def load_data(cfg: PipelineConfig, source_path: str | None = None) -> tuple[pd.DataFrame, str]:
    """Load the source (or a file given at run time) and fingerprint it."""
    if source_path:
        cfg = cfg.model_copy(update={"source": FileSource(path=source_path)})
    df = data.load_source(cfg)
    return df, data.fingerprint(df)


@task(name="split_data", cache_policy=NONE)
def split_data(df: pd.DataFrame, cfg: PipelineConfig) -> data.Split:
    return data.split_frame(df, cfg.target, cfg.task, cfg.split, cfg.timestamp_column)
