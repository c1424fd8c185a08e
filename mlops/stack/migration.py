"""Moving a local state's model registry from its SQLite store to the production profile's MLflow.

Every registered model is re-created on the destination tracking server with every version, in
order and with the same numbers (a deleted version's number is taken and deleted again), each
version's tags and description (which hold the alias history, `alias_move.*`, with any model-level
entries of older stores), the registered model's tags and its aliases. For each version, the run that registered it is copied (params,
every metric's history, tags, status and times, all its artifacts: contract, reference sample, card,
evaluation) and so is its logged model, whose `MLmodel` is rewritten to name its new id, run and
location. Files are read from the old state folder (`mlartifacts/`, whether the old runs stored
`file://` paths or `mlflow-artifacts:` URIs) and written through the destination server, so the new
versions live behind it (`mlflow-artifacts:`). Other runs (tuning children, monitoring) and Prefect's
flow-run history are not moved.

Re-running is safe: a version already copied from the same source run is kept; any other version
already at the destination stops the migration, naming it.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest.mock import patch
from urllib.parse import unquote, urlparse

from mlops.registry.history import read_history
from mlops.stack.options import StackError

MIGRATED_FROM = "mlops.migrated_from_run"  # run tag on every copied run: the source run's id
PARENT_TAG = "mlflow.parentRunId"
BATCH = 500

Echo = Callable[[str], None]


@dataclass
class ModelReport:
    """What moved for one registered model."""

    name: str
    versions: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # already at the destination from an earlier run
    aliases: dict[str, str] = field(default_factory=dict)
    history: int = 0  # alias-history entries (registered-model tags alias_move.*)


def local_path(uri: str, artifacts_dir: Path) -> Path:
    """Where an artifact URI of the old state lives on disk: `file://` paths as they are,
    `mlflow-artifacts:` under the folder the old stack's MLflow served (`mlartifacts/`)."""
    parsed = urlparse(uri)
    if parsed.scheme == "mlflow-artifacts":
        return artifacts_dir / unquote(parsed.path).lstrip("/")
    if parsed.scheme in ("", "file"):
        return Path(unquote(parsed.path))
    raise StackError(f"the artifacts at {uri} are not in the old state folder; copy them with their own tools, "
                     "or migrate from a state whose artifacts are local")


def _clients(source_uri: str, dest_uri: str) -> tuple[Any, Any]:
    from mlflow import MlflowClient

    return (MlflowClient(tracking_uri=source_uri, registry_uri=source_uri),
            MlflowClient(tracking_uri=dest_uri, registry_uri=dest_uri))


PROBE_RETRIES = 2  # the probe's retries (backoff 2 + 4 s), not MLflow's default 7 (about 4 minutes)
PROBE_TIMEOUT = 30  # seconds per request


