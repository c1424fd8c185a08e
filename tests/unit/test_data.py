from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops.core.config import SplitConfig, parse_config
from mlops.core.data import (
    check_frame,
    fingerprint,
    generate_churn,
    load_sklearn_dataset,
    load_training_data,
    read_table,
    read_table_collecting,
    split_frame,
)
from mlops.core.errors import DataError
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
    with pytest.raises(DataError, match="no row has a label"):
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


# --- messy real-world CSVs: markers, malformed rows, declared columns --------------------------------------------


def _messy_frame(n: int = 300, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "charges": rng.normal(60, 15, n).round(2),
        "plan": rng.choice(["basic", "plus", "pro"], n),
        "y": rng.integers(0, 2, n),
    })


def _file_config(path: Path, **overrides: object) -> object:
    raw = small_config(source={"kind": "file", "path": str(path)}, target="y", id_column=None, timestamp_column=None,
                       gate={})
    raw.update(overrides)
    return parse_config(raw)


def test_blank_and_question_mark_markers_keep_a_column_numeric(tmp_path: Path) -> None:
    df = _messy_frame().astype({"charges": str})
    df.loc[:6, "charges"] = " "
    df.loc[7:8, "charges"] = "?"
    path = tmp_path / "d.csv"
    df.to_csv(path, index=False)
    loaded = load_training_data(_file_config(path))
    assert pd.api.types.is_float_dtype(loaded.frame["charges"])
    assert loaded.frame["charges"].isna().sum() == 9
    col = loaded.profile.by_name["charges"]
    assert (col.role, col.kind) == ("feature", "numeric") and col.feature and col.markers == {" ": 7, "?": 2}
    assert "'charges': read as missing: ' ' x7, '?' x2" in loaded.profile.marker_lines()
    # the same markers apply to text columns of any source, e.g. Parquet
    df.to_parquet(tmp_path / "d.parquet")
    table = read_table_collecting(tmp_path / "d.parquet", na_values=["?"])
    assert pd.api.types.is_float_dtype(table.frame["charges"]) and table.markers["charges"] == {" ": 7, "?": 2}


def test_markers_are_the_configured_ones(tmp_path: Path) -> None:
    path = _csv(tmp_path, b"region,y\nNA,0\nEU,1\nNA,1\nEU,0\n-,1\n")
    frame = read_table(path, na_values=["-"])
    assert frame["region"].tolist()[:2] == ["NA", "EU"] and frame["region"].isna().sum() == 1  # North America stays


def test_truncated_last_line_and_short_middle_line_are_set_aside(tmp_path: Path) -> None:
    text = _messy_frame(100).to_csv(index=False).splitlines()
    text[40] = "12.5,basic"  # a short middle line (line 41)
    body = "\n".join(text) + "\n71.3,pl"  # a truncated last line (line 102)
    path = _csv(tmp_path, body.encode())
    loaded = load_training_data(_file_config(path))
    assert len(loaded.frame) == 99
    assert [(m.line, len(m.fields), m.last) for m in loaded.malformed] == [(41, 2, False), (102, 2, True)]
    assert loaded.malformed[1].reason == "malformed: d.csv the last row (line 102) has 2 fields, the header has 3"
    assert loaded.profile.malformed == [m.detail for m in loaded.malformed]
    # other callers still get the strict reader
    with pytest.raises(DataError, match="line 41 has 2 fields, the header has 3"):
        read_table(path)


def test_too_many_malformed_rows_still_stop_the_run_in_one_sentence(tmp_path: Path) -> None:
    text = _messy_frame(100).to_csv(index=False).splitlines()
    for i in range(10, 30):
        text[i] = "1,2,3,4"
    path = _csv(tmp_path, "\n".join(text).encode())
    with pytest.raises(DataError, match=r"line 11 has 4 fields, the header has 3 .*20 bad row\(s\), 20.0% of the rows, "
                                        r"above validation.max_quarantine_fraction 5.0%") as err:
        load_training_data(_file_config(path))
    assert "\n" not in str(err.value)


def test_declared_types_win_and_a_declared_column_must_exist(tmp_path: Path) -> None:
    df = _messy_frame()
    df["zip"] = np.random.default_rng(1).integers(10_000, 10_040, len(df))  # numbers that are categories
    df["remark"] = np.random.default_rng(2).choice(["ok", "late"], len(df))
    df["junk"] = 1.0
    path = tmp_path / "d.csv"
    df.to_csv(path, index=False)
    cfg = _file_config(path, columns={"zip": "categorical", "remark": "text", "junk": "drop", "charges": "numeric"})
    loaded = load_training_data(cfg)
    by = loaded.profile.by_name
    assert (by["zip"].role, by["zip"].kind, by["zip"].feature) == ("feature", "categorical", True)
    assert (by["remark"].role, by["remark"].feature) == ("ignored", False) and "declared text" in by["remark"].why
    assert "junk" not in loaded.frame.columns and by["junk"].role == "ignored"
    with pytest.raises(DataError, match=r"^columns declares a type for 'nope', but the data has no such column"):
        load_training_data(_file_config(path, columns={"nope": "numeric"}))


SECRET_LINE = "root:x:0:0:TOKEN-5f3a:/root:/bin/bash"


@pytest.mark.parametrize(("content", "change"), [
    # a file that is not a table: its first line became the "columns" quoted in the error
    ((SECRET_LINE + "\ndaemon:x:1:1:TOKEN-77b1:/usr/sbin:/usr/sbin/nologin\n").encode(), {}),
    ((b"id,TOKEN-5f3a,TOKEN-77b1\n1,2,3\n4,5,6\n"), {}),
    ((b"TOKEN-5f3a,churned\n1,TOKEN-77b1\n2,TOKEN-77b1\n"), {}),  # a single class, quoted before
    ((b"a,TOKEN-77b1,churned\n1,2,0\n2,3,1\n"), {"columns": {"TOKEN-5f3a": "numeric"}}),
])
def test_data_errors_never_quote_the_data(tmp_path: Path, content: bytes, change: dict) -> None:
    cfg = parse_config(small_config(id_column=None, timestamp_column=None, **change))
    with pytest.raises(DataError) as err:
        check_frame(read_table(_csv(tmp_path, content)), cfg)
    message = str(err.value)
    assert "TOKEN-77b1" not in message and "root:x" not in message
    assert "TOKEN-5f3a" not in message or "columns declares a type for 'TOKEN-5f3a'" in message  # the config's own name
