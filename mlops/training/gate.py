"""The promotion gate: small functions that return a verdict with reasons, thresholds from config.

A challenger passes only when (a) every absolute threshold holds, (b) against the champion on the
same holdout a paired bootstrap shows it is not significantly worse and beats it by the configured
minimum, (c) no configured slice regresses beyond tolerance against the champion on the same slice,
and (d) the leakage check finds no target in disguise (mlops.training.leakage). A threshold in (a) is
waived only when the champion misses it by more on the same holdout and the challenger scores better
there; (b) then decides (`gate.replace_failing_champion`). With no champion: (a), (d),
and (c) asks whether the model is any use on each slice (better than a trivial within-slice
baseline); a slice is never judged against the overall metric, which a predictive slice column
lowers within every slice for champion and challenger alike.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

from mlops.core.config import METRIC_DIRECTION, GateConfig
from mlops.training.evaluation import BootstrapResult


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


def fmt(x: float, digits: int = 4, sign: bool = False) -> str:
    """A number rounded for a verdict, never `-0.0000`: rounded first, then a negative zero made plain."""
    if not math.isfinite(x):
        return "nan" if math.isnan(x) else ("+inf" if x > 0 and sign else "inf" if x > 0 else "-inf")
    r = round(float(x), digits) + 0.0  # adding 0.0 turns -0.0 into 0.0
    return f"{r:+.{digits}f}" if sign else f"{r:.{digits}f}"


def _better_or_equal(metric: str, value: float, bound: float) -> bool:
    return value >= bound if METRIC_DIRECTION[metric] else value <= bound


def check_thresholds(metrics: dict[str, float], thresholds: dict[str, float]) -> list[Check]:
    """(a) every configured absolute threshold holds."""
    out = []
    for m, bound in sorted(thresholds.items()):
        v = metrics.get(m, float("nan"))
        ok = math.isfinite(v) and _better_or_equal(m, v, bound)
        op = ">=" if METRIC_DIRECTION[m] else "<="
        out.append(Check(f"threshold {m}", ok, f"{fmt(v)} {'meets' if ok else 'misses'} {op} {bound:g}"))
    return out


def waive_for_failing_champion(checks: list[Check], challenger: dict[str, float], champion: dict[str, float],
                               thresholds: dict[str, float], b: BootstrapResult, champion_version: str | None) -> None:
    """A threshold the challenger misses is waived when the champion misses it by more on the same holdout and
    the challenger scores better there (the bootstrap's point estimate above 0): a floor the champion misses by
    more is no reason to keep it, so the comparison with it decides, as above the floor (not worse by the
    bootstrap's lower bound, better by `min_improvement`). Keeping the champion would serve the worse of two models
    below the floor, as after an abrupt change that the newest rows, held out, hide from the challenger too
    (the model served is refitted on them); a significance bar here kept such champions a window longer."""
    if not (math.isfinite(b.delta) and b.delta > 0):
        return
    for i, c in enumerate(checks):
        m = c.name.removeprefix("threshold ")
        if c.passed or not c.name.startswith("threshold ") or m not in thresholds:
            continue
        mine, theirs = challenger.get(m, float("nan")), champion.get(m, float("nan"))
        if not (math.isfinite(mine) and math.isfinite(theirs)) or not _better_or_equal(m, mine, theirs) or mine == theirs:
            continue
        checks[i] = Check(c.name, True, f"{c.detail}, waived: champion v{champion_version} has {fmt(theirs)} on this "
                                        "holdout, so the comparison with it decides (gate.replace_failing_champion)")


def check_champion(b: BootstrapResult, cfg: GateConfig) -> list[Check]:
    """(b) not significantly worse than the champion, and better by at least min_improvement."""
    lvl = f"{cfg.confidence:.0%}"
    not_worse = math.isfinite(b.ci_low) and b.ci_low >= -cfg.noninferiority_margin
    beats = math.isfinite(b.delta) and (b.delta >= cfg.min_improvement if cfg.min_improvement > 0 else b.delta > 0)
    return [
        Check(
            "not worse than champion",
            not_worse,
            f"{b.metric} {fmt(b.challenger)} vs champion {fmt(b.champion)}; improvement {fmt(b.delta, sign=True)}, "
            f"{lvl} lower bound {fmt(b.ci_low, sign=True)} {'>=' if not_worse else '<'} "
            f"{-cfg.noninferiority_margin + 0.0:g} (paired bootstrap, {b.samples} resamples, P(worse)={fmt(b.p_worse, 3)})",
        ),
        Check(
            "beats champion",
            beats,
            f"improvement {fmt(b.delta, sign=True)} {'meets' if beats else 'misses'} required "
            f"{'>= ' + format(cfg.min_improvement, 'g') if cfg.min_improvement > 0 else '> 0'}",
        ),
    ]


def units(metric: str) -> str:
    """What a metric is measured in, for verdict text."""
    return "target units" if metric in {"rmse", "mae"} else f"{metric} points"


def describe_tolerance(metric: str, tolerance: float, mode: str, ref: float | None = None) -> str:
    """The slice tolerance in words, with its units: a share of the baseline or the metric's own units."""
    if mode == "relative":
        of = f"the champion's {fmt(ref)}" if ref is not None else "the champion's value"
        return f"within {tolerance:.0%} of {of}"
    return f"within {tolerance:g} {units(metric)}"


def _allowed_drop(tolerance: float, mode: str, ref: float) -> float:
    return tolerance * abs(ref) if mode == "relative" else tolerance


def check_slices(
    metric: str,
    column: str,
    challenger: dict[str, tuple[float, int]],
    champion: dict[str, tuple[float, int]],
    tolerance: float,
    mode: str = "relative",
) -> list[Check]:
    """(c) with a champion: no slice falls behind the champion on the same slice by more than the tolerance,
    a share of the champion's slice value (relative) or in the metric's own units (absolute)."""
    if not isinstance(champion, dict):
        raise TypeError("check_slices compares with the champion's slices; use check_slice_usefulness without one")
    higher = METRIC_DIRECTION[metric]
    worst: tuple[str, float, float, float] | None = None  # value, drop, champion's value, challenger's value
    failed: list[str] = []
    for value, (m, _rows) in challenger.items():
        if value not in champion:
            continue
        ref = champion[value][0]
        drop = (ref - m) if higher else (m - ref)
        allowed = _allowed_drop(tolerance, mode, ref)
        if worst is None or drop - allowed > worst[1] - _allowed_drop(tolerance, mode, worst[2]):
            worst = (value, drop, ref, m)
        if drop > allowed + 1e-12:
            failed.append(f"{column}={value}: {metric} {fmt(m)} vs champion {fmt(ref)} "
                          f"(worse by {fmt(drop)}, allowed {fmt(allowed)}: "
                          f"{describe_tolerance(metric, tolerance, mode, ref)})")
    if failed:
        return [Check(f"slice {column}", False, "falls behind the champion on the same slice: " + "; ".join(failed))]
    if worst is None:
        return [Check(f"slice {column}", True, "no slice with enough rows to compare with the champion")]
    value, drop, ref, m = worst
    change = "worse by " + fmt(drop) if drop > 0 else "better by " + fmt(-drop)
    return [Check(f"slice {column}", True,
                  f"every slice {describe_tolerance(metric, tolerance, mode)} on the same slice; closest "
                  f"{column}={value}: {metric} {fmt(m)} vs champion {fmt(ref)} ({change}, "
                  f"{describe_tolerance(metric, tolerance, mode, ref)})")]


def check_slice_usefulness(
    metric: str,
    column: str,
    challenger: dict[str, tuple[float, int]],
    trivial: dict[str, float],
    overall: float | None = None,
) -> list[Check]:
    """(c) with no champion: the model must beat, on every slice, the best constant prediction for that
    slice (mlops.training.evaluation.trivial_metric); the overall value is reported for information only."""
    higher = METRIC_DIRECTION[metric]
    info = f"; overall {metric} {fmt(overall)}, for information" if overall is not None else ""
    useless: list[str] = []
    closest: tuple[str, float, float, float] | None = None  # value, margin, metric, baseline
    for value, (m, _rows) in challenger.items():
        if value not in trivial:
            continue
        base = trivial[value]
        margin = (m - base) if higher else (base - m)
        if closest is None or margin < closest[1]:
            closest = (value, margin, m, base)
        if not margin > 1e-12:
            useless.append(f"{column}={value}: {metric} {fmt(m)} vs {fmt(base)} for {_trivial_name(metric)}")
    if useless:
        return [Check(f"slice {column}", False,
                      "no better than a trivial baseline within the slice: " + "; ".join(useless) + info)]
    if closest is None:
        return [Check(f"slice {column}", True, "no slice with enough rows to judge" + info)]
    value, _margin, m, base = closest
    return [Check(f"slice {column}", True,
                  f"no champion: every slice beats its trivial within-slice baseline; closest {column}={value}: "
                  f"{metric} {fmt(m)} vs {fmt(base)} for {_trivial_name(metric)}{info}")]


def _trivial_name(metric: str) -> str:
    return {
        "roc_auc": "a constant score",
        "accuracy": "always the slice's majority class",
        "f1": "always the same class",
        "log_loss": "the slice's class shares",
        "r2": "the slice's mean",
        "rmse": "the slice's mean (its standard deviation)",
        "mae": "the slice's median",
    }.get(metric, "a constant prediction")


def decide(checks: list[Check]) -> GateVerdict:
    v = GateVerdict(True)
    for c in checks:
        v.add(c)
    return v
