"""What a training writes to MLflow besides the model: the signature declares integer inputs as doubles (no
schema-inference warning, and a missing value at scoring time fits the schema)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from mlops.registry.tracking import integers_as_floats, model_signature


def _frame() -> pd.DataFrame:
    return pd.DataFrame({"age": np.array([30, 41, 52], dtype="int64"), "visits": pd.array([1, None, 3], dtype="Int64"),
                         "charges": [1.5, 2.0, 3.25], "region": ["n", "s", "n"], "flag": [True, False, True]})


def test_integer_columns_become_float64_and_the_rest_stays() -> None:
    frame = _frame()
    out = integers_as_floats(frame)
    assert out["age"].dtype == "float64" and out["visits"].dtype == "float64" and np.isnan(out["visits"][1])
    assert out["charges"].dtype == "float64" and out["region"].dtype == frame["region"].dtype
    assert out["flag"].dtype == bool
    assert frame["age"].dtype == "int64"  # the caller's frame is left alone


def test_the_signature_declares_integer_inputs_as_doubles_without_a_warning() -> None:
    frame = _frame()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # MLflow's integer-column hint would raise here
        signature = model_signature(frame, np.array([0, 1, 0]), optional_columns=["visits"])
    types = {c.name: c.type.name for c in signature.inputs.inputs}
    assert types["age"] == "double" and types["visits"] == "double" and types["region"] == "string"
    assert not next(c for c in signature.inputs.inputs if c.name == "visits").required
