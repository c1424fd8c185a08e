"""The pipeline config: one YAML per use case, validated once at the boundary.

A bad config fails before any work starts, naming the file, the field and the reason.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, PrivateAttr, ValidationError, field_validator, model_validator

from mlops.core.errors import ConfigError
from mlops.core.sources import (  # noqa: F401 - the sources are part of the config schema, named here too
    DEFAULT_MAX_DATA_BYTES,
    DEMAND_FREQS,
    DataSource,
    FileSource,
    GeneratedSource,
    SklearnSource,
    _Strict,
)

TaskKind = Literal["classification", "regression"]
Family = Literal[
    "logistic_regression",
    "linear_regression",
    "ridge",
    "random_forest",
    "hist_gradient_boosting",
]
CLASSIFICATION_FAMILIES = {"logistic_regression", "random_forest", "hist_gradient_boosting"}
REGRESSION_FAMILIES = {"linear_regression", "ridge", "random_forest", "hist_gradient_boosting"}

# metric name -> True when larger is better
METRIC_DIRECTION: dict[str, bool] = {
    "roc_auc": True,
    "f1": True,
    "accuracy": True,
    "log_loss": False,
    "rmse": False,
    "mae": False,
    "r2": True,
}
CLASSIFICATION_METRICS = {"roc_auc", "f1", "accuracy", "log_loss"}
REGRESSION_METRICS = {"rmse", "mae", "r2"}


class SplitConfig(_Strict):
    test_size: float = Field(0.2, gt=0.0, lt=0.9)
    seed: int = 42
    stratify: bool = True
    refit: bool | None = Field(
        None, description="after the gate, fit the chosen configuration again on train + holdout and register that "
        "model, so the model that ships has learned from every labelled row (default: on; false registers the "
        "model the gate judged)"
    )


class UserExpectation(_Strict):
    """An expectation the user writes; merged into the inferred data contract."""

    type: Literal["between", "in_set", "not_null", "unique", "regex"]
    column: str
    min: float | None = None
    max: float | None = None
    values: list[Any] | None = None
    pattern: str | None = None

    @model_validator(mode="after")
    def _needs_arguments(self) -> UserExpectation:
        if self.type == "between" and self.min is None and self.max is None:
            raise ValueError("'between' needs min or max")
        if self.type == "in_set" and not self.values:
            raise ValueError("'in_set' needs a non-empty values list")
        if self.type == "regex" and not self.pattern:
            raise ValueError("'regex' needs a pattern")
        return self


DEFAULT_MAX_COLUMNS = 2000  # wider data is refused from its header: validation and training time grow with columns


class ValidationConfig(_Strict):
    max_quarantine_fraction: float = Field(0.05, ge=0.0, le=1.0)
    range_margin: float = Field(0.25, ge=0.0, description="fraction of the observed span added to each side")
    null_margin: float = Field(0.05, ge=0.0, le=1.0, description="allowed null fraction above the observed one")
    max_categories: int = Field(50, ge=1, description="a text column with more distinct values is not a category")
    max_columns: int = Field(DEFAULT_MAX_COLUMNS, ge=1, description=(
        "a data file with more columns is refused from its header, before its rows are read"))
    expectations: list[UserExpectation] = Field(default_factory=list)


class FeatureConfig(_Strict):
    numeric_impute: Literal["median", "mean"] = "median"
    scale: bool = True
    categorical_impute: Literal["most_frequent", "constant"] = "constant"
    max_one_hot: int = Field(30, ge=2)
    date_parts: list[Literal["year", "year_month", "decimal_year", "month", "day", "dayofweek", "hour"]] = Field(
        default_factory=lambda: ["month", "dayofweek", "hour"]
    )


class Param(_Strict):
    """One hyperparameter's search space (mlops.training.spaces documents the default spaces)."""

    type: Literal["int", "uniform", "loguniform", "choice"]
    low: float | None = None
    high: float | None = None
    values: list[Any] | None = None
    log: bool = Field(False, description="int: sample on a log scale (for counts spanning decades, such as leaves)")

    @model_validator(mode="after")
    def _bounds(self) -> Param:
        if self.type == "choice":
            if not self.values:
                raise ValueError("'choice' needs a non-empty values list")
        else:
            if self.low is None or self.high is None:
                raise ValueError(f"'{self.type}' needs low and high")
            if self.low >= self.high:
                raise ValueError(f"low ({self.low:g}) must be below high ({self.high:g})")
            if self.type == "loguniform" and self.low <= 0:
                raise ValueError("'loguniform' needs low > 0")
            if self.type == "int" and self.log and self.low < 1:
                raise ValueError("a log-scale 'int' needs low >= 1")
        if self.log and self.type != "int":
            raise ValueError("log applies to 'int' only ('loguniform' is the log scale for real numbers)")
        return self

    def candidates(self) -> list[Any]:
        """Values to check against the estimator's own rules: the choices, or the two bounds."""
        if self.type == "choice":
            return list(self.values or [])
        assert self.low is not None and self.high is not None
        return [int(self.low), int(self.high)] if self.type == "int" else [self.low, self.high]


