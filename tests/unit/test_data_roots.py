"""Data roots: a data file named at run time must resolve (symlinks followed) inside a data root, is
refused before it is opened otherwise, and over its size cap before it is read; an empty path is
refused, never read as "the config's own source"."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from mlops.core.config import DEFAULT_MAX_DATA_BYTES, load_config
from mlops.core.data import (
    DataPathRefused,
    DataRoots,
    data_roots,
    generate_churn,
    load_training_data,
    read_table,
    with_source_path,
)
from mlops.core.settings import get_settings
from tests.conftest import small_config


@pytest.fixture
def layout(tmp_path: Path) -> dict[str, Path]:
    """A config folder with data next to it, a state folder inside it, and a folder outside both."""
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    cfg = project / "config.yaml"
    cfg.write_text(yaml.safe_dump(small_config()))
    state = project / "state"
    (state / "inbox").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    good = project / "data" / "good.csv"
    generate_churn(200, seed=1).to_csv(good, index=False)
    return {"project": project, "config": cfg, "state": state, "outside": outside, "good": good}


def _roots(layout: dict[str, Path], **env: str) -> DataRoots:
    return data_roots(load_config(layout["config"]), get_settings({"MLOPS_HOME": str(layout["state"]), **env}))


def test_default_roots_are_the_config_folder_the_inbox_and_the_monitors_training_files(layout) -> None:
    roots = _roots(layout)
    state = layout["state"].resolve()
    assert roots.roots == (layout["project"].resolve(), state / "inbox",
                           state / "monitor" / "churn-small" / "training")
    assert roots.confine(layout["good"]) == layout["good"].resolve()
    assert roots.confine(state / "inbox" / "new.csv") == state / "inbox" / "new.csv"


@pytest.mark.parametrize("path", ["/etc/passwd", "/proc/self/environ", "{project}/../outside/x.csv",
                                  "{project}/data/../../outside/x.csv", "{outside}/x.csv"])
def test_paths_outside_the_roots_are_refused_naming_the_rule(layout, path: str) -> None:
    named = path.format(project=layout["project"], outside=layout["outside"])
    with pytest.raises(DataPathRefused, match="refused: a data file must resolve, symlinks followed, inside a data "
                                               "root") as err:
        _roots(layout).confine(named)
    assert "MLOPS_DATA_ROOTS" in str(err.value) and "root:" not in str(err.value)


@pytest.mark.parametrize("tail", ["good\x00.csv", "good.csv\n", "go\tod.csv"])
def test_a_control_character_in_a_path_is_refused_in_one_sentence(layout, tail: str) -> None:
    """Issue 21: a NUL byte in a path (a webhook's, a run form's) crashed the run with 'embedded null byte'."""
    with pytest.raises(DataPathRefused, match="refused: a data path may not hold a control character"):
        _roots(layout).confine(str(layout["project"] / "data" / tail))


def test_a_symlink_out_of_a_root_is_refused_and_one_within_is_followed(layout) -> None:
    secret = layout["outside"] / "secret.csv"
    secret.write_text("user,password\nroot,hunter2\n")
    link = layout["project"] / "data" / "innocent.csv"
    link.symlink_to(secret)
    with pytest.raises(DataPathRefused, match=f"it resolves to {secret.resolve()}"):
        _roots(layout).confine(link)
    inner = layout["project"] / "data" / "alias.csv"
    inner.symlink_to(layout["good"])
    assert _roots(layout).confine(inner) == layout["good"].resolve()


def test_the_state_folder_is_not_data_except_its_inbox(layout) -> None:
    secrets = layout["state"] / "webhook_secrets.env"
    secrets.write_text("MLOPS_WEBHOOK_DATA_VENDOR_SECRET=abc\n")
    with pytest.raises(DataPathRefused, match="holds stores and secrets, not data"):
        _roots(layout).confine(secrets)  # inside the config folder, still refused


def test_roots_from_config_and_environment_replace_the_default(layout, tmp_path: Path) -> None:
    raw = small_config(data_roots=["data"])
    layout["config"].write_text(yaml.safe_dump(raw))
    roots = _roots(layout, MLOPS_DATA_ROOTS=f"{layout['outside']}{os.pathsep}")
    assert layout["project"].resolve() not in roots.roots
    assert (layout["project"] / "data").resolve() in roots.roots and layout["outside"].resolve() in roots.roots
    assert roots.confine(layout["outside"] / "x.csv")
    with pytest.raises(DataPathRefused):
        roots.confine(layout["config"])  # the config folder is no longer a root


def test_a_refused_path_is_never_opened(layout, monkeypatch: pytest.MonkeyPatch) -> None:
    roots = _roots(layout)
    opened: list[str] = []
    real_open = Path.open

    def spy(self: Path, *a: object, **kw: object) -> object:
        opened.append(str(self))
        return real_open(self, *a, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "open", spy)
    monkeypatch.setattr(Path, "read_bytes", lambda self: opened.append(str(self)) or b"")
    with pytest.raises(DataPathRefused):
        read_table("/etc/passwd", roots=roots)
    assert opened == []


def test_a_folder_source_refuses_a_link_inside_it_that_points_out(layout) -> None:
    folder = layout["project"] / "data" / "batch"
    folder.mkdir()
    generate_churn(50, seed=2).to_csv(folder / "a.csv", index=False)
    (layout["outside"] / "b.csv").write_text("x,y\n1,2\n")
    (folder / "b.csv").symlink_to(layout["outside"] / "b.csv")
    with pytest.raises(DataPathRefused, match="inside a data root"):
        read_table(folder, roots=_roots(layout))


def test_a_device_or_pipe_inside_a_root_is_refused(layout) -> None:
    fifo = layout["project"] / "data" / "pipe.csv"
    os.mkfifo(fifo)
    with pytest.raises(DataPathRefused, match="not a regular file"):
        read_table(fifo, roots=_roots(layout))


def test_the_size_cap_is_checked_before_reading(layout, monkeypatch: pytest.MonkeyPatch) -> None:
    big = layout["project"] / "data" / "big.csv"
    with big.open("wb") as fh:
        fh.truncate(3 * 1024 * 1024)  # sparse: the size is there, nothing is written
    monkeypatch.setattr(Path, "read_bytes", lambda self: pytest.fail("read before the size check"))
    with pytest.raises(DataPathRefused, match=r"3,145,728 bytes is over the cap of 1,048,576 bytes \(source.max_bytes\)"):
        read_table(big, roots=_roots(layout), max_bytes=1024 * 1024)
    folder = layout["project"] / "data" / "parts"
    folder.mkdir()
    for i in range(3):
        (folder / f"p{i}.csv").write_bytes(b"a,b\n" + b"1,2\n" * 100)
    with pytest.raises(DataPathRefused, match="over the cap"):
        read_table(folder, max_bytes=1000)  # a folder's files count together


def test_a_runtime_file_keeps_the_configs_cap_and_an_empty_path_is_refused(layout) -> None:
    cfg = load_config(layout["config"])
    assert with_source_path(cfg, "x.csv").source.max_bytes == DEFAULT_MAX_DATA_BYTES
    assert with_source_path(cfg, "x.csv").source.path == "x.csv"
    raw = small_config(source={"kind": "file", "path": str(layout["good"]), "max_bytes": 5000})
    layout["config"].write_text(yaml.safe_dump(raw))
    assert with_source_path(load_config(layout["config"]), "x.csv").source.max_bytes == 5000
    for bad in ("", "   ", None, 123, ["a.csv"]):
        with pytest.raises(DataPathRefused, match="source_path must name a CSV/Parquet file"):
            with_source_path(cfg, bad)


def test_training_data_outside_the_roots_is_refused_and_inside_it_loads(layout) -> None:
    cfg = load_config(layout["config"])
    roots = _roots(layout)
    loaded = load_training_data(with_source_path(cfg, str(layout["good"])), roots)
    assert len(loaded.frame) > 100
    with pytest.raises(DataPathRefused):
        load_training_data(with_source_path(cfg, "/etc/passwd"), roots)
    with pytest.raises(DataPathRefused):
        load_training_data(with_source_path(cfg, f"{layout['project']}/../../../../etc/passwd"), roots)


def test_the_config_hash_ignores_where_data_may_come_from(layout) -> None:
    a = load_config(layout["config"])
    layout["config"].write_text(yaml.safe_dump(small_config(data_roots=["/srv/data"])))
    assert load_config(layout["config"]).config_hash() == a.config_hash()
