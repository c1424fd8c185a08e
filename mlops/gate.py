"""The promotion gate: small functions that return a verdict with reasons, thresholds from config.

A challenger passes only when (a) every absolute threshold holds, (b) against the champion on the
same holdout a paired bootstrap shows it is not significantly worse and beats it by the configured
minimum, and (c) no configured slice regresses beyond tolerance. With no champion: (a) and (c),
where (c) compares each slice with the challenger's own overall metric.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

from mlops.config import METRIC_DIRECTION, GateConfig
from mlops.evaluation import BootstrapResult


@dataclass
class Check:
    name: str
    passed: bool
    detail: str


@dataclass
class GateVerdict:
    passed: bool
    checks: list[Check] = field(default_factory=list)

    @property
    def reasons(self) -> list[str]:
        return [f"{'PASS' if c.passed else 'FAIL'} {c.name}: {c.detail}" for c in self.checks]

    @property
    def failures(self) -> list[str]:
        return [f"{c.name}: {c.detail}" for c in self.checks if not c.passed]

    def add(self, check: Check) -> None:
        self.checks.append(check)
        self.passed = self.passed and check.passed

    def to_json(self) -> str:
        return json.dumps({"passed": self.passed, "checks": [asdict(c) for c in self.checks]})

    def to_markdown(self) -> str:
        head = "**PASSED**" if self.passed else "**REJECTED**"
        rows = "\n".join(f"| {'pass' if c.passed else 'FAIL'} | {c.name} | {c.detail} |" for c in self.checks)
        return f"Gate verdict: {head}\n\n| result | check | detail |\n| --- | --- | --- |\n{rows}\n"


def _better_or_equal(metric: str, value: float, bound: float) -> bool:
    return value >= bound if METRIC_DIRECTION[metric] else value <= bound


def check_thresholds(metrics: dict[str, float], thresholds: dict[str, float]) -> list[Check]:
    """(a) every configured absolute threshold holds."""
    out = []
    for m, bound in sorted(thresholds.items()):
        v = metrics.get(m, float("nan"))
        ok = math.isfinite(v) and _better_or_equal(m, v, bound)
        op = ">=" if METRIC_DIRECTION[m] else "<="
        out.append(Check(f"threshold {m}", ok, f"{v:.4f} {'meets' if ok else 'misses'} {op} {bound:g}"))
    return out


def check_champion(b: BootstrapResult, cfg: GateConfig) -> list[Check]:
    """(b) not significantly worse than the champion, and better by at least min_improvement."""
    lvl = f"{cfg.confidence:.0%}"
    not_worse = math.isfinite(b.ci_low) and b.ci_low >= -cfg.noninferiority_margin
    beats = math.isfinite(b.delta) and (b.delta >= cfg.min_improvement if cfg.min_improvement > 0 else b.delta > 0)
    return [
        Check(
            "not worse than champion",
            not_worse,
            f"{b.metric} {b.challenger:.4f} vs champion {b.champion:.4f}; improvement {b.delta:+.4f}, "
            f"{lvl} lower bound {b.ci_low:+.4f} {'>=' if not_worse else '<'} -{cfg.noninferiority_margin:g} "
            f"(paired bootstrap, {b.samples} resamples, P(worse)={b.p_worse:.3f})",
        ),
        Check(
            "beats champion",
            beats,
            f"improvement {b.delta:+.4f} {'meets' if beats else 'misses'} required "
            f"{'>= ' + format(cfg.min_improvement, 'g') if cfg.min_improvement > 0 else '> 0'}",
        ),
    ]


def check_slices(
    metric: str,
    column: str,
    challenger: dict[str, tuple[float, int]],
    baseline: dict[str, tuple[float, int]] | float,
    tolerance: float,
) -> list[Check]:
    """(c) no slice regresses beyond tolerance against the baseline (champion's slice, or overall)."""
    higher = METRIC_DIRECTION[metric]
    worst: tuple[str, float, float] | None = None
    failed: list[str] = []
    for value, (m, _rows) in challenger.items():
        if isinstance(baseline, dict):
            if value not in baseline:
                continue
            ref = baseline[value][0]
        else:
            ref = baseline
        drop = (ref - m) if higher else (m - ref)
        if worst is None or drop > worst[1]:
            worst = (value, drop, ref)
        if drop > tolerance:
            failed.append(f"{column}={value}: {metric} {m:.4f} vs {ref:.4f} (regression {drop:.4f})")
    against = "champion" if isinstance(baseline, dict) else "overall"
    if failed:
        return [Check(f"slice {column}", False, f"regresses beyond {tolerance:g} vs {against}: " + "; ".join(failed))]
    if worst is None:
        return [Check(f"slice {column}", True, "no slice with enough rows to compare")]
    return [Check(f"slice {column}", True,
                  f"worst slice {column}={worst[0]} regression {worst[1]:+.4f} <= {tolerance:g} vs {against}")]


def decide(checks: list[Check]) -> GateVerdict:
    v = GateVerdict(True)
    for c in checks:
        v.add(c)
    return v
