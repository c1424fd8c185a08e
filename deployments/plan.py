"""The deployment plan: which deployments of prefect.yaml to deploy, on which work pools, with which
variables, for one use-case config and one profile.

prefect.yaml at the repository root is the one definition for every profile; its `{{ $VAR }}`
placeholders are filled from the environment by `prefect deploy`, and `deploy_variables` is what
fills them: `mlops up` (profile `local` or `production`) sets them itself, `mlops deploy-env` prints
them for a deploy by hand. Nothing here starts a process or calls a server.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from mlops.core.errors import MLOpsError

ENV_PLACEHOLDER = re.compile(r"{{\s*\$([A-Za-z_][A-Za-z0-9_]*)\s*}}")
PROFILE_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")


class DeploymentError(MLOpsError):
    """The flows cannot be deployed as asked (a bad profile name, an unreadable file, a variable unset)."""


def deploy_variables(config_path: Path | str, monitor_cron: str, project_dir: Path | str, profile: str = "local",
                     schedules: bool = True, python: Path | str | None = None) -> dict[str, str]:
    """The variables prefect.yaml reads (Prefect fills them in at `prefect deploy`), from one use-case config.

    The profile names the work pool (mlops-<profile>) and tags every deployment; `python` is the interpreter
    the worker hosts run the flows with (default: this one).
    """
    if not PROFILE_NAME.match(profile):
        raise DeploymentError(f"the deployment profile {profile!r} is not a valid name; use lower-case letters, "
                              "digits and dashes, such as local or production")
    return {
        "MLOPS_DEPLOY_PROFILE": profile,
        "MLOPS_PROJECT_DIR": str(project_dir),
        "MLOPS_CONFIG": str(config_path),
        "MLOPS_MONITOR_CRON": monitor_cron,
        "MLOPS_SCHEDULES_ACTIVE": "true" if schedules else "false",
        "MLOPS_PYTHON": shlex.quote(str(python or sys.executable)),  # one word of the run's command line
    }


def worker_python(project_dir: Path | str, checkout: Path) -> Path:
    """The interpreter of the worker hosts: this one, moved to `project_dir` when it lives in `checkout` (the
    project's own .venv, installed the same way on every host), else this one as it is."""
    here = Path(sys.executable)
    try:
        return Path(project_dir) / here.relative_to(checkout)
    except ValueError:
        return here


@dataclass(frozen=True)
class DeployPlan:
    """What to deploy from the deployments file `source`, and the variables `prefect deploy` gets."""

    source: Path
    names: list[str]  # the deployments whose flow file exists, in file order
    skipped: list[str]  # the others, each with why
    work_pools: list[str]
    variables: dict[str, str]


def plan_deployments(source: Path, project_dir: Path, variables: Mapping[str, str],
                     environ: Mapping[str, str]) -> DeployPlan:
    """The deployments of `source` whose flow file exists under `project_dir`, their work pools and variables.

    Every `{{ $VAR }}` must be set by `variables` or `environ`; one that is not is an error naming it
    (Prefect itself would deploy the placeholder text).
    """
    try:
        raw = yaml.safe_load(source.read_text()) or {}
    except OSError as exc:
        raise DeploymentError(f"cannot read the deployments file {source} ({exc.strerror}); give another with "
                              "--prefect-file") from None
    except yaml.YAMLError as exc:
        raise DeploymentError(f"the deployments file {source} is not valid YAML ({exc})") from None
    env = {**environ, **variables}
    missing = sorted({m for m in ENV_PLACEHOLDER.findall(json.dumps(raw, default=str)) if not env.get(m)})
    if missing:
        raise DeploymentError(f"the deployments file {source} uses {', '.join('$' + m for m in missing)}, which is "
                              "not set; export it and run again")
    names, skipped, pools = [], [], []
    for dep in raw.get("deployments") or []:
        file_part = str(dep.get("entrypoint", "")).rsplit(":", 1)[0]
        if not file_part or not (project_dir / file_part).is_file():
            skipped.append(f"{dep.get('name')} ({file_part or 'no entrypoint'} not found)")
            continue
        names.append(str(dep.get("name")))
        pool = ENV_PLACEHOLDER.sub(lambda m: env[m.group(1)], str((dep.get("work_pool") or {}).get("name") or ""))
        if pool and pool not in pools:
            pools.append(pool)
    return DeployPlan(source, names, skipped, pools, dict(variables))