def check_destination(dest_uri: str) -> None:
    """One registry read from the destination, retried briefly, before anything is copied: a server whose
    database is down answers 503, and MLflow's client would retry each request for about 4 minutes."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    retries = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(PROBE_RETRIES), "MLFLOW_HTTP_REQUEST_TIMEOUT": str(PROBE_TIMEOUT)}
    try:
        with patch.dict(os.environ, retries):  # MLflow reads both at each request; restored after
            MlflowClient(tracking_uri=dest_uri, registry_uri=dest_uri).search_registered_models(max_results=1)
    except MlflowException as exc:
        text = str(exc)
        status = re.search(r"too many (\d{3}) error responses", text)
        why = (f"it answered {status.group(1)}" if status
               else "nothing answers there" if "Connection refused" in text or "NewConnectionError" in text
               else text.strip().splitlines()[0][:200] if text.strip() else type(exc).__name__)
        raise StackError(f"the destination MLflow at {dest_uri} cannot read its registry ({why}); check the server "
                         "and its database (`mlops stack-status`, `mlops logs postgres`, `mlops logs mlflow`) and "
                         "migrate again: nothing was copied") from None


def _all(search: Callable[..., Any], **kw: Any) -> list[Any]:
    out, token = [], None
    while True:
        page = search(max_results=200, page_token=token, **kw)
        out += list(page)
        token = page.token
        if not token:
            return out


class RegistryMigration:
    """One migration from the SQLite store `source_uri` (artifacts under `artifacts_dir`) to `dest_uri`."""

    def __init__(self, source_uri: str, artifacts_dir: Path, dest_uri: str, echo: Echo | None = None,
                 artifact_root: str = "mlflow-artifacts:/") -> None:
        self.src, self.dst = _clients(source_uri, dest_uri)
        self.artifacts_dir = artifacts_dir
        self.artifact_root = artifact_root.rstrip("/")
        self.say = echo or (lambda _m: None)
        self._runs: dict[str, str] = {}  # source run id -> destination run id
        self._experiments: dict[str, str] = {}

    def run(self, names: list[str] | None = None) -> list[ModelReport]:
        import mlflow

        models = _all(self.src.search_registered_models)
        before = mlflow.get_tracking_uri()
        mlflow.set_tracking_uri(self.dst.tracking_uri)  # a store opened directly looks logged models up there
        try:
            return [self.model(rm) for rm in models if names is None or rm.name in names]
        finally:
            mlflow.set_tracking_uri(before)

    # -- one registered model --
    def model(self, rm: Any) -> ModelReport:
        from mlflow.exceptions import MlflowException

        name, report = rm.name, ModelReport(rm.name)
        versions = sorted(_all(self.src.search_model_versions, filter_string=f"name='{name}'"),
                          key=lambda mv: int(mv.version))
        try:
            existing = {int(mv.version): mv for mv in
                        _all(self.dst.search_model_versions, filter_string=f"name='{name}'")}
        except MlflowException:
            existing = {}
        try:
            self.dst.get_registered_model(name)
        except MlflowException:
            self.dst.create_registered_model(name, description=rm.description)
        for mv in versions:
            number = int(mv.version)
            if number in existing:
                self._check_same(name, mv, existing[number])
                report.kept.append(str(number))
                continue
            self._fill_gap(name, number, existing)
            self.version(name, mv)
            existing[number] = mv
            report.versions.append(str(number))
            self.say(f"  {name} v{number}: copied")
        tags = dict(rm.tags)
        for key, value in tags.items():
            self.dst.set_registered_model_tag(name, key, value)
        if rm.description:
            self.dst.update_registered_model(name, description=rm.description)
        for alias, version in (rm.aliases or {}).items():
            self.dst.set_registered_model_alias(name, alias, str(version))
            report.aliases[alias] = str(version)
        report.history = len(read_history(self.dst, name, tags))
        return report

    def _check_same(self, name: str, src_mv: Any, dst_mv: Any) -> None:
        run = self.dst.get_run(dst_mv.run_id) if dst_mv.run_id else None
        if run is None or run.data.tags.get(MIGRATED_FROM) != src_mv.run_id:
            raise StackError(f"the destination already has version {dst_mv.version} of {name}, not copied from this "
                             "state; migrate into a registry without that model (or rename it)")
        self._runs[src_mv.run_id] = dst_mv.run_id

    def _fill_gap(self, name: str, number: int, existing: dict[int, Any]) -> None:
        """Take (and delete) the numbers of versions deleted at the source, so numbers stay the same."""
        while (top := max(existing, default=0)) < number - 1:
            filler = self.dst.create_model_version(name, source=f"{self.artifact_root}/migration-gap", tags={},
                                                   await_creation_for=0)
            self.dst.delete_model_version(name, filler.version)
            if int(filler.version) != top + 1:
                raise StackError(f"the destination numbered a version of {name} {filler.version}, not {top + 1}; "
                                 "migrate into a registry without that model")
            existing[int(filler.version)] = filler

    # -- one version --
    def version(self, name: str, mv: Any) -> None:
        from mlflow.entities import LoggedModelStatus

        run_id = self.copy_run(mv.run_id) if mv.run_id else None
        source = str(mv.source)
        model_id = None
        if source.startswith("models:/m-"):
            model_id = self.copy_logged_model(source.removeprefix("models:/"), run_id)
            self.dst.finalize_logged_model(model_id, LoggedModelStatus.READY)
            source = f"models:/{model_id}"
        elif source.startswith("runs:/") and run_id and mv.run_id:
            source = source.replace(mv.run_id, run_id, 1)
        else:
            raise StackError(f"version {mv.version} of {name} points at {source}, which this migration cannot copy")
        new = self.dst.create_model_version(name, source=source, run_id=run_id, tags=dict(mv.tags),
                                            description=mv.description, model_id=model_id, await_creation_for=0)
        if str(new.version) != str(mv.version):
            raise StackError(f"the destination numbered {name}'s copy of version {mv.version} as {new.version}; "
                             "migrate into a registry without that model")

    def _experiment(self, experiment_id: str) -> str:
        if experiment_id not in self._experiments:
            src = self.src.get_experiment(experiment_id)
            found = self.dst.get_experiment_by_name(src.name)
            self._experiments[experiment_id] = found.experiment_id if found else self.dst.create_experiment(
                src.name, artifact_location=f"{self.artifact_root}/{src.name}", tags=dict(src.tags))
        return self._experiments[experiment_id]

    def copy_run(self, run_id: str) -> str:
        """The run with its params, metric histories, tags, artifacts, status and times."""
        from mlflow.entities import Metric, Param

        if run_id in self._runs:
            return self._runs[run_id]
        run = self.src.get_run(run_id)
        tags = {k: v for k, v in run.data.tags.items() if k != PARENT_TAG}
        if PARENT_TAG in run.data.tags:
            tags["mlops.migrated_parent_run"] = run.data.tags[PARENT_TAG]
        tags[MIGRATED_FROM] = run_id
        new = self.dst.create_run(self._experiment(run.info.experiment_id), start_time=run.info.start_time,
                                  tags=tags, run_name=run.info.run_name)
        rid = new.info.run_id
        params = [Param(k, v) for k, v in run.data.params.items()]
        metrics = [Metric(m.key, m.value, m.timestamp, m.step)
                   for key in run.data.metrics for m in self.src.get_metric_history(run_id, key)]
        for i in range(0, max(len(params), len(metrics)), BATCH):
            self.dst.log_batch(rid, metrics=metrics[i:i + BATCH], params=params[i:i + BATCH])
        if run.inputs and run.inputs.dataset_inputs:  # the training data's fingerprint, as a dataset input
            self.dst.log_inputs(rid, datasets=list(run.inputs.dataset_inputs))
        folder = local_path(run.info.artifact_uri, self.artifacts_dir)
        if folder.is_dir() and any(folder.iterdir()):
            self.dst.log_artifacts(rid, str(folder))
        self.dst.set_terminated(rid, status=run.info.status, end_time=run.info.end_time)
        self._runs[run_id] = rid
        return rid

    def copy_logged_model(self, model_id: str, run_id: str | None) -> str:
        """The logged model's files behind the destination server, its MLmodel naming the new id, run and place."""
        import yaml

        lm = self.src.get_logged_model(model_id)
        folder = local_path(lm.artifact_location, self.artifacts_dir)
        if not (folder / "MLmodel").is_file():
            raise StackError(f"the files of logged model {model_id} are not at {folder}; the old state is incomplete")
        new = self.dst.create_logged_model(self._experiment(lm.experiment_id), name=lm.name, source_run_id=run_id,
                                           tags=dict(lm.tags or {}), params=dict(lm.params or {}),
                                           model_type=lm.model_type)
        with tempfile.TemporaryDirectory(prefix="mlops-migrate-") as tmp:
            copy = Path(tmp) / "model"
            shutil.copytree(folder, copy)
            meta = yaml.safe_load((copy / "MLmodel").read_text()) or {}
            meta.update({"artifact_path": new.artifact_location, "model_id": new.model_id,
                         "model_uuid": new.model_id, "run_id": run_id})
            (copy / "MLmodel").write_text(yaml.safe_dump(meta, sort_keys=False))
            self.dst.log_model_artifacts(new.model_id, str(copy))
        return str(new.model_id)


