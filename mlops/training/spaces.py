"""The search spaces: the default space of every family, a search's first trials (the estimator's defaults,
then boosting's portfolio of shapes) and the local moves from the best of them. Pure: no fitting here.

Default search spaces (used for a family listed without `search_space`; the one place they are written)
--------------------------------------------------------------------------------------------------------
=========================  ======================================================================================
family                     space (both tasks unless said)
=========================  ======================================================================================
hist_gradient_boosting     learning_rate loguniform 0.01-0.5; max_iter int (log) 50-1000 with early stopping
                           (fixed: early_stopping true, n_iter_no_change 20, validation_fraction 0.1);
                           max_leaf_nodes int (log) 2-255; max_depth choice none/4/6/8/12; min_samples_leaf
                           int (log) 2-200; l2_regularization loguniform 1e-4-10; max_features uniform 0.4-1.0
random_forest              n_estimators int (log) 50-500; max_depth choice none/8/16/32; min_samples_leaf int
                           (log) 1-50; max_features choice sqrt/0.25/0.5/0.75/1.0
logistic_regression        C loguniform 1e-4-100; l1_ratio choice 0 (L2) / 0.5 (elastic net) / 1 (L1); the saga
                           solver is used when l1_ratio > 0
ridge                      alpha loguniform 1e-3-1000
linear_regression          nothing to tune: one configuration (the summary says space "none")
=========================  ======================================================================================

A user's `search_space` replaces the default (write a narrower range to narrow it); `search_space: {}` means
no search, one configuration; a parameter fixed in `params` is left out of the default space. The first
trial of every search is the estimator's own default (moved into the space's range where it lies outside),
so a search never starts from a worse place than no search; with early stopping on, the next are the same
with the iterations at the top of their range (early stopping chooses how many), then boosting's portfolio
of shapes (shallow trees over many rounds, wide trees learning slowly, stumps: `PORTFOLIO`), before the
sampler's own trials; once they are scored, the best is refined by halving and doubling its leaves and its
learning rate while that improves it (`moves`).
"""

from __future__ import annotations

from typing import Any

from mlops.core.config import ModelSpec, Param
from mlops.training.trials import make_estimator


def _p(type_: str, low: float | None = None, high: float | None = None, values: list[Any] | None = None,
       log: bool = False) -> Param:
    return Param(type=type_, low=low, high=high, values=values, log=log)  # type: ignore[arg-type]


DEFAULT_SPACES: dict[str, dict[str, Param]] = {
    "hist_gradient_boosting": {
        "learning_rate": _p("loguniform", 0.01, 0.5),
        "max_iter": _p("int", 50, 1000, log=True),
        "max_leaf_nodes": _p("int", 2, 255, log=True),
        "max_depth": _p("choice", values=[None, 4, 6, 8, 12]),
        "min_samples_leaf": _p("int", 2, 200, log=True),
        "l2_regularization": _p("loguniform", 1e-4, 10.0),
        "max_features": _p("uniform", 0.4, 1.0),
    },
    "random_forest": {
        "n_estimators": _p("int", 50, 500, log=True),
        "max_depth": _p("choice", values=[None, 8, 16, 32]),
        "min_samples_leaf": _p("int", 1, 50, log=True),
        "max_features": _p("choice", values=["sqrt", 0.25, 0.5, 0.75, 1.0]),
    },
    "logistic_regression": {
        "C": _p("loguniform", 1e-4, 100.0),
        "l1_ratio": _p("choice", values=[0.0, 0.5, 1.0]),
    },
    "ridge": {"alpha": _p("loguniform", 1e-3, 1000.0)},
    "linear_regression": {},
}
# fixed parameters that go with a default space (a user's params win)
DEFAULT_FIXED: dict[str, dict[str, Any]] = {
    "hist_gradient_boosting": {"early_stopping": True, "n_iter_no_change": 20, "validation_fraction": 0.1},
}
SPACE_LABELS = {"default": "default space", "config": "config space", "none": "none",
                "reused": "champion's configuration"}


def resolve_space(spec: ModelSpec) -> tuple[dict[str, Param], dict[str, Any], str]:
    """The space a family searches, its fixed parameters, and where the space comes from: `default` (listed
    without a search_space), `config` (the user's), `none` (search_space: {} or nothing to tune)."""
    if spec.search_space is None:
        space = {k: v for k, v in DEFAULT_SPACES[spec.family].items() if k not in spec.params}
        fixed = DEFAULT_FIXED.get(spec.family, {}) | dict(spec.params)
        return space, fixed, "default" if space else "none"
    return dict(spec.search_space), dict(spec.params), "config" if spec.search_space else "none"


