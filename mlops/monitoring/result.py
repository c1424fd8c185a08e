"""What one monitor run found and decided, as typed data: `MonitorResult` and its parts.

The monitor flow returns a `MonitorResult`; `to_dict()` is the JSON `mlops monitor --json` prints
(the keys are the ones the flow's dict had before it was typed), `event_payload()` what the decision
events carry, `markdown()` the Prefect artifact and `mlflow_record()` the MLflow monitoring run.
Nothing here imports Prefect or MLflow.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from mlops.monitoring.drift import DriftResult
from mlops.monitoring.live_quality import LiveQuality
from mlops.monitoring.policy import Decision, WindowSummary
from mlops.monitoring.windows import QualityReport, Window

Status = Literal["no_champion", "empty", "quality_failed", "checked"]
# what a retrain's outcome keeps of the training run's summary
SUMMARY_KEYS = ("version", "family", "metrics", "gate_passed", "gate_reasons", "promoted", "champion_version",
                "previous_champion")


def _without_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


@dataclass
class WindowInfo:
    """Where the window's rows came from, how many, and what could not be read."""

    source: str
    rows: int
    files: int
    corrupt_files: list[str]
    other_model_rows: int
    first_logged_at: str | None
    last_logged_at: str | None
    window_id: str | None
    rescored_with_champion: bool = False  # the log's outputs were not the champion's, so drift rescored

    @classmethod
    def of(cls, window: Window) -> WindowInfo:
        first, last = window.span()
        return cls(window.source, window.rows, len(window.files), list(window.corrupt_files),
                   window.other_model_rows, first, last, window.claim.window_id if window.claim else None)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if not self.rescored_with_champion:
            del out["rescored_with_champion"]
        return out


@dataclass
class SeenInTraining:
    """The share of the window's rows the champion trained on (None: cannot be told), and why."""

    share: float | None
    rows: int
    seen_rows: int | None
    reason: str

    @classmethod
    def of(cls, raw: Mapping[str, Any]) -> SeenInTraining:
        return cls(raw["share"], int(raw["rows"]), raw["seen_rows"], str(raw["reason"]))


@dataclass
class PredictionDrift:
    column: str
    score: float | None
    drifted: bool


@dataclass
class DriftSample:
    seed: int
    reference_rows: int
    current_rows: int


@dataclass
class DriftSummary:
    """The drift verdict as the result reports it: share, drifted columns, scores, and the HTML report's fate."""

    drift_share: float
    dataset_drift: bool
    drifted_columns: list[str]
    scores: dict[str, float | None]
    prediction: PredictionDrift | None
    sample: DriftSample
    evidently_agreement: float | None = None
    report_error: str | None = None

    @classmethod
    def of(cls, drift: DriftResult, report: Mapping[str, Any]) -> DriftSummary:
        p = drift.prediction
        return cls(drift.drift_share, drift.dataset_drift, drift.drifted_columns,
                   {c.column: c.score for c in drift.columns},
                   None if p is None else PredictionDrift(p.column, p.score, p.drifted),
                   DriftSample(drift.seed, drift.reference_sampled_rows, drift.current_sampled_rows),
                   report.get("agreement"), report.get("error"))


@dataclass
class TrainingFile:
    """The file a retrain trains on (no path when there was nothing new to learn from)."""

    path: str | None
    rows: int
    train_on: str
    detail: str
    new_rows: int = 0
    used: list[str] = field(default_factory=list)  # labelled-row files it took, archived after training