# the scikit-learn estimators of each family (mlops.training.tuning.make_estimator builds them)
FAMILY_ESTIMATORS: dict[str, tuple[str, ...]] = {
    "logistic_regression": ("sklearn.linear_model.LogisticRegression",),
    "linear_regression": ("sklearn.linear_model.LinearRegression",),
    "ridge": ("sklearn.linear_model.Ridge",),
    "random_forest": ("sklearn.ensemble.RandomForestClassifier", "sklearn.ensemble.RandomForestRegressor"),
    "hist_gradient_boosting": ("sklearn.ensemble.HistGradientBoostingClassifier",
                               "sklearn.ensemble.HistGradientBoostingRegressor"),
}


def check_family_parameter(family: str, name: str, values: list[Any]) -> None:
    """ValueError (one sentence) when `name` is not a hyperparameter of the family's estimators
    (their get_params()) or a value breaks the estimator's own rules (type, range)."""
    from sklearn.utils._param_validation import InvalidParameterError, validate_parameter_constraints

    classes = []
    for path in FAMILY_ESTIMATORS[family]:
        module, _, cls = path.rpartition(".")
        classes.append(getattr(importlib.import_module(module), cls))
    known = set().union(*(c().get_params() for c in classes))
    if name not in known:
        raise ValueError(f"'{name}' is not a hyperparameter of {family} (known: {', '.join(sorted(known))})")
    for cls in classes:
        if name not in cls().get_params():
            continue
        for value in values:
            try:
                validate_parameter_constraints(cls._parameter_constraints, {name: value}, cls.__name__)
            except InvalidParameterError as exc:
                raise ValueError(f"{name}: {str(exc).rstrip('.')}") from None


class ModelSpec(_Strict):
    family: Family
    params: dict[str, Any] = Field(default_factory=dict, description="fixed parameters")
    search_space: dict[str, Param] | None = Field(
        None, description="left out: the family's default space (mlops.training.spaces); {}: no search, one "
        "configuration; a mapping: exactly this space, replacing the default")

    @field_validator("params")
    @classmethod
    def _known_params(cls, v: dict[str, Any], info: Any) -> dict[str, Any]:
        family = info.data.get("family")
        for name, value in v.items():
            if family is not None:
                check_family_parameter(family, name, [value])
        return v

    @field_validator("search_space")
    @classmethod
    def _known_space(cls, v: dict[str, Param] | None, info: Any) -> dict[str, Param] | None:
        family = info.data.get("family")
        for name, param in (v or {}).items():
            if family is not None:
                check_family_parameter(family, name, param.candidates())
        both = sorted(set(v or {}) & set(info.data.get("params") or {}))
        if both:
            raise ValueError(f"'{both[0]}' is both fixed (params) and searched (search_space); keep one")
        return v


