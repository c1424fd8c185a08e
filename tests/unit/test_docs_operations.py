"""docs/operations.md tells the truth about what ships (issue 21): its links point at files that exist, and
what it says about one-at-a-time deployments is what prefect.yaml does."""

from __future__ import annotations

import re

import yaml

from tests.conftest import REPO

DOC = REPO / "docs" / "operations.md"


def test_every_relative_link_resolves() -> None:
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", DOC.read_text())
    local = [link for link in links if "://" not in link and not link.startswith("mailto:")]
    assert local, "no relative links found: the pattern is wrong"
    missing = [link for link in local if not (DOC.parent / link).exists()]
    assert missing == []


def test_the_one_at_a_time_column_matches_prefect_yaml() -> None:
    deployments = {d["name"]: d for d in yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]}
    said = {"ENQUEUE": "new runs queued", "CANCEL_NEW": "new runs cancelled"}
    text = DOC.read_text()
    for name in ("train", "retrain"):
        strategy = deployments[name]["concurrency_limit"]["collision_strategy"]
        row = next(line for line in text.splitlines() if line.startswith(f"| `{name}/{name}` |"))
        assert row.rstrip(" |").endswith(said[strategy]), (name, strategy, row)
