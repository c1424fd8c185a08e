"""The model card: a markdown page generated for every registered version."""

from __future__ import annotations

from typing import Any

from mlops.core.config import PipelineConfig
from mlops.core.contract import DataContract
from mlops.training.gate import GateVerdict


def model_card(
    cfg: PipelineConfig,
    version: str | None,
    family: str,
    best_params: dict[str, Any],
    metrics: dict[str, float],
    verdict: GateVerdict,
    contract: DataContract,
    lineage: dict[str, str],
    data_summary: dict[str, Any],
) -> str:
    feats = [c for c in contract.columns if c.role in {"feature", "timestamp"}]
    rows = "\n".join(
        f"| {c.name} | {c.kind} | "
        + (f"{c.min:.4g} .. {c.max:.4g}" if c.min is not None and c.max is not None else
           (", ".join(c.allowed[:8]) + (" ..." if len(c.allowed) > 8 else "") if c.allowed else ""))
        + f" | {c.max_null_fraction:.2%} |"
        for c in feats
    )
    metric_rows = "\n".join(f"| {k} | {v:.4f} |" for k, v in metrics.items())
    params = ", ".join(f"`{k}={v}`" for k, v in best_params.items()) or "defaults"
    lineage_rows = "\n".join(f"| {k} | `{v}` |" for k, v in lineage.items())
    return f"""# Model card: {cfg.registry.model_name} v{version or '?'}

**Use case**: `{cfg.name}` ({cfg.task}), target `{cfg.target}`.
**Model**: {family} inside a scikit-learn Pipeline whose first step is the fitted feature transform; best
hyperparameters {params}.

## Intended use
Scores rows shaped like the training data below. Inputs are checked against the data contract; rows
outside it are rejected (serving) or quarantined (batch scoring, training).

## Training data
{data_summary.get('rows_accepted', '?')} rows accepted of {data_summary.get('rows_checked', '?')} checked;
{data_summary.get('rows_quarantined', 0)} quarantined. Split: {cfg.split.test_size:.0%} holdout
({'time-ordered on ' + cfg.timestamp_column if cfg.timestamp_column else 'seeded random, seed ' + str(cfg.split.seed)}).
{_refit_line(cfg)}
{_contract_line(contract)}

| feature | kind | range / categories | max nulls |
| --- | --- | --- | --- |
{rows}

## Holdout metrics
{'Measured on the model fitted without the holdout, before the refit.' if cfg.refit else ''}

| metric | value |
| --- | --- |
{metric_rows}

## Promotion gate
{verdict.to_markdown()}
## Lineage
| what | value |
| --- | --- |
{lineage_rows}

## Limitations
Quality holds only while inputs resemble the training data: the monitoring flow compares live inputs
with this version's reference sample and asks for retraining when they drift.
"""


def _refit_line(cfg: PipelineConfig) -> str:
    if not cfg.refit:
        return ("The registered model is the one the gate judged (fitted on the training rows only; `split.refit` "
                "off), so the holdout's rows are not in it.")
    newest = ("the holdout is the newest rows, so the registered model has learned from them too"
              if cfg.timestamp_column else "the holdout is a seeded random share, now learned from as well")
    return ("**Refit**: after the gate, the chosen configuration was fitted again on train + holdout, every "
            f"labelled row ({newest}); the holdout metrics and the gate judged the model fitted without them "
            "(`split.refit`, on by default).")


def _contract_line(contract: DataContract) -> str:
    return f"**Data contract**: {contract.changes.summary()}." if contract.changes is not None else ""


def card_summary(cfg: PipelineConfig, family: str, metrics: dict[str, float], verdict: GateVerdict,
                 contract: DataContract, card_link: str | None = None) -> str:
    """The version's description: one line a registry table can show (verdict first, then the primary metric,
    the family, refit, the contract change), then where the full card is (a link when `card_link` is given)."""
    metric = cfg.primary_metric
    value = metrics.get(metric)
    if verdict.passed:
        gate = "Gate passed"
    else:
        failures = verdict.failures
        gate = "Gate REJECTED" + (f" ({failures[0][:120]})" if failures else "")
    parts = [gate, f"{metric} {value:.4f}" if value is not None else f"{metric} not measured", family,
             "refit on train + holdout" if cfg.refit else "no refit"]
    parts.append("contract " + (contract.changes.summary(160) if contract.changes is not None else "as before"))
    card = f"[card/model_card.md]({card_link})" if card_link else "`card/model_card.md` on the source run"
    return " · ".join(parts) + f"\n\nModel card: {card}"
