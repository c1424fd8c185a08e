"""Bad search input is one sentence naming the field, before any work; the spaces and the budget as written."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mlops.core.config import load_config
from mlops.core.errors import ConfigError
from tests.conftest import small_config


def _load(tmp_path: Path, **overrides):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(small_config(**overrides)))
    return load_config(path)


def _hgb(**spec):
    return [{"family": "hist_gradient_boosting", **spec}]


@pytest.mark.parametrize(("overrides", "pattern"), [
    ({"models": _hgb(search_space={"max_leaf_nodes": {"type": "int", "low": 64, "high": 8}})},
     r"field 'models\.0\.search_space\.max_leaf_nodes': low \(64\) must be below high \(8\)$"),
    ({"models": _hgb(search_space={"leaves": {"type": "int", "low": 8, "high": 64}})},
     r"field 'models\.0\.search_space': 'leaves' is not a hyperparameter of hist_gradient_boosting \(known: .*"
     r"max_leaf_nodes"),
    ({"models": _hgb(params={"learning_rate": "fast"})},
     r"field 'models\.0\.params': learning_rate: The 'learning_rate' parameter of HistGradientBoosting\w+ must be"),
    ({"models": [{"family": "random_forest", "params": {"n_jobs": "all"}}]},
     r"field 'models\.0\.params': n_jobs: .*must be an instance of 'int' or None\. Got 'all' instead"),
    ({"models": _hgb(params={"max_iter": 50}, search_space={"max_iter": {"type": "int", "low": 10, "high": 99}})},
     r"'max_iter' is both fixed \(params\) and searched \(search_space\)"),
    ({"models": _hgb(search_space={"learning_rate": {"type": "uniform", "low": -1, "high": 0.5}})},
     r"learning_rate: .*range \(0\.0, inf\)\. Got -1\.0 instead"),
    ({"search": {"time_budget": 0}}, r"field 'search\.time_budget': Input should be greater than 0"),
    ({"search": {"strategy": "halving", "time_budget": 30}}, r"field 'search': time_budget needs strategy tpe or random"),
])
def test_bad_search_input_is_one_sentence_naming_the_field(tmp_path: Path, overrides, pattern) -> None:
    with pytest.raises(ConfigError, match=pattern) as err:
        _load(tmp_path, **overrides)
    assert "\n" not in str(err.value) and "Value error" not in str(err.value)


def test_spaces_left_out_empty_and_written_are_three_things(tmp_path: Path) -> None:
    from mlops.training.spaces import DEFAULT_SPACES, resolve_space

    cfg = _load(tmp_path, models=[
        {"family": "hist_gradient_boosting", "params": {"max_iter": 200}},
        {"family": "random_forest", "search_space": {}},
        {"family": "logistic_regression", "search_space": {"C": {"type": "loguniform", "low": 0.1, "high": 1}}}],
        search={"time_budget": 20})
    (hgb, hgb_fixed, hgb_src), (_, _, rf_src), (lr, _, lr_src) = (resolve_space(s) for s in cfg.models)
    assert hgb_src == "default" and set(hgb) == set(DEFAULT_SPACES["hist_gradient_boosting"]) - {"max_iter"}
    assert hgb_fixed["max_iter"] == 200 and hgb_fixed["early_stopping"] is True
    assert rf_src == "none" and lr_src == "config" and list(lr) == ["C"]
    assert cfg.search.strategy == "tpe" and cfg.search.time_budget == 20 and cfg.search.trials is None
    assert _load(tmp_path).search.trials == 2 and cfg.refit  # refit on by default, random split or not


def test_the_card_says_the_shipped_model_learned_from_every_labelled_row(tmp_path: Path) -> None:
    from mlops.training.card import _refit_line

    random_split = _load(tmp_path, timestamp_column=None)
    assert random_split.refit and "every labelled row" in _refit_line(random_split)
    assert "seeded random share" in _refit_line(random_split)
    off = _load(tmp_path, timestamp_column=None, split={"refit": False})
    assert not off.refit and "not in it" in _refit_line(off)


def test_a_run_override_of_the_budget_is_checked_like_the_config(tmp_path: Path) -> None:
    from flows.forms import SearchOverrides, apply_search_overrides

    cfg = _load(tmp_path, search={"strategy": "halving", "n_trials": 4})
    with pytest.raises(ConfigError, match="time_budget needs strategy tpe or random"):
        apply_search_overrides(cfg, SearchOverrides(time_budget=30))
    tpe = apply_search_overrides(_load(tmp_path), SearchOverrides(time_budget=12.5))
    assert tpe.search.time_budget == 12.5 and tpe.search.n_trials == 2
