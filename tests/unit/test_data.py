from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops.config import SplitConfig, parse_config
from mlops.data import check_frame, fingerprint, generate_churn, load_sklearn_dataset, read_table, split_frame
from mlops.errors import DataError
from tests.conftest import small_config


def test_generator_is_deterministic_and_realistic() -> None:
    a, b = generate_churn(500, seed=1), generate_churn(500, seed=1)
    pd.testing.assert_frame_equal(a, b)
    assert fingerprint(a) == fingerprint(b) != fingerprint(generate_churn(500, seed=2))
    assert {"event_time", "region", "monthly_charges", "churned"} <= set(a.columns)
    assert a["age"].isna().any() and a["payment_method"].isna().any()
    assert 0.1 < a["churned"].mean() < 0.5


def test_drift_knob_shifts_inputs_and_concept() -> None:
    base, drifted = generate_churn(5000, seed=1), generate_churn(5000, seed=1, drift=1.0)
    assert drifted["monthly_charges"].mean() > base["monthly_charges"].mean() + 10
    assert (drifted["region"] == "south").mean() > (base["region"] == "south").mean() + 0.2
    assert drifted["churned"].mean() > base["churned"].mean()


def test_corrupt_rows_are_impossible_values() -> None:
    df = generate_churn(5000, seed=1, corrupt=0.01)
    assert ((df["age"] == 150) | (df["monthly_charges"] < 0)).sum() > 20


def test_sklearn_datasets_ship_offline() -> None:
    df, target = load_sklearn_dataset("breast_cancer")
    assert target == "target" and len(df) == 569


def test_fingerprint_sees_values_and_types() -> None:
    df = pd.DataFrame({"a": [1, 2, 3]})
    assert fingerprint(df) != fingerprint(df.assign(a=[1, 2, 4]))
    assert fingerprint(df) != fingerprint(df.astype(float))


def _csv(tmp_path: Path, content: bytes, name: str = "d.csv") -> Path:
    p = tmp_path / name
    p.write_bytes(content)
    return p


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (b"a,b,target\n", "header but no rows"),
        (b"a;b;target\n1;2;0\n3;4;1\n", "';'-delimited"),
        (b"a,b,target\n1,2,0\n\xff\xfe,3,1\n", "line 3 is not UTF-8"),
        (b"a,b,target\n1,2,0\n3,4,1\n5,6", "the last row has 2 fields"),
    ],
)
def test_broken_csv_files_get_one_clear_sentence(tmp_path: Path, content: bytes, message: str) -> None:
    with pytest.raises(DataError, match=message) as err:
        read_table(_csv(tmp_path, content))
    assert "\n" not in str(err.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        read_table(tmp_path / "nope.csv")


def test_corrupt_parquet(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a readable Parquet"):
        read_table(_csv(tmp_path, b"PAR1garbage", "x.parquet"))


def test_folder_of_files_is_concatenated(tmp_path: Path) -> None:
    generate_churn(10, seed=1).to_parquet(tmp_path / "a.parquet")
    generate_churn(15, seed=2).to_parquet(tmp_path / "b.parquet")
    assert len(read_table(tmp_path)) == 25


def test_check_frame_target_problems() -> None:
    cfg = parse_config(small_config())
    df = generate_churn(50, seed=1)
    with pytest.raises(DataError, match="target column.*not in the data"):
        check_frame(df.drop(columns=["churned"]), cfg)
    with pytest.raises(DataError, match="single class"):
        check_frame(df.assign(churned=1), cfg)
    with pytest.raises(DataError, match="entirely empty"):
        check_frame(df.assign(churned=np.nan), cfg)


def test_time_ordered_split_holds_out_the_latest_rows() -> None:
    df = generate_churn(1000, seed=1).sample(frac=1.0, random_state=0)
    s = split_frame(df, "churned", "classification", SplitConfig(test_size=0.2), "event_time")
    assert len(s.test) == 200 and s.train["event_time"].max() <= s.test["event_time"].min()


def test_random_split_is_seeded_and_stratified() -> None:
    df = generate_churn(1000, seed=1)
    a = split_frame(df, "churned", "classification", SplitConfig(seed=3), None)
    b = split_frame(df, "churned", "classification", SplitConfig(seed=3), None)
    pd.testing.assert_frame_equal(a.test, b.test)
    assert abs(a.test["churned"].mean() - df["churned"].mean()) < 0.02
