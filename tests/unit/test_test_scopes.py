"""The slow tier's xdist scopes (tests/support/scopes.py): the modules that share the live stack run on one
worker; every other module stays whole on its own."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from tests.support import scopes
from tests.support.scopes import STACK_SCOPE, check_stack_users, dearest_first, scope_of, stack_modules


def test_the_shared_stack_modules_are_found_by_their_live_parameter() -> None:
    found = stack_modules()
    assert "tests/e2e/test_stack.py" in found and "tests/e2e/test_ui_browser.py" in found
    # the production profile starts its own stack; a helper there names its argument `live` but is no test
    assert "tests/e2e/test_production.py" not in found


def test_tests_and_fixtures_count_but_helpers_do_not(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    e2e = tmp_path / "tests" / "e2e"
    e2e.mkdir(parents=True)
    (e2e / "test_uses.py").write_text("import pytest\n\n@pytest.fixture\ndef trained(live):\n    return live\n")
    (e2e / "test_direct.py").write_text("def test_x(tmp_path, *, live):\n    pass\n")
    (e2e / "test_helper_only.py").write_text("def runs_of(live):\n    return []\n\ndef test_y():\n    pass\n")
    monkeypatch.setattr(scopes, "REPO", tmp_path)
    assert stack_modules(e2e) == {"tests/e2e/test_uses.py", "tests/e2e/test_direct.py"}


def test_scopes_merge_the_stack_modules_and_keep_the_others_whole() -> None:
    assert scope_of("tests/e2e/test_stack.py::test_a") == scope_of("tests/e2e/test_ui_browser.py::test_b") == STACK_SCOPE
    assert scope_of("tests/e2e/test_production.py::test_c[1]") == "tests/e2e/test_production.py"
    assert scope_of("tests/unit/test_policy.py::TestX::test_d") == "tests/unit/test_policy.py"


def test_a_live_test_outside_the_found_modules_is_reported() -> None:
    items = [SimpleNamespace(nodeid="tests/e2e/test_stack.py::test_a", fixturenames=["live"]),
             SimpleNamespace(nodeid="tests/flows/test_new.py::test_b", fixturenames=["tmp_path", "live"]),
             SimpleNamespace(nodeid="tests/unit/test_c.py::test_c", fixturenames=["tmp_path"]),
             # a parametrized argument named `live` is no stack
             SimpleNamespace(nodeid="tests/unit/test_d.py::test_d[1]", fixturenames=["live"],
                             callspec=SimpleNamespace(params={"live": 0.5}))]
    assert check_stack_users(items) == ["tests/flows/test_new.py::test_b"]


def test_the_dearest_scopes_start_first_and_the_rest_keep_their_order() -> None:
    queue = {"tests/unit/test_families.py": [1] * 12, "tests/flows/test_monitor_flow.py": [1] * 9,
             "tests/e2e/test_cli_train.py": [1] * 2, STACK_SCOPE: [1] * 40, "tests/e2e/test_production.py": [1] * 6}
    order = []
    while queue:
        first = dearest_first(queue)
        order.append(first)
        del queue[first]
    assert order == [STACK_SCOPE, "tests/e2e/test_cli_train.py", "tests/e2e/test_production.py",
                     "tests/unit/test_families.py", "tests/flows/test_monitor_flow.py"]