@dataclass
class RetrainOutcome:
    """What became of a retrain: requested (an event hands it over), skipped, refused, trained or failed."""

    status: str
    detail: str = ""
    started: bool = False
    source_path: str | None = None
    summary: dict[str, Any] | None = None  # the training run's version, family, metrics and gate

    @classmethod
    def trained(cls, source_path: str | None, summary: Any) -> RetrainOutcome:
        """A finished training run, from the training flow's typed result."""
        keep = {k: getattr(summary, k) for k in SUMMARY_KEYS}
        detail = f"version {keep['version']} {'promoted' if keep['promoted'] else 'not promoted'}"
        return cls("trained", detail, True, source_path, keep)

    @classmethod
    def of_run(cls, returned: Any, message: str | None) -> RetrainOutcome:
        """What a retrain flow run ended with: the outcome it returned, or a failure with the run's message."""
        return returned if isinstance(returned, RetrainOutcome) else cls("failed", message or "training failed", True)

    @property
    def promoted(self) -> bool:
        """A training ran and its version became champion (the labelled rows it used are then archived)."""
        return bool(self.summary and self.summary.get("promoted"))

    def markdown(self, model_name: str, reason: str, state_name: str | None, champion: str | None = None) -> str:
        """The retrain run's summary artifact: what became of the request and why."""
        unchanged = f"the champion (v{champion}) is unchanged" if champion else "the champion is unchanged"
        body = {
            "skipped": f"Nothing was trained, so {unchanged}: {self.detail}.",
            "refused": f"Nothing was trained by this run: {self.detail}.",
            "trained": f"A challenger was trained on `{self.source_path or 'the config source'}`: {self.detail}.",
        }.get(self.status, f"The training failed: {self.detail}.")
        return f"# Retrain {state_name}: {model_name}\n\n{body}\n\nRequested because: {reason}\n"

    def to_dict(self) -> dict[str, Any]:
        return _without_none(asdict(self))


@dataclass
class EventIds:
    """Ids of the events a decision emitted (None: not emitted, or events are off)."""

    decision_event_id: str | None = None
    drift_event_id: str | None = None
    retrain_event_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return _without_none(asdict(self))


