"""What a training run returns: the typed result the CLI prints and `mlops train --json` serialises."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class TrainingResult:
    """One training run's outcome: the registered version, its verdict, where the champion stands, and
    where to look (MLflow run, quarantined rows, data profile)."""

    model_name: str
    version: str
    family: str
    metrics: dict[str, float]
    gate_passed: bool
    gate_reasons: list[str]
    promoted: bool
    champion_version: str | None
    previous_champion: str | None
    leaderboard: list[dict[str, Any]]
    quarantine_file: str | None
    data: dict[str, Any]
    profile: dict[str, Any]
    profile_lines: list[str]
    mlflow_run_id: str
    experiment_id: str
    tracking_uri: str
    lineage: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON document of `mlops train --json` (the same keys, in the same order, as the fields)."""
        return asdict(self)

