"""One monitor run's identity and places: the model, the run id and clock, and where its state lives
under the state folder (policy, labelled rows, training files, reports)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from mlops.core.names import slug
from mlops.monitoring.policy import PolicyStore
from mlops.monitoring.result import MonitorResult
from mlops.monitoring.retraining import LabelledStore
from mlops.monitoring.windows import Window, WindowStore, utc_now


@dataclass(frozen=True)
class MonitorPaths:
    """Where one model's monitoring state lives under the state folder."""

    root: Path
    reports: Path

    @classmethod
    def of(cls, state_dir: Path, reports_dir: Path, model_name: str) -> MonitorPaths:
        key = slug(model_name)
        return cls(state_dir / "monitor" / key, reports_dir / key)

    @property
    def policy(self) -> Path:
        return self.root / "policy.json"

    @property
    def labelled(self) -> Path:
        return self.root / "labelled"

    @property
    def training(self) -> Path:
        return self.root / "training"


@dataclass(frozen=True)
class MonitorRun:
    """Who is checking what, when, and the stores it reads and writes."""

    model_name: str
    config_path: str
    run_id: str
    now: datetime
    paths: MonitorPaths
    windows: WindowStore

    @classmethod
    def start(cls, model_name: str, config_path: str, state_dir: Path, reports_dir: Path, window_state: Path,
              flow_run_id: object | None, now: datetime | None = None) -> MonitorRun:
        """A run of the flow `flow_run_id` (a fresh id without one), its clock read at `now` (the wall clock)."""
        return cls(model_name, str(Path(config_path).resolve()), str(flow_run_id or uuid.uuid4()), now or utc_now(),
                   MonitorPaths.of(state_dir, reports_dir, model_name), WindowStore(window_state))

    @property
    def stamp(self) -> str:
        """This run's time and id, for the names of files it writes."""
        return f"{self.now.strftime('%Y%m%dT%H%M%S')}-{self.run_id[:8]}"

    def window_id(self, window: Window) -> str:
        return window.claim.window_id if window.claim else self.stamp

    @property
    def policy(self) -> PolicyStore:
        return PolicyStore(self.paths.policy)

    @property
    def labelled(self) -> LabelledStore:
        return LabelledStore(self.paths.labelled)

    def report_path(self, version: str, window: Window) -> Path:
        return self.paths.reports / f"drift-{slug(self.model_name)}-v{version}-{self.window_id(window)}.html"

    def labelled_used_by(self, source_path: str | None) -> list[str]:
        """The labelled-row files a training file of this monitor took (all kept so far); none for other files."""
        if not source_path or Path(source_path).parent != self.paths.training:
            return []
        return [f.name for f in self.labelled.files()]

    @contextmanager
    def checking(self, window: Window, result: MonitorResult, lookback_days: float) -> Iterator[None]:
        """The check of a window: when the block ends cleanly the window is committed with the status the check
        ended in (`commit`), so no later run reads its log files again; when it fails (any exception, an
        interrupt too) the claimed files are given back (`release`) for the next run, and the error goes on."""
        try:
            yield
        except BaseException:
            self.release(window)
            raise
        self.commit(window, result.status, lookback_days)

    def release(self, window: Window) -> None:
        """Give a failed check's claimed log files back, so the next run checks them."""
        if window.claim is not None:
            self.windows.release(self.model_name, window.claim)

    def commit(self, window: Window, status: str, lookback_days: float) -> None:
        """Mark the window's log files checked (corrupt ones as corrupt) so no later run reads them again; a
        window given by hand is recorded in the window history."""
        if window.claim is not None:
            self.windows.commit(self.model_name, window.claim, self.now, rows=window.rows, newest=window.newest(),
                                corrupt=window.corrupt_files, status=status, lookback_days=lookback_days)
        else:
            self.windows.record(self.model_name, {"at": self.now.isoformat(), "source": window.source,
                                                  "rows": window.rows, "corrupt_files": len(window.corrupt_files),
                                                  "status": status})
