from pathlib import Path

import pytest
import yaml

from mlops.core.config import load_config
from mlops.core.errors import ConfigError
from tests.conftest import REPO, small_config


@pytest.mark.parametrize("name", ["default", "breast_cancer", "diabetes"])
def test_shipped_configs_are_valid(name: str) -> None:
    cfg = load_config(REPO / "configs" / f"{name}.yaml")
    assert cfg.registry.model_name
    assert cfg.models


def _write(tmp_path: Path, raw: dict) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


def test_typo_in_key_names_file_and_field(tmp_path: Path) -> None:
    raw = small_config()
    raw["serach"] = raw.pop("search")
    p = _write(tmp_path, raw)
    with pytest.raises(ConfigError) as err:
        load_config(p)
    assert str(p) in str(err.value) and "'serach'" in str(err.value) and "unknown key" in str(err.value)


def test_a_name_yaml_reads_as_a_boolean_is_explained(tmp_path: Path) -> None:
    """Issue 21: `drop_columns: [No, year]` (a column named No) got only 'Input should be a valid string'."""
    text = yaml.safe_dump(small_config()) + "drop_columns: [No, year]\n"
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(p)
    message = str(err.value)
    assert "field 'drop_columns.0'" in message and "YAML read a boolean (false)" in message and "quote" in message
    p.write_text(text.replace("[No, year]", '["No", year]'))
    assert load_config(p).drop_columns == ["No", "year"]


def test_nested_typo_is_named(tmp_path: Path) -> None:
    raw = small_config(search={"n_trails": 3})
    with pytest.raises(ConfigError, match=r"search\.n_trails.*unknown key"):
        load_config(_write(tmp_path, raw))


def test_wrong_type(tmp_path: Path) -> None:
    raw = small_config(search={"n_trials": "many"})
    with pytest.raises(ConfigError, match=r"search\.n_trials"):
        load_config(_write(tmp_path, raw))


def test_missing_target(tmp_path: Path) -> None:
    raw = small_config()
    del raw["target"]
    with pytest.raises(ConfigError, match=r"'target'.*required"):
        load_config(_write(tmp_path, raw))


def test_family_must_fit_task(tmp_path: Path) -> None:
    raw = small_config(models=[{"family": "ridge"}])
    with pytest.raises(ConfigError, match="ridge.*classification"):
        load_config(_write(tmp_path, raw))


def test_metric_must_fit_task(tmp_path: Path) -> None:
    raw = small_config(gate={"thresholds": {"rmse": 3.0}})
    with pytest.raises(ConfigError, match="rmse"):
        load_config(_write(tmp_path, raw))


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_search_space_bounds_checked(tmp_path: Path) -> None:
    raw = small_config(models=[{"family": "logistic_regression",
                                "search_space": {"C": {"type": "loguniform", "low": 0, "high": 1}}}])
    with pytest.raises(ConfigError, match="low > 0"):
        load_config(_write(tmp_path, raw))


def test_config_hash_is_stable_and_sensitive(tmp_path: Path) -> None:
    a = load_config(_write(tmp_path, small_config()))
    b = load_config(_write(tmp_path, small_config()))
    c = load_config(_write(tmp_path, small_config(search={"n_trials": 3})))
    assert a.config_hash() == b.config_hash() != c.config_hash()
