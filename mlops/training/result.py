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

    @property
    def outcome(self) -> str:
        """`promoted`, `rejected` (the gate failed) or `passed` (passed, but `champion` did not move)."""
        return "promoted" if self.promoted else "passed" if self.gate_passed else "rejected"

    @property
    def failing_checks(self) -> list[str]:
        """The names of the gate checks that failed, e.g. `champion comparison`, `slice region`."""
        return [r.removeprefix("FAIL ").split(":", 1)[0] for r in self.gate_reasons if r.startswith("FAIL ")]

    def champion_change(self) -> str:
        """Where `champion` stands, in words: `v3 now champion (was v2)`, `v1 now champion (first champion)`,
        `unchanged: v2`, `none yet`."""
        if self.promoted:
            was = f"was v{self.previous_champion}" if self.previous_champion else "first champion"
            return f"v{self.version} now champion ({was})"
        return f"unchanged: v{self.champion_version}" if self.champion_version else "none yet"

    def outcome_line(self, limit: int = 300) -> str:
        """The run's outcome in one line (the final state's message): `promoted v3 (was v2)` or
        `REJECTED v3: failed champion comparison (...); champion unchanged: v2`."""
        if self.promoted:
            return f"promoted v{self.version}" + (f" (was v{self.previous_champion})" if self.previous_champion
                                                  else " (first champion)")
        if self.gate_passed:
            return f"v{self.version} passed the gate, not promoted; champion {self.champion_change()}"
        failed = [r.removeprefix("FAIL ") for r in self.gate_reasons if r.startswith("FAIL ")]
        first = failed[0] if failed else "no detail recorded"
        more = f" (+{len(failed) - 1} more: {', '.join(self.failing_checks[1:])})" if len(failed) > 1 else ""
        tail = f"; champion {self.champion_change()}"
        room = max(40, limit - len(f"REJECTED v{self.version}: ") - len(more) - len(tail))
        first = first if len(first) <= room else first[:room - 3].rstrip() + "..."
        return f"REJECTED v{self.version}: {first}{more}{tail}"

    def to_dict(self) -> dict[str, Any]:
        """The JSON document of `mlops train --json` (the same keys, in the same order, as the fields)."""
        return asdict(self)

