"""The code base stays readable in pieces: no Python module of the project (its packages, flows, tasks,
deployments, benchmarks and tests) runs over 600 lines; a module that grows past it is split by what it owns."""

from __future__ import annotations

from tests.conftest import REPO

MAX_LINES = 600
FOLDERS = ("mlops", "flows", "tasks", "deployments", "bench", "tests")


def test_no_module_is_over_600_lines() -> None:
    sizes = {path.relative_to(REPO).as_posix(): len(path.read_text(encoding="utf-8").splitlines())
             for folder in FOLDERS for path in (REPO / folder).rglob("*.py")}
    assert len(sizes) > 100, "the scan found the project's modules"
    over = {name: n for name, n in sorted(sizes.items()) if n > MAX_LINES}
    assert not over, f"modules over {MAX_LINES} lines: {over}"
