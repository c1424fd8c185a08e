"""The data sources a pipeline config names: the built-in generated data, a file or folder, a scikit-learn
bundled dataset. Part of the config schema (mlops.core.config uses them and names them too)."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


DEMAND_FREQS = {"15min": 15, "30min": 30, "h": 60}  # the demand generator's time steps, in minutes
DEMAND_ONLY = ("start", "freq", "trend", "shift", "shift_at", "noise", "missing", "response_drift", "reshape",
               "unlabelled", "regime")
CHURN_ONLY = ("drift",)


class GeneratedSource(_Strict):
    """The built-in deterministic demo data: customer churn (mlops.core.data.generate_churn), or a city's
    hourly electricity demand with seasons, a trend and a shift (mlops.core.generate.generate_demand).

    A demand `regime` presets the knobs for one kind of history (see regime_knobs); knobs written next to it win.
    """

    kind: Literal["generated"] = "generated"
    dataset: Literal["churn", "demand"] = "churn"
    rows: int = Field(20_000, ge=100, le=50_000_000, description="rows; demand: time steps (default 17,520, 2 years)")
    seed: int = 7
    drift: float = Field(0.0, ge=0.0, le=1.0, description="churn: how far inputs and concept move")
    corrupt: float = Field(0.0, ge=0.0, le=0.5, description="share of rows with impossible values")
    start: date = Field(date(2023, 1, 1), description="demand: the first timestamp")
    freq: Literal["15min", "30min", "h"] = Field("h", description="demand: the time step")
    trend: float = Field(0.05, ge=-0.5, le=1.0, description="demand: growth of the level per year, as a share")
    shift: float = Field(
        0.15, ge=-0.5, le=1.0,
        description="demand: from shift_at on, the level moves by this share and heating and cooling by twice it")
    shift_at: date | None = Field(None, description="demand: when the shift starts (default: halfway through)")
    noise: float = Field(0.04, ge=0.0, le=0.5, description="demand: spread of what the features cannot explain")
    missing: float = Field(0.01, ge=0.0, le=0.5, description="demand: share of missing sensor readings")
    response_drift: float = Field(
        0.0, ge=0.0, le=1.0, description="demand: a year's growth of the heating and cooling loads, as a share, "
        "and how far the hour profile moves a year towards rooftop solar and electric cars")
    reshape: float = Field(
        0.0, ge=0.0, le=1.0,
        description="demand: from shift_at on, how far the hour profile jumps towards rooftop solar and electric cars")
    unlabelled: float = Field(
        0.0, ge=0.0, le=0.5, description="demand: share of rows whose target has not arrived (blank, inputs present)")
    regime: Literal["growth", "stationary", "abrupt"] | None = Field(
        None, description="demand: preset knobs for a history where recent data wins (growth), all of it wins "
        "(stationary), or one date changes how inputs drive demand (abrupt); knobs set here win")

    @staticmethod
    def regime_knobs(regime: str) -> dict[str, Any]:
        """The knobs a demand regime presets, each with 5% blank targets. Checked month by month with gradient
        boosting on hour, day and month plus the inputs: a model of the last 3 months predicts the next month
        far better than one of all history under growth, clearly worse under stationary, and far better for a
        few months after the abrupt change (halfway, unless shift_at says otherwise)."""
        return {
            "growth": {"trend": 0.5, "shift": 0.0, "response_drift": 0.3, "noise": 0.04, "unlabelled": 0.05},
            "stationary": {"trend": 0.0, "shift": 0.0, "noise": 0.03, "unlabelled": 0.05},
            "abrupt": {"trend": 0.0, "shift": 0.1, "reshape": 0.8, "noise": 0.03, "unlabelled": 0.05},
        }[regime]

    @model_validator(mode="before")
    @classmethod
    def _demand_rows(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("dataset") == "demand" and "rows" not in data:
            data = {**data, "rows": 17_520}
        return data

    @model_validator(mode="after")
    def _fits_dataset(self) -> GeneratedSource:
        foreign = CHURN_ONLY if self.dataset == "demand" else DEMAND_ONLY
        wrong = [f for f in foreign if f in self.model_fields_set]
        if wrong:
            other = "churn" if self.dataset == "demand" else "demand"
            raise ValueError(f"'{wrong[0]}' applies to dataset {other} only, and this source is dataset {self.dataset}")
        if self.shift_at is not None:
            end = datetime.combine(self.start, time()) + timedelta(minutes=DEMAND_FREQS[self.freq] * (self.rows - 1))
            if not self.start < self.shift_at <= end.date():
                raise ValueError(f"shift_at {self.shift_at} must fall after start {self.start} and by the last row "
                                 f"({end.date()}, {self.rows:,} steps of {self.freq})")
        return self

    @model_validator(mode="after")
    def _regime_presets(self) -> GeneratedSource:
        if self.regime is not None and self.dataset == "demand":
            preset = self.regime_knobs(self.regime)
            # frozen, so filled in place; model_fields_set keeps saying what the config itself wrote
            self.__dict__.update({k: v for k, v in preset.items() if k not in self.model_fields_set})
        return self


DEFAULT_MAX_DATA_BYTES = 256 * 1024 * 1024  # a data file (or folder) larger than this is refused before reading


class FileSource(_Strict):
    """A local CSV or Parquet file."""

    kind: Literal["file"] = "file"
    path: str
    format: Literal["auto", "csv", "parquet"] = "auto"
    delimiter: str = ","
    max_bytes: int = Field(DEFAULT_MAX_DATA_BYTES, ge=1, description=(
        "the largest file (or folder total) read, checked before reading; also the cap for files given at run time"))


class SklearnSource(_Strict):
    """A real dataset that ships inside scikit-learn (no download)."""

    kind: Literal["sklearn"] = "sklearn"
    name: Literal["breast_cancer", "diabetes", "wine", "iris"]


DataSource = Annotated[GeneratedSource | FileSource | SklearnSource, Field(discriminator="kind")]
