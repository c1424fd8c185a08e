"""Which types a logged pipeline asks skops to trust, derived from the fitted pipeline itself and
checked against the project's explicit allow-list (never "trust everything").

skops refuses to load any type outside its own defaults unless the loader names it. The names a
pipeline needs depend on the winning family (random forests hold `sklearn.tree._tree.Tree`,
HistGradientBoosting its `TreePredictor`, every pipeline with dates `mlops.core.features.DateParts`),
so they are read from the skops dump of the fitted model, and each one must be on the list below.
The same check guards loading: `load_sklearn_model` refuses an artifact whose declared or actual
types leave the list, even though MLflow would trust whatever the artifact's MLmodel file names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlops.core.errors import RegistryError

# Types outside skops' defaults that the project's pipelines are allowed to contain, by exact name.
ALLOWED_TYPES: frozenset[str] = frozenset({
    "mlops.core.features.DateParts",
    "numpy.dtype",
    "sklearn.tree._tree.Tree",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
})

# Tightly scoped module prefixes (a trailing dot: whole modules of compiled internals, nothing above).
ALLOWED_PREFIXES: tuple[str, ...] = (
    "numpy.dtypes.",  # numpy 2 dtype classes (Float64DType, ...)
    "sklearn.tree._tree.",  # the Cython tree structures random forests hold
    "sklearn.ensemble._hist_gradient_boosting.",  # HistGradientBoosting's predictors, binners, splitters
    "sklearn._loss.",  # the loss and link objects gradient boosting keeps after fit
)


def is_allowed(type_name: str) -> bool:
    """True when `type_name` (module.qualname) is on the explicit list or under an allowed module."""
    return type_name in ALLOWED_TYPES or any(type_name.startswith(p) for p in ALLOWED_PREFIXES)


def check_types(type_names: list[str], what: str) -> list[str]:
    """The names, sorted and deduplicated, if all are allowed; else RegistryError naming the others."""
    names = sorted(set(type_names))
    refused = [n for n in names if not is_allowed(n)]
    if refused:
        raise RegistryError(
            f"{what} contains types the project does not trust for loading ({', '.join(refused)}); "
            "add them to mlops/registry/trusted_types.py ALLOWED_TYPES only if they are safe to load")
    return names


def trusted_types(model: Any) -> list[str]:
    """The skops types `model` needs trusted beyond skops' defaults, each checked against the allow-list."""
    import skops.io

    found = skops.io.get_untrusted_types(data=skops.io.dumps(model))
    return check_types(found, f"the fitted {type(model).__name__}")


def load_sklearn_model(model_uri: str) -> Any:
    """Load an sklearn-flavour model logged with skops, trusting only allowed types.

    Checks both the types the artifact's MLmodel file declares and the types the skops file
    actually holds before anything is deserialized; pickle-format models are loaded as MLflow does.
    """
    import mlflow.artifacts
    import mlflow.sklearn
    from mlflow.environment_variables import MLFLOW_ALLOW_PICKLE_DESERIALIZATION
    from mlflow.models import Model

    if not MLFLOW_ALLOW_PICKLE_DESERIALIZATION.get():
        return mlflow.sklearn.load_model(model_uri)  # MLflow's own refusal, with its message

    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri))
    flavor = Model.load(str(local / "MLmodel")).flavors.get("sklearn")
    if flavor is None:
        raise RegistryError(f"{model_uri} is not an sklearn model (no sklearn flavour in its MLmodel file)")
    if flavor.get("serialization_format") != "skops":
        return mlflow.sklearn.load_model(str(local))
    import skops.io

    path = local / flavor["pickled_model"]
    declared = check_types(list(flavor.get("skops_trusted_types") or []), f"the MLmodel file of {model_uri}")
    actual = check_types(skops.io.get_untrusted_types(file=path), f"the model file of {model_uri}")
    undeclared = sorted(set(actual) - set(declared))
    if undeclared:
        raise RegistryError(f"the model file of {model_uri} holds types its MLmodel file does not declare "
                            f"({', '.join(undeclared)}); log the model again with mlops.registry.tracking.log_model_version")
    return skops.io.load(path, trusted=actual)
