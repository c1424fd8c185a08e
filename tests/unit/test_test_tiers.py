"""The test tiers: `make test` and `make test-slow` split every test between them (none in both, none in
neither), every registered marker is a tier marker, CI runs each tier once, and the collection check
names a test that would fall out of CI."""

from __future__ import annotations

import itertools
import re
import subprocess
import tomllib

from tests.conftest import REPO
from tests.support.tiers import tier_expressions, tier_problems, tiers_of


def registered_markers() -> set[str]:
    pytest_options = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert "--strict-markers" in pytest_options["addopts"].split(), "a misspelt marker must not land a test in the fast tier"
    return {line.split(":", 1)[0].strip() for line in pytest_options["markers"]}


def test_every_combination_of_markers_is_in_exactly_one_tier() -> None:
    markers = registered_markers()
    assert markers == {"e2e", "process", "slow"}
    others = {"parametrize", "timeout", "anyio"}
    for size in range(len(markers) + 1):
        for combo in itertools.combinations(sorted(markers), size):
            assert len(tiers_of(set(combo) | others)) == 1, combo
    assert tiers_of(set()) == ["FAST_TIER"] and tiers_of({"slow"}) == ["SLOW_TIER"]


def test_the_fast_tier_names_every_registered_marker() -> None:
    fast = tier_expressions()["FAST_TIER"]
    assert set(re.findall(r"\w+", fast)) - {"not", "and", "or"} == registered_markers()


def test_make_runs_the_tiers_the_makefile_defines() -> None:
    def recipe(target: str) -> str:
        out = subprocess.run(["make", "--no-print-directory", "-n", "-o", ".venv/.installed", target],
                             cwd=REPO, capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip().splitlines()[-1]

    tiers = tier_expressions()
    assert recipe("test").endswith(f'pytest -q -m "{tiers["FAST_TIER"]}" -n 2 --dist loadfile')  # a worker per core
    # two workers, a module (or the modules on the shared live stack) on one; it lists its slowest
    assert recipe("test-slow").endswith(f'pytest -q -m "{tiers["SLOW_TIER"]}" -n 2 --dist loadscope --durations=15')
    assert recipe("test-all").endswith("pytest -q")


def test_ci_runs_each_tier_once_after_lint() -> None:
    steps = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines() if line.startswith("make ")]
    assert [step.split("#")[0].strip() for step in steps] == ["make lint", "make test", "make test-slow"]


def test_the_collection_check_names_a_test_outside_the_tiers() -> None:
    both = {"FAST_TIER": "not slow", "SLOW_TIER": "slow or process"}
    assert tier_problems([("tests/unit/test_a.py::test_fast", set()), ("tests/unit/test_a.py::test_slow", {"slow"})],
                         both) == []
    problems = tier_problems([("tests/unit/test_a.py::test_x", {"process"}),
                              ("tests/e2e/test_b.py::test_y", {"slow"})], both)
    assert problems == ["tests/unit/test_a.py::test_x: in 2 tiers (FAST_TIER, SLOW_TIER), markers ['process']",
                        "tests/e2e/test_b.py::test_y: under tests/e2e/ but not marked e2e (it would run in the fast tier)"]
    gap = {"FAST_TIER": "not slow and not e2e", "SLOW_TIER": "slow"}
    assert tier_problems([("tests/e2e/test_b.py::test_z", {"e2e"})], gap) == [
        "tests/e2e/test_b.py::test_z: in 0 tiers (none), markers ['e2e']"]


def test_flow_and_e2e_tests_take_shared_helpers_from_tests_support() -> None:
    """A flow test importing a unit test module drags it (and its fixtures' cost) into another tier's run."""
    offenders = [f"{path.relative_to(REPO)}: {line.strip()}"
                 for folder in ("flows", "e2e") for path in sorted((REPO / "tests" / folder).glob("*.py"))
                 for line in path.read_text().splitlines() if re.match(r"\s*(from|import) tests\.unit\b", line)]
    assert offenders == [], "move the helper to tests/support/: " + "; ".join(offenders)