def verify(source_uri: str, dest_uri: str, names: list[str]) -> list[str]:
    """What differs between the two registries for `names` (versions, their tags, aliases, model tags);
    empty when nothing was lost."""
    src, dst = _clients(source_uri, dest_uri)
    problems = []
    for name in names:
        a, b = src.get_registered_model(name), dst.get_registered_model(name)
        aliases = [{k: str(v) for k, v in (rm.aliases or {}).items()} for rm in (a, b)]
        if aliases[0] != aliases[1]:
            problems.append(f"{name}: aliases {aliases[0]} became {aliases[1]}")
        if dict(a.tags) != dict(b.tags):
            problems.append(f"{name}: registered-model tags differ ({sorted(set(a.tags) ^ set(b.tags))[:5]})")
        if read_history(src, name, a.tags) != read_history(dst, name, b.tags):
            problems.append(f"{name}: the alias history differs")
        src_versions = {str(mv.version): mv for mv in _all(src.search_model_versions, filter_string=f"name='{name}'")}
        dst_versions = {str(mv.version): mv for mv in _all(dst.search_model_versions, filter_string=f"name='{name}'")}
        for version, mv in src_versions.items():
            other = dst_versions.get(version)
            if other is None:
                problems.append(f"{name} v{version}: missing")
            elif dict(mv.tags) != dict(other.tags):
                problems.append(f"{name} v{version}: tags differ")
    return problems
