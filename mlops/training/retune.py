"""Refit or re-tune? A retrain reuses the champion's tuned configuration until the data outgrows it.

Hyperparameters found on N rows stay good on a little more data of the same kind; what a retrain
mostly buys is the newer rows. So a retrain (a training file that marks its new rows, as the retrain
flow and the backtest build it) refits the champion's configuration, family and hyperparameters,
on its rows, and the search runs again only when it could find something else:

- the training rows reached `RETUNE_GROWTH` times the rows the configuration was tuned on (settings
  that suit 5,000 rows, leaf sizes and iterations say, are not those for 10,000);
- the search itself changed (families, spaces, strategy, trials, budget, folds, scoring: its digest);
- the champion carries no record of its tuning, or its model is not a pipeline this project built;
- `search.retune: always`.

The gate judges a refitted challenger exactly as a tuned one, so a configuration that no longer fits
is rejected like any other. Pure: no Prefect, no MLflow.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass
from typing import Any

from mlops.core.config import PipelineConfig
from mlops.training.spaces import resolve_space
from mlops.training.tuning import FamilyResult

RETUNE_GROWTH = 2.0
TUNED_ROWS_TAG = "lineage.tuned_rows"  # the rows the configuration was searched on (carried by refits)
SEARCH_DIGEST_TAG = "lineage.search_digest"
CONFIGURATION_TAG = "lineage.configuration"  # "tuned" or "reused from v<N>"


def search_digest(cfg: PipelineConfig) -> str:
    """A short digest of what a search would explore: the families with their spaces and parameters, and the
    search settings that change its result (not `n_jobs`, `backend`: they change where it runs)."""
    search = cfg.search.model_dump(include={"strategy", "n_trials", "time_budget", "cv_folds", "scoring", "seed"})
    body = {"task": cfg.task, "metric": cfg.primary_metric, "search": search,
            "models": [m.model_dump(mode="json") for m in cfg.models]}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class Reuse:
    """The decision for one training: reuse (with the configuration's family and unfitted estimator, and the rows
    it was tuned on) or search, and why, in one sentence."""

    reuse: bool
    reason: str
    version: str | None = None
    family: str | None = None
    estimator: Any = None
    tuned_rows: int = 0

    def lineage(self, rows: int, digest: str) -> dict[str, str]:
        """The `lineage.*` records of the new version: what its configuration's tuning saw, and where it came from."""
        return {"tuned_rows": str(self.tuned_rows if self.reuse else rows), "search_digest": digest,
                "configuration": f"reused from v{self.version}" if self.reuse else "tuned"}


def plan_retune(cfg: PipelineConfig, champion: Any, rows: int, retraining: bool) -> Reuse:
    """Whether this training refits the champion's configuration on `rows` training rows or searches again.
    `champion`: None, or what holds a version (its `model`, version `tags` and `version`: a registry bundle, a
    backtest champion)."""
    if cfg.search.retune == "always":
        return Reuse(False, "search.retune is always: the search runs on every training")
    if not retraining:
        return Reuse(False, "not a retrain (no new-row marker): the search runs")
    if champion is None:
        return Reuse(False, "no champion to take a configuration from: the search runs")
    champion_model, champion_tags, champion_version = champion.model, champion.tags, str(champion.version)
    try:
        tuned = int(champion_tags.get(TUNED_ROWS_TAG, ""))
    except ValueError:
        return Reuse(False, f"champion v{champion_version} has no record of the rows it was tuned on: the search runs")
    if champion_tags.get(SEARCH_DIGEST_TAG) != search_digest(cfg):
        return Reuse(False, f"the search changed since champion v{champion_version} was tuned: the search runs")
    family = champion_tags.get("family")
    estimator = getattr(champion_model, "named_steps", {}).get("model")
    if family not in {m.family for m in cfg.models} or estimator is None:
        return Reuse(False, f"champion v{champion_version}'s model is not one of the config's families: the search runs")
    if rows >= RETUNE_GROWTH * tuned:
        return Reuse(False, f"{rows:,} training rows are at least {RETUNE_GROWTH:g}x the {tuned:,} champion "
                            f"v{champion_version}'s configuration was tuned on: the search runs again")
    return Reuse(True, f"champion v{champion_version}'s {family} configuration (tuned on {tuned:,} rows) is refitted on "
                       f"{rows:,} rows, under {RETUNE_GROWTH:g}x: no search (search.retune: always searches)",
                 champion_version, family, estimator, tuned)


def reused_result(reuse: Reuse, preprocessor: Any, X: Any, y: Any, cfg: PipelineConfig, scoring: str) -> FamilyResult:
    """The champion's configuration as the search's one result, fitted on every training row as a search's winner
    is: this run's feature pipeline (from this run's contract) in front of a fresh copy of the champion's
    estimator. No trial ran, so there is no cross-validated score."""
    from sklearn.base import clone
    from sklearn.pipeline import Pipeline

    started = time.perf_counter()

    spec = next(m for m in cfg.models if m.family == reuse.family)
    space, _, _ = resolve_space(spec)
    estimator = clone(reuse.estimator)
    given = estimator.get_params(deep=False)
    params = {k: given[k] for k in space if k in given}
    pipe = Pipeline([("features", clone(preprocessor)), ("model", estimator)]).fit(X, y)
    return FamilyResult(family=str(reuse.family), best_estimator=pipe, best_params=params, best_score=math.nan,
                        cv_scores=[], scoring=scoring, n_trials=0, seconds=time.perf_counter() - started,
                        space="reused",
                        stopped=f"configuration reused from v{reuse.version}")