def optuna_distribution(p: Param) -> Any:
    """A Param as an Optuna distribution."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if p.type == "choice":
        return CategoricalDistribution(list(p.values or []))
    assert p.low is not None and p.high is not None
    if p.type == "int":
        return IntDistribution(int(p.low), int(p.high), log=p.log)
    return FloatDistribution(p.low, p.high, log=p.type == "loguniform")


def default_start(family: str, task: str, space: dict[str, Param], fixed: dict[str, Any]) -> dict[str, Any]:
    """The estimator's own defaults for the searched parameters, a number outside its range moved to the
    nearest end (HistGradientBoosting's l2_regularization 0 to the low end of a log range); a default choice
    that is not among the space's values is left to the sampler (the first trial)."""
    defaults = make_estimator(family, task, fixed, 0).get_params()
    nearest = {}
    for name, p in space.items():
        value = defaults.get(name)
        if p.type != "choice" and isinstance(value, (int, float)) and not isinstance(value, bool):
            value = min(max(value, p.low), p.high)  # type: ignore[type-var]
        nearest[name] = value
    return _inside(space, nearest)


# Further first trials for boosting with early stopping, a small portfolio of shapes no single default covers
# (AutoML systems start from such portfolios): shallow trees over many rounds, for targets shaped by a few
# inputs at a time; wide trees learning slowly, for targets driven by interactions; stumps (one split a tree,
# so the model is a sum of one function per input, as in additive models), for targets that add up effects
# of single inputs. Early stopping picks the rounds; a value outside the space searched is left out.
PORTFOLIO: dict[str, list[dict[str, Any]]] = {
    "hist_gradient_boosting": [
        {"max_leaf_nodes": 7, "learning_rate": 0.05},
        {"max_leaf_nodes": 127, "learning_rate": 0.05, "min_samples_leaf": 20},
        {"max_leaf_nodes": 2, "learning_rate": 0.5},
    ],
}


# Once the starts are scored, the best configuration so far is moved one step each way along the axes the
# portfolio spans (halved and doubled), again from a move that became the best, until no move improves:
# a pattern search, as AutoML systems refine their best start locally, since a handful of sampled trials
# rarely lands closer to the best shape than the best start already is. Then the sampler goes on alone.
LOCAL_AXES: dict[str, tuple[str, ...]] = {"hist_gradient_boosting": ("max_leaf_nodes", "learning_rate")}


def moves(family: str, space: dict[str, Param], best: dict[str, Any]) -> list[dict[str, Any]]:
    """`best` with one of its family's `LOCAL_AXES` halved or doubled (rounded for an integer, kept within the
    space; an axis that is not searched or not set is left alone)."""
    out = []
    for name in LOCAL_AXES.get(family, ()):
        p, value = space.get(name), best.get(name)
        if p is None or p.type == "choice" or not isinstance(value, (int, float)):
            continue
        for factor in (0.5, 2.0):
            moved = _inside(space, {name: round(value * factor) if p.type == "int" else value * factor})
            if moved and moved[name] != value:
                out.append(best | moved)
    return out


def _inside(space: dict[str, Param], values: dict[str, Any]) -> dict[str, Any]:
    """The values that lie inside the space (a choice among its values, a number within its range)."""
    out = {}
    for name, value in values.items():
        p = space.get(name)
        if p is None:
            continue
        if p.type == "choice":
            if any(value == v and type(value) is type(v) for v in p.values or []):
                out[name] = value
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and p.low <= value <= p.high:  # type: ignore[operator]
            out[name] = int(value) if p.type == "int" else float(value)
    return out


def starts(family: str, task: str, space: dict[str, Param], fixed: dict[str, Any]) -> list[dict[str, Any]]:
    """The first trials: the estimator's defaults (the cheapest, so first), then for boosting with early
    stopping the same with the iterations at the top of their range (early stopping chooses how many) and the
    portfolio's shapes with those iterations."""
    start = default_start(family, task, space, fixed)
    out = [start] if start else []
    iters = space.get("max_iter")
    if fixed.get("early_stopping") is True and iters is not None and iters.high:
        many = {"max_iter": int(iters.high)}
        for shape in [{}, *PORTFOLIO.get(family, [])]:
            trial = start | _inside(space, shape | many)
            if trial not in out:
                out.append(trial)
    return out
