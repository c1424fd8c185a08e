"""One reader for tabular files: training, scoring (local and Dask partitions), monitoring and labels read a
messy file the same way, so scoring the file a model trained on flags no row."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mlops.core.config import PipelineConfig, parse_config
from mlops.core.data import load_training_data, read_source
from mlops.core.tabular import ReadOptions, read_header, read_options
from mlops.core.validation import validate_training_batch
from mlops.monitoring import live_quality, retraining, windows
from mlops.serving.dask_scoring import plan_partitions, read_partition
from mlops.serving.scoring import iter_chunks, score_file
from tests.conftest import small_config
from tests.support.tabular import messy_csv


def file_config(path: Path, **overrides: Any) -> PipelineConfig:
    raw = small_config(source={"kind": "file", "path": str(path), **overrides.pop("source", {})}, **overrides)
    return parse_config(raw)


def _same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    """Equal values and equal missing cells, column by column (dtypes of all-number columns may differ in width)."""
    assert list(a.columns) == list(b.columns)
    assert len(a) == len(b)
    for c in a.columns:
        x, y = a[c].reset_index(drop=True), b[c].reset_index(drop=True)
        assert (x.isna().to_numpy() == y.isna().to_numpy()).all(), c
        if pd.api.types.is_numeric_dtype(x):
            assert pd.api.types.is_numeric_dtype(y), c
            assert np.allclose(x.dropna().astype(float), y.dropna().astype(float)), c
        else:
            assert x.dropna().astype(str).tolist() == y.dropna().astype(str).tolist(), c


def test_every_entry_point_reads_a_messy_file_as_training_does(tmp_path: Path) -> None:
    src = messy_csv(tmp_path / "train.csv", delimiter=";")
    cfg = file_config(src, source={"delimiter": ";"}, na_values=["?", "NA", "N/A", "null"])
    read = read_options(cfg)
    assert read == ReadOptions(";", ("?", "NA", "N/A", "null"))
    trained = read_source(cfg).frame
    for col in ["age", "total_charges", "usage_gb"]:
        assert pd.api.types.is_float_dtype(trained[col]), col  # the markers were read as missing

    scored = pd.concat([c for _, c in iter_chunks(src, 400, read)], ignore_index=True)
    parts = plan_partitions(src, 400, read)
    assert len(parts) > 1
    on_workers = pd.concat([f for p in parts for f in read_partition(p, 400)], ignore_index=True)
    current = windows.read_current(src, read).frame
    labels = live_quality.read_labels(src, read)
    original = retraining.load_original(cfg, str(src))
    assert original is not None
    for frame in (scored, on_workers, current, labels, original):
        _same(trained, frame)

    parquet = tmp_path / "train.parquet"
    pd.read_csv(src, sep=";", dtype=str, keep_default_na=False).to_parquet(parquet)  # markers kept as text
    trained_parquet = read_source(file_config(parquet, na_values=list(read.na_values))).frame
    assert trained_parquet["age"].isna().sum() == trained["age"].isna().sum() > 0
    _same(trained_parquet, pd.concat([c for _, c in iter_chunks(parquet, 400, read)], ignore_index=True))
    pq_parts = plan_partitions(parquet, 400, read)
    _same(trained_parquet, pd.concat([f for p in pq_parts for f in read_partition(p, 400)], ignore_index=True))
    assert read_header(src, read) == list(trained.columns) == read_header(parquet, read)


def test_scoring_the_training_file_flags_no_row(tmp_path: Path) -> None:
    """Train on a messy CSV the way the training flow reads and checks it, score the same file: 0 flagged."""
    from sklearn.pipeline import Pipeline

    from mlops.core.features import build_preprocessor
    from mlops.training.tuning import make_estimator

    src = messy_csv(tmp_path / "census.csv", rows=2000)
    cfg = file_config(src)
    loaded = load_training_data(cfg)
    batch = validate_training_batch(loaded.frame, None, cfg, loaded.profile)
    contract, good = batch.contract, batch.outcome.good
    X, y = good.drop(columns=[cfg.target]), good[cfg.target]
    pipe = Pipeline([("features", build_preprocessor(contract, cfg.features)),
                     ("model", make_estimator("hist_gradient_boosting", "classification", {"max_iter": 20}, 0))])
    pipe.fit(X, y)

    run = score_file(pipe, contract, "m", "1", "r", src, tmp_path / "out", "score-1", chunk_rows=700,
                     flag_violations=True, read=read_options(cfg))
    assert run.rows_read == 2000 and run.chunks == 3
    assert run.rows_flagged == len(batch.outcome.quarantined) == 0, run.quarantine_reasons

    # what scoring read before it shared the reader: '?' and blanks stayed text and broke the contract
    legacy = pd.read_csv(src)
    assert not pd.api.types.is_numeric_dtype(legacy["age"]) and (legacy["region"].astype(str).str.strip() == "?").any()


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_header_is_read_without_the_rows(tmp_path: Path, kind: str) -> None:
    df = pd.DataFrame({"a": [1, 2], "b b": ["x", "?"]})
    path = tmp_path / f"f.{kind}"
    df.to_csv(path, index=False) if kind == "csv" else df.to_parquet(path)
    assert read_header(path, ReadOptions()) == ["a", "b b"]


@pytest.mark.slow
def test_a_model_trained_on_the_messy_file_reproduces_itself_when_served(tmp_path: Path) -> None:
    """Text columns read from CSV (pandas' str dtype) with missing values reach the pipeline as training fed
    them, so the server's self-check (300 reference rows, the column checker) reproduces the probabilities."""
    from sklearn.pipeline import Pipeline

    from mlops.core.features import build_preprocessor
    from mlops.serving.model import build_served_model
    from mlops.training.tuning import make_estimator

    cfg = file_config(messy_csv(tmp_path / "c.csv", rows=2500, seed=8))
    loaded = load_training_data(cfg)
    batch = validate_training_batch(loaded.frame, None, cfg, loaded.profile)
    good = batch.outcome.good
    assert isinstance(good["payment_method"].dtype, pd.StringDtype) and good["payment_method"].isna().any()
    X, y = good.drop(columns=[cfg.target]), good[cfg.target]
    pipe = Pipeline([("features", build_preprocessor(batch.contract, cfg.features)),
                     ("model", make_estimator("hist_gradient_boosting", "classification", {"max_iter": 30}, 0))])
    pipe.fit(X, y)
    ref = X.head(300).assign(prediction=pipe.predict(X.head(300)), prediction_proba=pipe.predict_proba(X.head(300))[:, 1])
    served = build_served_model("m", "1", "r", pipe, batch.contract, ref)  # raises LoadError when it does not
    assert served.validator is not None