@dataclass
class MonitorResult:
    """One monitor run: the window, its quality, drift, rows seen in training, live quality, the policy's
    decision, the retraining file and what became of the retrain, with where each record lives."""

    status: Status
    model_name: str
    model_version: str | None = None
    message: str = ""
    window: WindowInfo | None = None
    quality: QualityReport | None = None
    drift: DriftSummary | None = None
    report_path: str | None = None
    seen_in_training: SeenInTraining | None = None
    live_quality: LiveQuality | None = None
    payoff: dict[str, Any] | None = None  # a fresh model beside the champion on the window (mlops.monitoring.payoff)
    decision: Decision | None = None
    training_file: TrainingFile | None = None
    training: RetrainOutcome | None = None
    events: EventIds = field(default_factory=EventIds)
    mlflow_run_id: str | None = None
    monitor_flow_run_id: str | None = None
    config_path: str | None = None

    @classmethod
    def of_window(cls, model_name: str, version: str, window: WindowInfo, monitor_flow_run_id: str,
                  config_path: str) -> MonitorResult:
        """The check of the champion `version` on `window` as it starts: `checked` when the window has rows (until a
        step finds otherwise), else `empty`."""
        return cls("checked" if window.rows else "empty", model_name, version, window=window,
                   monitor_flow_run_id=monitor_flow_run_id, config_path=config_path)

    @classmethod
    def without_champion(cls, model_name: str, monitor_flow_run_id: str, config_path: str) -> MonitorResult:
        """A run that found no champion to check, and says how to get one."""
        msg = (f"no champion for model '{model_name}' yet, so there is nothing to monitor; train one first "
               f"(`mlops train --config {config_path}`)")
        return cls("no_champion", model_name, message=msg, monitor_flow_run_id=monitor_flow_run_id,
                   config_path=config_path)

    @property
    def has_rows(self) -> bool:
        """The window had rows to check: its data quality is checked and the check recorded in MLflow."""
        return self.status in ("checked", "quality_failed")

    @property
    def quality_passed(self) -> bool:
        """The window has rows that passed the data-quality check: drift, live quality and a fresh model's payoff
        are measured on them."""
        return self.status == "checked"

    @property
    def training_path(self) -> str | None:
        """The file the retrain trains on (None: no file was written)."""
        return None if self.training_file is None else self.training_file.path

    @property
    def retrain(self) -> bool:
        """The policy asked for a retrain (whether or not one could run)."""
        return bool(self.decision is not None and self.decision.retrain)

    @property
    def retrain_skipped(self) -> bool:
        """The policy asked for a retrain but there was nothing to train on (no labelled rows): none was requested."""
        return self.retrain and self.training is not None and self.training.status == "skipped"

    @property
    def retrain_requested(self) -> bool:
        """A retrain was asked for and can run: what `mlops.retrain.requested` announces."""
        return self.retrain and not self.retrain_skipped

    @property
    def corrupt_files(self) -> list[str]:
        return list(self.window.corrupt_files) if self.window is not None else []

    @property
    def seen_in_training_share(self) -> float | None:
        return None if self.seen_in_training is None else self.seen_in_training.share

    # -- building it ---------------------------------------------------------------------------

    def add_quality(self, quality: QualityReport) -> None:
        """The quality verdict, without the rows (a result holds no frames)."""
        self.quality = replace(quality, good=None)
        if not quality.passed:
            self.status = "quality_failed"

    def add_drift(self, drift: DriftResult, report: Mapping[str, Any]) -> None:
        """The drift verdict and where its HTML report is (`report`: what the Evidently report returned)."""
        self.drift, self.report_path = DriftSummary.of(drift, report), report.get("html_path")

    def add_live_quality(self, live: LiveQuality) -> None:
        self.live_quality = replace(live, labelled=None)

    def window_summary(self) -> WindowSummary:
        """What the retrain policy is told about this window."""
        rows = self.window.rows if self.window is not None else 0
        if self.quality is not None and not self.quality.passed:
            return WindowSummary(rows=rows, quality_failed=True, quality_reason=self.quality.reason[:500])
        live = self.live_quality
        degraded = bool(live is not None and live.degraded)
        pay = self.payoff or {}
        return WindowSummary(rows=rows, drift_share=None if self.drift is None else self.drift.drift_share,
                             dataset_drift=bool(self.drift and self.drift.dataset_drift), quality_degraded=degraded,
                             quality_reason=live.reason if live is not None and degraded else "",
                             payoff_gain=pay.get("gain"), payoff_ci_low=pay.get("ci_low"), payoff_cost=pay.get("cost"),
                             payoff_reason=pay.get("sentence", ""))

    def conclude(self) -> None:
        """The one-line message for the status the run ended in."""
        if self.status == "empty":
            corrupt = len(self.corrupt_files)
            self.message = "the window holds no rows" + (f" ({corrupt} unreadable file(s) skipped)" if corrupt else "")
        elif self.status == "quality_failed" and self.quality is not None:
            self.message = f"data-quality failure: {self.quality.reason}"
        elif self.retrain_skipped and self.training is not None:
            self.message = f"retrain skipped: {self.training.detail}"
        elif self.decision is not None:
            self.message = ("retrain requested: " + "; ".join(self.decision.triggers) if self.decision.retrain
                            else "no retrain: " + self.decision.reasons[-1])

    def state_name(self) -> str:
        """The name of the run's final (Completed) state: what the check found, readable in the runs list."""
        if self.status == "checked":
            return "Retrain skipped" if self.retrain_skipped else "Retrain requested" if self.retrain else "Checked"
        return {"no_champion": "No champion", "empty": "Empty window", "quality_failed": "Quality failed"}[self.status]

    def state_message(self, limit: int = 300) -> str:
        """One line for the run's final state: the verdict, e.g. `checked v1: drift 0.42, hold`."""
        if self.status == "quality_failed" and self.quality is not None:
            text = f"quality failed: {self.quality.reason}"
        elif self.status != "checked":
            text = self.message or self.status.replace("_", " ")
        else:
            drift = "drift not measured" if self.drift is None else f"drift {self.drift.drift_share:.2f}"
            verdict = "retrain skipped" if self.retrain_skipped else "retrain requested" if self.retrain else "hold"
            text = f"checked v{self.model_version}: {drift}, {verdict}"
            live = self.live_quality
            if live is not None and live.degraded:
                text += "; live quality degraded"
            if self.training is not None and self.training.status != "requested":
                text += f"; training {self.training.status}: {self.training.detail}"
        text = " ".join(text.split())
        return text if len(text) <= limit else text[:limit - 3].rstrip() + "..."

    def outcome(self) -> str:
        """The `outcome:` tag: retrain, retrain-skipped, hold, quality-failed, empty or no-champion."""
        if self.status == "checked":
            return "retrain-skipped" if self.retrain_skipped else "retrain" if self.retrain else "hold"
        return self.status.replace("_", "-")

    def retrain_reason(self) -> str:
        triggers = self.decision.triggers if self.decision is not None else []
        return ("drift monitor: " + "; ".join(triggers))[:500]

    # -- what it becomes ---------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The JSON `mlops monitor --json` prints."""
        return {
            "status": self.status, "message": self.message, "model_name": self.model_name,
            "model_version": self.model_version,
            "window": None if self.window is None else self.window.to_dict(),
            "corrupt_files": self.corrupt_files,
            "quality": None if self.quality is None else self.quality.to_dict(),
            "drift": None if self.drift is None else asdict(self.drift),
            "report_path": self.report_path,
            "seen_in_training": None if self.seen_in_training is None else asdict(self.seen_in_training),
            "seen_in_training_share": self.seen_in_training_share,
            "live_quality": None if self.live_quality is None else self.live_quality.to_dict(),
            "decision": None if self.decision is None else self.decision.to_dict(),
            "retrain": self.retrain, "events": self.events.to_dict(),
            "training_file": None if self.training_file is None else asdict(self.training_file),
            "training": None if self.training is None else self.training.to_dict(),
            "mlflow_run_id": self.mlflow_run_id, "monitor_flow_run_id": self.monitor_flow_run_id,
            "config_path": self.config_path,
        }

    def event_payload(self) -> dict[str, Any]:
        """What the decision events carry: why, about which version and window, and what to train on."""
        d, drift, live = self.decision, self.drift, self.live_quality
        return {
            "model_name": self.model_name,
            "model_version": self.model_version,
            "verdict": None if d is None else d.verdict,
            "retrain": self.retrain_requested,
            "retrain_skipped": self.training.detail if self.retrain_skipped and self.training is not None else None,
            "reasons": [] if d is None else d.reasons,
            "triggers": [] if d is None else d.triggers,
            "blocks": [] if d is None else d.blocks,
            "status": self.status,
            "window": None if self.window is None else self.window.to_dict(),
            "drift_share": None if drift is None else drift.drift_share,
            "dataset_drift": bool(drift is not None and drift.dataset_drift),
            "drifted_columns": [] if drift is None else drift.drifted_columns,
            "seen_in_training_share": self.seen_in_training_share,
            "live_quality": None if live is None else {k: v for k, v in live.to_dict().items() if k in (
                "status", "labelled_rows", "metrics", "degraded", "compared_with", "reason")},
            "quality_failures": [] if self.quality is None else self.quality.failures,
            "training_file": None if self.training_file is None else self.training_file.path,
            "config_path": self.config_path,
            "report_path": self.report_path,
            "mlflow_run_id": self.mlflow_run_id,
            "monitor_flow_run_id": self.monitor_flow_run_id,
        }

    def markdown(self) -> str:
        """The decision artifact: verdict and reasons, rows seen in training, skipped files, quality, live
        quality, and the retrain once it ran."""
        d = self.decision
        window = self.window.to_dict() if self.window is not None else {}
        verdict = d.verdict if d is not None else "no_decision"
        head = {"retrain": "**Retrain requested**", "hold": "No retrain", "no_decision": "No decision"}[verdict]
        if self.retrain_skipped:
            head = "**Retrain wanted but skipped** (nothing to train on; no retrain was requested)"
        lines = [f"# Monitor: {self.model_name} v{self.model_version}", "",
                 f"{head} for a window of {window.get('rows', 0):,} rows ({window.get('source')}).", ""]
        lines += [f"- {r}" for r in (d.reasons if d is not None else [])]
        seen = self.seen_in_training
        if seen is not None:
            share = "unknown" if seen.share is None else f"{seen.share:.1%}"
            lines += ["", f"Seen in training (`seen_in_training_share`): {share} ({seen.reason})."]
            if seen.share is not None and seen.share >= 0.5:
                lines.append("Most of this window repeats training rows: drift and live quality here say little "
                             "about new data.")
        if self.corrupt_files:
            lines += ["", f"Skipped {len(self.corrupt_files)} unreadable log file(s): "
                      + ", ".join(f"`{f}`" for f in self.corrupt_files[:10])]
        if self.training is not None:
            lines += ["", f"Training: {self.training.status}: {self.training.detail}"]
        text = "\n".join(lines) + "\n"
        for part in (self.quality, self.live_quality):
            if part is not None:
                text += "\n" + part.to_markdown()
        return text


