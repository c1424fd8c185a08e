"""Trusted skops types come from what the fitted pipeline holds and must be on the allow-list; the
signature marks the id column optional."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.pipeline import Pipeline

from mlops.core.errors import RegistryError
from mlops.registry.trusted_types import check_types, is_allowed, load_sklearn_model, trusted_types


class Doubler(BaseEstimator, TransformerMixin):
    """A transformer from outside the project's packages: skops must not be told to trust it."""

    def fit(self, X: Any, y: Any = None) -> Doubler:
        return self

    def transform(self, X: Any) -> Any:
        return np.asarray(X, dtype=float) * 2


def _frame(rows: int = 120, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({
        "customer_id": np.arange(1000, 1000 + rows),
        "tenure": rng.integers(0, 60, rows).astype(float),
        "charges": rng.normal(60, 20, rows).round(2),
        "plan": rng.choice(["basic", "plus", "pro"], rows),
        "signup": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 300, rows), unit="D"),
    })
    df.loc[rng.random(rows) < 0.1, "charges"] = np.nan
    df.loc[rng.random(rows) < 0.05, "plan"] = None
    df["churned"] = np.where(df["tenure"] + rng.normal(0, 10, rows) < 20, "yes", "no")
    return df


def _fit(family: str, params: dict[str, Any] | None = None) -> tuple[Any, Any, pd.DataFrame]:
    from tests.support.model_server import fit_pipeline

    return fit_pipeline(_frame(), "churned", "classification", family, params, id_column="customer_id",
                        timestamp_column="signup")


def test_allow_list_is_explicit_names_and_scoped_modules() -> None:
    for name in ("mlops.core.features.DateParts", "numpy.dtype", "sklearn.tree._tree.Tree",
                 "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor", "sklearn._loss.loss.HalfBinomialLoss"):
        assert is_allowed(name), name
    for name in ("builtins.eval", "os.system", "sklearn.tree._treeX.Tree", "mlops.core.features.Other", "numpy.load",
                 "tests.unit.test_trusted_types.Doubler", "sklearn.tree.Tree"):
        assert not is_allowed(name), name


def test_types_follow_the_family() -> None:
    rf = trusted_types(_fit("random_forest", {"n_estimators": 3})[0])
    hgb = trusted_types(_fit("hist_gradient_boosting", {"max_iter": 5})[0])
    lr = trusted_types(_fit("logistic_regression")[0])
    assert "sklearn.tree._tree.Tree" in rf and "mlops.core.features.DateParts" in rf
    assert "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor" in hgb
    assert "sklearn.tree._tree.Tree" not in lr and not any("hist_gradient" in t for t in lr)
    assert rf == sorted(set(rf))


def test_a_type_outside_the_allow_list_is_one_clear_sentence() -> None:
    X = np.arange(12.0).reshape(6, 2)
    pipe = Pipeline([("double", Doubler())]).fit(X)
    with pytest.raises(RegistryError) as err:
        trusted_types(pipe)
    message = str(err.value)
    assert "tests.unit.test_trusted_types.Doubler" in message and "ALLOWED_TYPES" in message
    assert message.count(". ") == 0 and "\n" not in message
    with pytest.raises(RegistryError, match="builtins.eval"):
        check_types(["numpy.dtype", "builtins.eval"], "the test model")


def _register(family: str, params: dict[str, Any] | None = None, optional: tuple[str, ...] = ()) -> tuple[Any, str]:
    import mlflow

    from mlops.registry.tracking import log_model_version

    pipe, _, frame = _fit(family, params)
    X = frame.drop(columns=["churned"])
    mlflow.set_experiment("trusted-types")
    with mlflow.start_run() as run:
        run_id = run.info.run_id
    return pipe, log_model_version(run_id, pipe, "tt", X.head(20), pipe.predict(X.head(20)), optional_columns=optional)


