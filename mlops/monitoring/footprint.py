"""What a champion stored about its training data, read back for monitoring: the hashes of its training rows
(how much of a window it trained on) and its holdout slice metrics (live quality compared slice by slice)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from mlops.core.rowkeys import HASHES_ARTIFACT, RowHashSet
from mlops.monitoring.live_quality import SLICE_METRICS_ARTIFACT
from mlops.registry.versions import download_artifact


@dataclass
class TrainingFootprint:
    """A version's training row hashes and holdout slice metrics; None where it stored nothing (an older
    version) or the file is unreadable (`unreadable` then says which and why, one sentence each)."""

    row_hashes: RowHashSet | None
    slice_metrics: dict[str, Any] | None
    unreadable: list[str] = field(default_factory=list)


def training_footprint(run_id: str, version: str) -> TrainingFootprint:
    """The footprint version `version` (training run `run_id`) stored with its model."""
    hashes = slices = None
    unreadable = []
    path = download_artifact(run_id, HASHES_ARTIFACT)
    if path is not None:
        try:
            hashes = RowHashSet.load(path)
        except (OSError, ValueError, KeyError) as exc:
            unreadable.append(f"Training row hashes of v{version} unreadable ({exc}); overlap unknown")
    path = download_artifact(run_id, SLICE_METRICS_ARTIFACT)
    if path is not None:
        try:
            slices = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            unreadable.append(f"Holdout slice metrics of v{version} unreadable ({exc}); live quality compared overall")
    return TrainingFootprint(hashes, slices, unreadable)