@dataclass
class MonitoringRecord:
    """The MLflow monitoring run of one check: tags, metrics, files and texts."""

    tags: dict[str, str]
    metrics: dict[str, float]
    files: dict[str, Path]
    texts: dict[str, str]


def mlflow_record(result: MonitorResult, drift: DriftResult | None) -> MonitoringRecord:
    """Tags, metrics and JSON texts of a checked window (`drift`: the engine's full result, for drift.json)."""
    window, quality, d = result.window, result.quality, result.decision
    assert window is not None and quality is not None and d is not None, "only a checked window is recorded"
    tags = {"monitor.source": window.source[:500], "monitor.window_rows": str(window.rows),
            "monitor.window_id": window.window_id or "", "monitor.prefect_flow_run_id": result.monitor_flow_run_id or "",
            "monitor.quality_passed": str(quality.passed).lower(),
            "monitor.verdict": d.verdict, "monitor.retrain": str(d.retrain).lower(),
            "monitor.reasons": json.dumps(d.reasons)[:4900]}
    metrics = {"window_rows": float(window.rows), "quarantine_fraction": quality.quarantine_fraction,
               "corrupt_files": float(len(window.corrupt_files))}
    texts = {"monitor/quality.json": json.dumps(quality.to_dict(), indent=2),
             "monitor/window.json": json.dumps(window.to_dict(), indent=2, default=str),
             "monitor/decision.json": json.dumps(d.to_dict(), indent=2)}
    files: dict[str, Path] = {}
    seen = result.seen_in_training
    if seen is not None:
        tags["monitor.seen_in_training_share"] = "unknown" if seen.share is None else f"{seen.share:.4f}"
        if seen.share is not None:
            metrics["seen_in_training_share"] = seen.share
        texts["monitor/seen_in_training.json"] = json.dumps(asdict(seen), indent=2)
    if drift is not None:
        metrics |= {"drift_share": drift.drift_share, "drifted_columns": float(len(drift.drifted_columns)),
                    "dataset_drift": float(drift.dataset_drift)}
        metrics |= {f"drift_score.{c.column}": c.score for c in drift.columns if c.score is not None}
        if drift.prediction is not None and drift.prediction.score is not None:
            metrics[f"drift_score.{drift.prediction.column}"] = drift.prediction.score
        texts["monitor/drift.json"] = json.dumps(drift.to_dict(), indent=2)
        tags |= {"monitor.drift_share": f"{drift.drift_share:.4f}",
                 "monitor.dataset_drift": str(drift.dataset_drift).lower(),
                 "monitor.drifted_columns": ",".join(drift.drifted_columns)[:4900]}
    live = result.live_quality
    if live is not None:
        metrics |= {f"live_{k}": v for k, v in live.metrics.items()}
        metrics["labelled_rows"] = float(live.labelled_rows)
        texts["monitor/live_quality.json"] = json.dumps(live.to_dict(), indent=2)
    if result.report_path:
        files["report"] = Path(result.report_path)
    return MonitoringRecord(tags, metrics, files, texts)