def test_random_forest_registers_with_derived_types_and_loads(state_dir: Path) -> None:
    import mlflow
    import mlflow.sklearn
    from mlflow.models import Model

    pipe, version = _register("random_forest", {"n_estimators": 3})
    uri = f"models:/tt/{version}"
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    declared = Model.load(str(local / "MLmodel")).flavors["sklearn"]["skops_trusted_types"]
    assert declared == trusted_types(pipe) and "sklearn.tree._tree.Tree" in declared
    X = _frame(40, seed=5).drop(columns=["churned"])
    for loaded in (mlflow.sklearn.load_model(uri), load_sklearn_model(uri)):
        assert np.array_equal(loaded.predict_proba(X), pipe.predict_proba(X))


def test_refused_types_stop_registration_before_anything_is_logged(state_dir: Path) -> None:
    import mlflow
    from mlflow import MlflowClient

    from mlops.registry.tracking import log_model_version

    X = pd.DataFrame({"a": np.arange(6.0), "b": np.arange(6.0)})
    pipe = Pipeline([("double", Doubler())]).fit(X)
    mlflow.set_experiment("trusted-types")
    with mlflow.start_run() as run:
        run_id = run.info.run_id
    with pytest.raises(RegistryError, match="Doubler"):
        log_model_version(run_id, pipe, "tt-refused", X, X.to_numpy())
    assert MlflowClient().search_model_versions("name='tt-refused'") == []


def test_load_refuses_a_model_declaring_or_holding_other_types(tmp_path: Path) -> None:
    import mlflow.sklearn

    pipe = _fit("random_forest", {"n_estimators": 2})[0]
    widened = tmp_path / "widened"
    mlflow.sklearn.save_model(pipe, str(widened), serialization_format="skops", pip_requirements=[],
                              skops_trusted_types=[*trusted_types(pipe), "builtins.eval"])
    with pytest.raises(RegistryError, match="MLmodel file .*builtins.eval"):
        load_sklearn_model(str(widened))
    narrowed = tmp_path / "narrowed"  # the file holds a Tree the MLmodel file does not declare
    mlflow.sklearn.save_model(pipe, str(narrowed), serialization_format="skops", pip_requirements=[],
                              skops_trusted_types=trusted_types(pipe))
    text = (narrowed / "MLmodel").read_text().replace("  - sklearn.tree._tree.Tree\n", "")
    (narrowed / "MLmodel").write_text(text)
    with pytest.raises(RegistryError, match="does not declare .*sklearn.tree._tree.Tree"):
        load_sklearn_model(str(narrowed))


def test_signature_marks_the_id_column_optional(state_dir: Path) -> None:
    import mlflow.pyfunc
    from mlflow.models import get_model_info

    pipe, version = _register("logistic_regression", optional=("customer_id",))
    uri = f"models:/tt/{version}"
    inputs = {c.name: c.required for c in get_model_info(uri).signature.inputs.inputs}
    assert inputs == {"customer_id": False, "tenure": True, "charges": True, "plan": True, "signup": True}
    X = _frame(30, seed=7).drop(columns=["churned"])
    served = mlflow.pyfunc.load_model(uri)
    assert list(served.predict(X.drop(columns=["customer_id"]))) == list(pipe.predict(X))
    with pytest.raises(Exception, match="charges"):  # a needed column stays required
        served.predict(X.drop(columns=["charges"]))


def test_signature_without_optional_columns_requires_every_column(state_dir: Path) -> None:
    from mlflow.models import get_model_info

    _, version = _register("logistic_regression")
    assert all(c.required for c in get_model_info(f"models:/tt/{version}").signature.inputs.inputs)


def test_optional_column_must_be_an_input_column() -> None:
    from mlops.registry.tracking import model_signature

    X = pd.DataFrame({"a": [1.0, 2.0]})
    with pytest.raises(ValueError, match="customer_id"):
        model_signature(X, np.array([0, 1]), ["customer_id"])
