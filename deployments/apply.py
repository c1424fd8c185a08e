"""Applying a deployment plan to a Prefect server: its work pools made when missing, `prefect deploy`
run on its deployments, and each one checked on the server afterwards.

The caller runs the commands and the API calls (the stack supervisor logs each command and calls
the API with its credentials), so this module holds the steps and their order, nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from deployments.plan import DeploymentError, DeployPlan

RunCommand = Callable[[list[str], float], object]  # (command, timeout in seconds); raises when it fails
CallApi = Callable[..., Any]  # (method, path, json=...) -> the decoded body, None on 404

WORK_POOL_TYPE = "process"  # the stack's workers run each flow run as a local process


def apply_plan(plan: DeployPlan, prefect: str, run: RunCommand, api: CallApi, log: Path | str) -> None:
    """Create the plan's missing work pools, deploy its deployments with the `prefect` CLI at path
    `prefect`, and fail naming any deployment the server does not have afterwards (`log`: where the
    commands' output is, for the message)."""
    if not plan.names:
        raise DeploymentError(f"no deployment in {plan.source} has its flow file; nothing to deploy")
    for pool in plan.work_pools:
        if api("GET", f"/work_pools/{pool}") is None:
            run([prefect, "--no-prompt", "work-pool", "create", pool, "--type", WORK_POOL_TYPE], 120)
    names = [arg for name in plan.names for arg in ("--name", name)]
    run([prefect, "--no-prompt", "deploy", "--prefect-file", str(plan.source), *names], 300)
    found = api("POST", "/deployments/filter", json={"deployments": {"name": {"any_": plan.names}}, "limit": 200}) or []
    lost = sorted(set(plan.names) - {d["name"] for d in found})
    if lost:
        raise DeploymentError(f"`prefect deploy` did not create deployment(s) {', '.join(lost)}; see {log}")