class SearchConfig(_Strict):
    strategy: Literal["tpe", "random", "halving"] = Field(
        "tpe", description="tpe: Optuna's model-based sampler, random: Optuna's random sampler (both prune trials "
        "that fall behind on the first folds); halving: scikit-learn's successive halving over n_trials candidates")
    n_trials: int | None = Field(
        None, ge=1, le=10_000, description="trials per family on average (the pool of n_trials x families goes "
        "where it pays); default 8 without a time_budget, no cap with one")
    time_budget: float | None = Field(
        None, gt=0, description="seconds for the whole search; it stops when they are spent (with n_trials too: "
        "whichever comes first)")
    cv_folds: int = Field(3, ge=2, le=20)
    scoring: str | None = Field(None, description="sklearn scorer; default from the primary metric")
    retune: Literal["auto", "always"] = Field(
        "auto", description="auto: a retrain refits the champion's tuned configuration and searches again only when "
        "the training rows doubled since it was tuned or the search changed (mlops.training.retune); always: every "
        "training searches")
    n_jobs: int = Field(-1, description="trials at once; -1: one per core (trials x threads per trial <= cores)")
    seed: int = 42
    backend: Literal["local", "dask"] = "local"
    dask_address: str | None = None

    @model_validator(mode="after")
    def _budget_fits_strategy(self) -> SearchConfig:
        if self.strategy == "halving" and self.time_budget is not None:
            raise ValueError("time_budget needs strategy tpe or random (halving fits its n_trials candidates "
                             "whatever the time)")
        return self

    @property
    def trials(self) -> int | None:
        """Trials per family on average: n_trials, 8 by default, no cap when only a time budget is set."""
        if self.n_trials is not None:
            return self.n_trials
        return None if self.time_budget is not None else 8


