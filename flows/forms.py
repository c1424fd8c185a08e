"""What the Prefect run forms show: typed flow parameters with choices, and the run names.

Prefect builds each flow's parameter schema when the flow is decorated (and again at `prefect deploy`);
the descriptions come from the flows' docstring `Args:` sections and the pydantic fields here.

Optional parameters follow one convention in every flow (train, retrain, monitor, score, backtest):
- the default is `LEFT_OUT` and the type one of the optional types here (`OptionalPath`, `OptionalTime`,
  `SearchOverridesParam`), which also take None, so code may pass None;
- the flow is declared with `form_flow` (not `@flow`), so a parameter left out is left out of the run's
  record too;
- the run form shows a plain field (no switch between a value and null, no null default it would reject),
  and a field left empty sends nothing;
- the body reads the value with `given(...)`: None when it was left out. A path a deployment trigger may fill
  in reads with `given_path(...)`, which also takes the text a trigger's template renders for a missing
  value (`None`, `null`, empty) as left out; where an empty path must be refused instead (train's
  `source_path`: a delivery without a path is an error, never "the config's own data"), `given` is used.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import yaml
from prefect import Flow
from prefect.runtime import flow_run
from pydantic import MISSING, BaseModel, ConfigDict, Field, GetJsonSchemaHandler, ValidationError
from pydantic_core import CoreSchema

from mlops.core.config import Family, PipelineConfig
from mlops.core.errors import ConfigError
from mlops.core.names import run_name_part

PROJECT_DIR = Path(__file__).resolve().parent.parent
CONFIGS_DIR = PROJECT_DIR / "configs"
DEFAULT_CONFIG = "configs/default.yaml"
# a pipeline config has a top-level `models:` list (configs/webhooks.yaml, the webhook mappings, has none)
_PIPELINE_KEY = re.compile(rb"^models:", re.MULTILINE)


def deployed_config() -> str:
    """The config the deployment runs with (`$MLOPS_CONFIG` at `prefect deploy`), else the default one."""
    return os.environ.get("MLOPS_CONFIG", "").strip() or DEFAULT_CONFIG


def _same_file(a: str, b: str) -> bool:
    """Whether two config paths (relative ones from the project folder, as the worker runs) name one file."""
    def where(p: str) -> Path:
        path = Path(p).expanduser()
        return (path if path.is_absolute() else PROJECT_DIR / path).resolve()

    return where(a) == where(b)


def config_choices() -> list[str]:
    """The pipeline configs a run form offers, each once: configs/*.yaml of this project (relative, as the worker
    runs from the project folder), the config the deployment runs with spelled as it was given (it is the
    form's default, which must be one of the choices), listed where its file is or last when it lives elsewhere.

    Cheap: one folder listing and a look at each file's bytes, no YAML parsing."""
    found = []
    for path in sorted(CONFIGS_DIR.glob("*.yaml")):
        try:
            if _PIPELINE_KEY.search(path.read_bytes()):
                found.append(f"configs/{path.name}")
        except OSError:
            continue
    deployed = os.environ.get("MLOPS_CONFIG", "").strip()
    if deployed:
        same = [i for i, f in enumerate(found) if _same_file(f, deployed)]
        if same:
            found[same[0]] = deployed
        else:
            found.append(deployed)
    return found


def config_families(config_path: str) -> list[str] | None:
    """The model families a config lists (read without validating the whole config), None when it cannot be read."""
    path = Path(config_path).expanduser()
    try:
        raw = yaml.safe_load((path if path.is_absolute() else PROJECT_DIR / path).read_text())
        families = [str(m["family"]) for m in raw["models"]]
    except Exception:  # noqa: BLE001 - the form then offers every family; the run checks the choice
        return None
    return list(dict.fromkeys(families)) or None


class _ConfigChoices:
    """Adds the list of configs as the choices (`enum`) of a text parameter's JSON schema; the parameter
    stays text in Python, so a run started from code or the CLI may name any config file."""

    def __get_pydantic_json_schema__(self, core: CoreSchema, handler: GetJsonSchemaHandler) -> dict[str, Any]:
        schema = handler(core)
        schema["enum"] = config_choices()
        return schema


class _FormWithoutNull:
    """Shows an optional parameter as its plain type in the run form: no type switch between a value and
    None, and no `null` default the form would fill in and then reject. Used with `LEFT_OUT` as the default
    (pydantic's MISSING sentinel, which a JSON schema leaves out); left empty, the form sends nothing."""

    def __get_pydantic_json_schema__(self, core: CoreSchema, handler: GetJsonSchemaHandler) -> dict[str, Any]:
        while core.get("type") in ("missing-sentinel", "nullable"):
            core = core["schema"]  # type: ignore[typeddict-item]
        return dict(handler(core))


class _FamilyChoices(_FormWithoutNull):
    """An optional list of families shown as a plain list (`_FormWithoutNull`) whose choices are only the
    families of the deployment's config (`deployed_config`); every family when that config cannot be read.
    A family another config lacks is refused by the run in one sentence (`apply_search_overrides`)."""

    def __get_pydantic_json_schema__(self, core: CoreSchema, handler: GetJsonSchemaHandler) -> dict[str, Any]:
        schema = super().__get_pydantic_json_schema__(core, handler)
        config = deployed_config()
        families = config_families(config)
        if families is not None and isinstance(schema.get("items"), dict):
            schema["items"] = {**schema["items"], "enum": families}
        return schema


def _no_null_defaults(schema: dict[str, Any]) -> None:
    """A model's JSON schema without `"default": null` on its fields (the form would fill in null and reject it)."""
    for prop in schema.get("properties", {}).values():
        if "default" in prop and prop["default"] is None:
            del prop["default"]


LEFT_OUT: Any = MISSING
"""The default of a parameter a run may leave out: the run form shows an empty field (see `given`)."""


def given(value: Any) -> Any:
    """A parameter's value, None when the run left it out (`LEFT_OUT`)."""
    return None if value is MISSING else value


RENDERED_MISSING = frozenset({"", "None", "null"})  # what a trigger's template renders for a missing value


def given_path(value: str | None | Any) -> str | None:
    """A path parameter's value, None when the run left it out or a trigger's template rendered a missing value
    (`None`, `null`, empty text)."""
    value = given(value)
    return None if value is None or str(value).strip() in RENDERED_MISSING else str(value)


class _FormFlow(Flow):  # type: ignore[type-arg]
    """A flow whose run record leaves out the parameters a call did not give (`LEFT_OUT`), as a run started
    from the form does, instead of showing the sentinel's attributes."""

    def serialize_parameters(self, parameters: dict[str, Any]) -> dict[str, Any]:
        return super().serialize_parameters({k: v for k, v in parameters.items() if v is not MISSING})


def form_flow(**options: Any) -> Callable[[Callable[..., Any]], Flow]:  # type: ignore[type-arg]
    """`@flow(**options)` for flows with `LEFT_OUT` parameters (see `_FormFlow`)."""
    return lambda fn: _FormFlow(fn, **options)


ConfigPath = Annotated[str, _ConfigChoices()]
"""A pipeline config (YAML): a choice of the project's configs in the run form, any path from code."""

OptionalPath = Annotated[str | None | MISSING, _FormWithoutNull()]
"""A file or folder path that may be left out (None or `LEFT_OUT`); the form shows a plain text box."""

OptionalTime = Annotated[datetime | None | MISSING, _FormWithoutNull()]
"""A point in time that may be left out (None or `LEFT_OUT`); the form shows a plain date-time field."""


class SearchOverrides(BaseModel):
    """Search settings for this run only, applied over the config's `search` and `models`; what is left
    empty keeps the config's value."""

    model_config = ConfigDict(extra="forbid", title="Search overrides", json_schema_extra=_no_null_defaults)

    n_trials: Annotated[int | None, _FormWithoutNull()] = Field(
        None, ge=1, le=10_000, title="Trials per family", description="Trials per model family on average (the config's search.n_trials otherwise).")
    families: Annotated[list[Family] | None, _FamilyChoices()] = Field(
        None, title="Families", description="Search only these of the config's model families (all of them "
                                            "otherwise); the form offers the families of the deployment's config.")
    time_budget: Annotated[float | None, _FormWithoutNull()] = Field(
        None, gt=0, title="Time budget (seconds)", description="Seconds for the whole search, shared across the families "
                                "where it pays (the config's search.time_budget otherwise).")

    def is_empty(self) -> bool:
        return self.n_trials is None and not self.families and self.time_budget is None

    def describe(self) -> str:
        """One line for the log, e.g. `n_trials=3, families=ridge`."""
        parts = [f"n_trials={self.n_trials}"] if self.n_trials is not None else []
        if self.families:
            parts.append("families=" + "+".join(self.families))
        if self.time_budget is not None:
            parts.append(f"time budget {self.time_budget:g} s")
        return ", ".join(parts) or "none"


SearchOverridesParam = Annotated[SearchOverrides | None | MISSING, _FormWithoutNull()]


def apply_search_overrides(cfg: PipelineConfig, overrides: SearchOverrides | None) -> PipelineConfig:
    """`cfg` with the run's search overrides; a family the config does not list is a one-sentence ConfigError."""
    overrides = given(overrides)
    if overrides is None or overrides.is_empty():
        return cfg
    update: dict[str, Any] = {}
    search = {k: v for k, v in (("n_trials", overrides.n_trials), ("time_budget", overrides.time_budget))
              if v is not None}
    if search:
        try:  # validated as the config's own search section is (time_budget with halving is refused)
            update["search"] = type(cfg.search).model_validate(cfg.search.model_dump() | search)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"]) or "search"
            raise ConfigError(f"{where}: {err['msg'].removeprefix('Value error, ')}") from None
    if overrides.families:
        listed = [spec.family for spec in cfg.models]
        unknown = [f for f in overrides.families if f not in listed]
        if unknown:
            raise ConfigError(f"search.families: {', '.join(unknown)} is not among the config's model families "
                              f"({', '.join(listed)}); choose from those or add it to the config's models")
        update["models"] = [spec for spec in cfg.models if spec.family in overrides.families]
    return cfg.model_copy(update=update) if update else cfg


# ---- run names ---------------------------------------------------------------------------------------


def name_part(text: object) -> str:
    """A run-name part from free text: paths shortened to their file name, lowercase words joined by dashes,
    long text cut without losing what tells runs apart (mlops.core.names.run_name_part)."""
    return run_name_part(text)


def model_of(config_path: object) -> str:
    """The registered model a config names (registry.model_name), read without validating the whole config;
    the file's stem when it cannot be read (the run itself then fails with the config's error)."""
    try:
        raw = yaml.safe_load(Path(str(config_path)).read_text())
        return name_part(raw["registry"]["model_name"])
    except Exception:  # noqa: BLE001 - a name is never worth failing a run for
        return name_part(Path(str(config_path)).stem)


def run_name(kind: str, *, suffix: Callable[[dict[str, Any]], str | None] | None = None) -> Callable[[], str]:
    """A `flow_run_name` callable: `<kind>-<model>` plus `-<suffix(parameters)>` when that gives text, e.g.
    `train-churn-classifier-cli` or `promote-churn-classifier-v3`."""

    def name() -> str:
        params = dict(flow_run.parameters or {})
        parts = [kind, model_of(params.get("config_path") or DEFAULT_CONFIG)]
        extra = suffix(params) if suffix else None
        if extra:
            parts.append(extra)
        return "-".join(parts)

    name.__name__ = f"{kind}_run_name"
    return name


def reason_suffix(params: dict[str, Any]) -> str:
    """`-<reason>` of a run name (train, retrain)."""
    return name_part(params.get("reason") or "manual")


def version_suffix(params: dict[str, Any]) -> str | None:
    """`-v<version>` of a promotion's run name."""
    return f"v{params['version']}" if params.get("version") is not None else None