class ScoringConfig(_Strict):
    """Where batch scoring runs: in the flow's process, chunk by chunk, or on a Dask cluster's workers."""

    backend: Literal["local", "dask"] = "local"
    dask_address: str | None = Field(
        None, description="the Dask scheduler (tcp://host:8786); default $MLOPS_DASK_ADDRESS, which "
        "`mlops up --profile production --dask` sets for the flows it runs")

    @field_validator("dask_address")
    @classmethod
    def _scheduler_url(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^(tcp|tls|ucx)://[^\s/]+:\d+$", v.strip()):
            raise ValueError(f"'{v}' is not a Dask scheduler address; write it as tcp://host:port, such as "
                             "tcp://127.0.0.1:8786")
        return v.strip() if v is not None else v


class SliceConfig(_Strict):
    column: str
    min_rows: int = Field(30, ge=1)


class LeakageConfig(_Strict):
    """When the gate treats a result as a leak: the target in disguise among the features."""

    near_perfect: float = Field(
        0.999, gt=0.5, le=1.0,
        description="a holdout roc_auc, accuracy, f1 or r2 at or above this is near perfect and suspicious")
    single_feature: float = Field(
        0.98, gt=0.5, le=1.0,
        description="one column that alone reaches this score (roc_auc, or r2 for regression) leaks the target")
    min_holdout_rows: int = Field(
        200, ge=1, description="a near-perfect score on fewer holdout rows than this is not taken as a leak")
    check_identifiers: bool = Field(True, description="reject an identifier-like feature (unique per row, monotonic)")


class GateConfig(_Strict):
    primary_metric: str | None = None
    thresholds: dict[str, float] = Field(default_factory=dict, description="metric -> bound")
    min_improvement: float = Field(0.0, ge=0.0, description="challenger must beat champion by this much")
    noninferiority_margin: float = Field(0.0, ge=0.0)
    bootstrap_samples: int = Field(1000, ge=100, le=100_000)
    confidence: float = Field(0.95, gt=0.5, lt=1.0)
    min_comparison_rows: int = Field(
        50, ge=10, description="holdout rows the champion never trained on that a comparison with it needs; with "
        "fewer, the champion stays (no evidence the challenger is better on data neither has seen)")
    replace_failing_champion: bool = Field(
        True, description="waive a threshold the challenger misses when the champion misses it by more on the same "
        "holdout and the challenger scores better there: the comparison with the champion decides (else the worse "
        "model keeps serving)")
    slices: list[SliceConfig] = Field(default_factory=list)
    slice_tolerance: float = Field(
        0.05, ge=0.0,
        description="how far a slice may fall behind its baseline: a share of the baseline (relative) or in the "
                    "metric's own units (absolute, e.g. target units for rmse)")
    slice_tolerance_mode: Literal["relative", "absolute"] = "relative"
    latency_budget_ms: float = Field(
        50.0, gt=0, description="single-row latency budget for infra validation, compared with latency_percentile")
    latency_percentile: float = Field(95.0, ge=50.0, le=100.0, description="which percentile meets the budget")
    infra_validation: bool = True
    leakage: LeakageConfig = Field(default_factory=LeakageConfig)
    allow_leakage: list[str] = Field(
        default_factory=list, description="columns accepted knowingly although the leakage check flags them")


class RegistryConfig(_Strict):
    model_name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    experiment: str | None = None
    reference_rows: int = Field(5_000, ge=100)


class RetrainPolicyConfig(_Strict):
    drift_share_threshold: float = Field(0.3, gt=0.0, le=1.0)
    consecutive_windows: int = Field(2, ge=1)
    drift_trigger: Literal["without_labels", "always"] = Field(
        "without_labels", description="when input drift alone asks for a retrain: 'without_labels' only in windows "
        "whose labels could not judge the champion (labels say directly whether quality dropped; seasonal inputs "
        "drift every window while the model still holds), 'always' in every window"
    )
    cooldown_minutes: float = Field(60.0, ge=0.0)
    retrain_budget: float = Field(
        0.5, gt=0.0, le=1.0, description="the share of monitoring windows that may retrain, on average: each judged "
        "window after the first retrain adds this much to a budget that a retrain spends 1 of (1: any window may "
        "retrain); a guardrail on top of retrain_cost, whose gains on growing data pay for nearly every window"
    )
    retrain_burst: float = Field(
        2.0, ge=1.0, description="the most budget, in retrains, that quiet windows save up: after a quiet stretch "
        "the windows retrain back to back until it is spent (a sudden change wants a retrain at once and another "
        "once more of its data has arrived), with 2 and 0.5 a window, three in a row; with the default "
        "retrain_cost, a full budget lets a window whose fresh-model gain is significant retrain under the cost"
    )
    min_rows: int = Field(500, ge=1)
    quality_tolerance: float | None = Field(
        None, ge=0.0, description="live-quality drop that calls for a retrain: metric points for bounded scores "
        "(roc_auc, f1, accuracy, r2; default 0.05), a share of the baseline for errors (rmse, mae, log_loss; "
        "default 0.2, as errors move with the data's scale from window to window)"
    )
    live_baseline_windows: int = Field(
        1, ge=0, description="a champion's first this many labelled windows form its live-quality baseline (until "
        "then the baseline of the champion before it, else its holdout metric; with 0, always the holdout)"
    )
    train_on: Literal["auto", "new", "window", "original_plus_new", "recent"] = Field(
        "auto", description="what a retrain trains on: 'auto' (all known history; with a timestamp_column the "
        "training window, all history or only its last periods, is chosen by evidence on the newest rows; "
        "mlops.training.window), or a fixed choice"
    )
    window_period: str | None = Field(
        None, description="train_on auto: the period candidate windows are counted in (e.g. 1M, 2W, 7D); "
        "default: the monitoring cadence (schedule_cron), widened until the newest period holds enough rows"
    )
    retrain_cost: float | None = Field(
        None, ge=0.0, description="what a retrain costs, in the primary metric's units: a retrain is asked for once "
        "keeping the champion has cost more (on each labelled window a fresh model fitted without the window's "
        "newer half is scored on it beside the champion; its gains add up since the last retrain); default: 20% "
        "of the champion's error for rmse, mae and log_loss, 0.02 for bounded scores"
    )
    recent_rows: int | None = Field(
        None, ge=100, description="train_on: recent keeps at most this many of the newest rows"
    )
    recent_days: float | None = Field(
        None, gt=0.0, description="train_on: recent keeps the rows of the last this many days (by timestamp_column)"
    )
    run_training_locally: bool = True
    training_lock_minutes: float = Field(
        240.0, gt=0.0, description="a training run that has not reported back after this long is presumed dead"
    )
    dedupe_seconds: float = Field(300.0, ge=0.0, description="training starts closer together than this are one")
    history_size: int = Field(200, ge=1, description="policy decisions kept in the state file")
    max_training_rows: int = Field(
        1_000_000, ge=100, description="a retraining file keeps at most this many rows, the most recent"
    )

    @model_validator(mode="after")
    def _recent_window(self) -> RetrainPolicyConfig:
        recent = self.recent_rows is not None or self.recent_days is not None
        if self.train_on == "recent" and not recent:
            raise ValueError("train_on 'recent' needs a window: set recent_rows (e.g. 50000) or recent_days (e.g. 90)")
        if self.window_period is not None:
            from mlops.core.periods import parse_period  # here: it loads pandas, a config needs none

            try:
                parse_period(self.window_period, "window_period")
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        if self.train_on != "recent" and recent:
            raise ValueError(f"recent_rows and recent_days apply only to train_on 'recent' (not '{self.train_on}'); "
                             "set train_on: recent or remove them")
        return self


class MonitoringConfig(_Strict):
    schedule_cron: str = "0 * * * *"
    sample_size: int = Field(20_000, ge=100)
    seed: int = 0
    numeric_method: Literal["wasserstein", "psi", "jensenshannon", "ks"] = "wasserstein"
    categorical_method: Literal["jensenshannon", "psi", "chisquare"] = "jensenshannon"
    numeric_threshold: float | None = None
    categorical_threshold: float | None = None
    drift_share: float = Field(0.5, gt=0.0, le=1.0, description="dataset drift when this share of columns drift")
    discrete_max_unique: int = Field(
        5, ge=0, description="numeric columns with at most this many values are compared as categories (0: never)"
    )
    min_labelled_rows: int = Field(100, ge=1, description="fewer labelled rows in a window give no live-quality verdict")
    lookback_days: float = Field(
        2.0, gt=0.0, description="how far behind the newest checked row a late prediction-log file may still land"
    )
    claim_minutes: float = Field(
        60.0, gt=0.0, description="log files claimed by a monitor run that never finished are checked again after this"
    )
    policy: RetrainPolicyConfig = Field(default_factory=RetrainPolicyConfig)


class ServingConfig(_Strict):
    max_rows: int = Field(100_000, ge=1)
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    sensitive_columns: list[str] = Field(default_factory=list)
    sensitive_mode: Literal["drop", "hash"] = "hash"
    poll_seconds: float = Field(5.0, gt=0)
    enforce_contract_ranges: bool = Field(
        True, description="reject values outside the contract's ranges and categories (else score them)"
    )
    workers: int = Field(1, ge=1, le=64, description="server worker processes (one per core is a good start)")
    log_predictions: bool = True
    log_queue_rows: int = Field(100_000, ge=1, description="prediction log rows held before new ones are dropped")
    log_flush_rows: int = Field(20_000, ge=1, description="write a prediction log file once this many rows wait")
    log_flush_seconds: float = Field(5.0, gt=0, description="and at least this often")
    batch_chunk_rows: int = Field(100_000, ge=100, description="rows per chunk in batch scoring")


ColumnType = Literal["numeric", "integer", "categorical", "boolean", "datetime", "text", "id", "drop"]

# Spellings of "no value" in exported tables; whitespace-only strings always count as missing too.
DEFAULT_NA_VALUES = ["?", "NA", "N/A", "n/a", "NaN", "nan", "NULL", "null", "None", "#N/A"]


class PipelineConfig(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    task: TaskKind
    source: DataSource
    target: str
    positive_class: str | int | bool | None = Field(
        None, description="the class binary metrics (f1, roc_auc) score as positive; default: the larger label")
    id_column: str | None = None
    timestamp_column: str | None = None
    drop_columns: list[str] = Field(default_factory=list)
    columns: dict[str, ColumnType] = Field(
        default_factory=dict, description="declared column types; inferred for the columns not named here")
    na_values: list[str] = Field(
        default_factory=lambda: list(DEFAULT_NA_VALUES),
        description="strings read as missing values (whitespace-only strings always are)")
    split: SplitConfig = Field(default_factory=SplitConfig)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    features: FeatureConfig = Field(default_factory=FeatureConfig)
    models: list[ModelSpec] = Field(min_length=1)
    search: SearchConfig = Field(default_factory=SearchConfig)
    gate: GateConfig = Field(default_factory=GateConfig)
    registry: RegistryConfig
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig)
    serving: ServingConfig = Field(default_factory=ServingConfig)
    scoring: ScoringConfig = Field(default_factory=ScoringConfig)
    data_roots: list[str] = Field(default_factory=list, description=(
        "folders that data files named at run time (events, deployments, --data) must resolve into, relative to "
        "the config file; default: the config file's folder (see mlops.core.data.data_roots)"))
    _folder: Path | None = PrivateAttr(None)  # the config file's folder, set by load_config

    @property
    def folder(self) -> Path | None:
        """The folder of the file this config was loaded from (None when built from a mapping)."""
        return self._folder

    @field_validator("target")
    @classmethod
    def _target_named(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("target must name a column")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> PipelineConfig:
        allowed = CLASSIFICATION_FAMILIES if self.task == "classification" else REGRESSION_FAMILIES
        for spec in self.models:
            if spec.family not in allowed:
                raise ValueError(f"model family '{spec.family}' does not fit a {self.task} task")
        metrics = CLASSIFICATION_METRICS if self.task == "classification" else REGRESSION_METRICS
        for m in list(self.gate.thresholds) + [self.primary_metric]:
            if m not in metrics:
                raise ValueError(f"metric '{m}' is not one of {sorted(metrics)} for a {self.task} task")
        special = {self.target, self.id_column, self.timestamp_column} - {None}
        clash = special & set(self.drop_columns)
        if clash:
            raise ValueError(f"drop_columns also lists {sorted(clash)}")
        if self.target in self.columns:
            raise ValueError(f"columns declares a type for the target '{self.target}'; the task decides it")
        if self.positive_class is not None and self.task != "classification":
            raise ValueError("positive_class applies to classification only")
        return self

    @property
    def primary_metric(self) -> str:
        if self.gate.primary_metric:
            return self.gate.primary_metric
        return "roc_auc" if self.task == "classification" else "rmse"

    @property
    def refit(self) -> bool:
        """Whether the registered model is refitted on train + holdout (all labelled rows; with a timestamp, the
        holdout is the newest of them). On unless split.refit is false."""
        return self.split.refit is not False

    def config_hash(self) -> str:
        """A stable hash of the validated config, recorded as lineage."""
        # where data may come from, how large it may be and where batch scoring runs do not change what is
        # trained: left out
        where = {"data_roots": True, "source": {"max_bytes"}, "scoring": True}
        blob = json.dumps(self.model_dump(mode="json", exclude=where), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _field_path(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc if not (isinstance(p, str) and p in {"generated", "file", "sklearn"}))


def read_yaml_mapping(path: str | Path, what: str, top_level: str) -> dict[str, Any]:
    """A YAML file whose top level is a mapping; ConfigError naming the file when it is missing or is not."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: {what} not found")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: the top level must be {top_level}")
    return raw


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> PipelineConfig:
    """Read and validate a YAML config; raise ConfigError naming file, field and reason."""
    p = Path(path)
    raw = read_yaml_mapping(p, "config file", "a mapping of settings")
    if overrides:
        raw = _deep_merge(raw, overrides)
    src = raw.get("source")
    if isinstance(src, dict) and src.get("kind") == "file" and "path" in src:
        sp = Path(str(src["path"]))
        if not sp.is_absolute() and not sp.exists() and (p.parent / sp).exists():
            src["path"] = str(p.parent / sp)
    cfg = parse_config(raw, origin=str(p))
    cfg._folder = p.resolve().parent
    return cfg


def parse_config(raw: dict[str, Any], origin: str = "<config>") -> PipelineConfig:
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as exc:
        # a misspelt key also shows up as a missing one; name the misspelling first
        errors = sorted(exc.errors(), key=lambda e: {"extra_forbidden": 0, "missing": 2}.get(e["type"], 1))
        err = errors[0]
        field = _field_path(tuple(err["loc"])) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling)"
        elif err["type"] == "missing":
            msg = "required setting is missing"
        elif isinstance(err.get("input"), bool) and err["type"] in {"string_type", "literal_error", "enum"}:
            # YAML 1.1 reads no/yes/on/off/true/false (any case) as booleans: `[No, year]` holds False
            msg += (f"; YAML read a boolean ({str(err['input']).lower()}) here: quote the name, e.g. \"No\", "
                    "to mean the text")
        more = f" (and {len(exc.errors()) - 1} more problem(s))" if len(exc.errors()) > 1 else ""
        raise ConfigError(f"{origin}: field '{field}': {msg}{more}") from None


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out
