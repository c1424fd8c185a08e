"""`mlops migrate` between two local stores (no server): every version keeps its number (a deleted one's
number is kept free), tags, aliases and alias history; the copied model loads and predicts the same;
a second run keeps what is there; a destination with other versions is refused."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pytest

from mlops.stack.migration import MIGRATED_FROM, RegistryMigration, local_path, verify
from mlops.stack.options import StackError
from tests.support.stack import build_registry

pytestmark = pytest.mark.slow

MODEL = "churn-migrate"


@pytest.fixture
def stores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Path, str, str]:
    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir()
    new.mkdir()
    monkeypatch.setenv("MLOPS_HOME", str(old))  # where the gate key that seals the verdicts lives
    src = f"sqlite:///{old / 'mlflow.db'}"
    mlflow.set_tracking_uri(src)
    try:
        build_registry(MODEL, 4, (old / "mlartifacts").as_uri(), deleted=(2,))
    finally:
        mlflow.set_tracking_uri(None)
    return src, old / "mlartifacts", f"sqlite:///{new / 'mlflow.db'}", (new / "mlartifacts").as_uri()


def test_every_version_alias_and_history_entry_moves_and_the_champion_predicts_the_same(
        stores: tuple[str, Path, str, str]) -> None:
    from mlflow import MlflowClient

    from mlops.registry.history import read_history
    from mlops.registry.trusted_types import load_sklearn_model

    src_uri, artifacts, dst_uri, dst_root = stores
    said: list[str] = []
    reports = RegistryMigration(src_uri, artifacts, dst_uri, said.append, artifact_root=dst_root).run()
    assert [(r.name, r.versions, r.aliases) for r in reports] == [(MODEL, ["1", "3", "4"],
                                                                   {"champion": "4", "previous": "3"})]
    assert verify(src_uri, dst_uri, [MODEL]) == []
    src, dst = MlflowClient(src_uri, src_uri), MlflowClient(dst_uri, dst_uri)
    assert sorted(int(v.version) for v in dst.search_model_versions(f"name='{MODEL}'")) == [1, 3, 4]
    history = read_history(dst, MODEL, dst.get_registered_model(MODEL).tags)
    assert history == read_history(src, MODEL, src.get_registered_model(MODEL).tags) and len(history) == reports[0].history
    assert [(h["alias"], h["to_version"]) for h in history][-2:] == [("previous", "3"), ("champion", "4")]

    champ = dst.get_model_version_by_alias(MODEL, "champion")
    run = dst.get_run(champ.run_id)
    old_run = src.get_run(src.get_model_version_by_alias(MODEL, "champion").run_id)
    assert run.data.tags[MIGRATED_FROM] == old_run.info.run_id and run.info.run_id != old_run.info.run_id
    assert run.data.params == old_run.data.params and run.info.run_name == old_run.info.run_name
    assert [m.value for m in dst.get_metric_history(run.info.run_id, "cv_score")] == \
        [m.value for m in src.get_metric_history(old_run.info.run_id, "cv_score")]
    assert run.info.artifact_uri.startswith(dst_root) and "old" not in run.info.artifact_uri
    files = {f.path for f in dst.list_artifacts(run.info.run_id)}
    assert {"contract", "card"} <= files

    mlflow.set_tracking_uri(dst_uri)
    try:
        new_model = load_sklearn_model(f"models:/{MODEL}@champion")
        # the sealed verdicts still hold: their seal names neither the run nor where the model lives
        from mlops.registry import versions as registry
        from mlops.registry.verdict import version_digest

        assert registry.refusal_of(champ) is None
        assert version_digest(MODEL, str(champ.version), champ.run_id) == champ.tags["gate.digest"]
    finally:
        mlflow.set_tracking_uri(src_uri)
    try:
        old_model = load_sklearn_model(f"models:/{MODEL}@champion")
    finally:
        mlflow.set_tracking_uri(None)
    X = np.array([[1.0, 50.0, 2.0], [40.0, 90.0, 0.0]])
    import pandas as pd

    frame = pd.DataFrame(X, columns=["tenure_months", "monthly_charges", "support_calls"])
    assert (new_model.predict_proba(frame) == old_model.predict_proba(frame)).all()


def test_a_second_run_keeps_what_is_there_and_other_versions_are_refused(stores: tuple[str, Path, str, str]) -> None:
    src_uri, artifacts, dst_uri, dst_root = stores
    RegistryMigration(src_uri, artifacts, dst_uri, artifact_root=dst_root).run()
    again = RegistryMigration(src_uri, artifacts, dst_uri, artifact_root=dst_root).run()
    assert again[0].versions == [] and again[0].kept == ["1", "3", "4"]
    assert verify(src_uri, dst_uri, [MODEL]) == []

    other = Path(dst_uri.removeprefix("sqlite:///")).parent.parent / "other"
    other.mkdir()
    mlflow.set_tracking_uri(f"sqlite:///{other / 'mlflow.db'}")
    try:
        build_registry(MODEL, 1, (other / "mlartifacts").as_uri())
    finally:
        mlflow.set_tracking_uri(None)
    with pytest.raises(StackError, match=f"already has version 1 of {MODEL}, not copied from this state"):
        RegistryMigration(src_uri, artifacts, f"sqlite:///{other / 'mlflow.db'}", artifact_root=dst_root).run()


def test_artifact_uris_of_the_old_state_map_to_its_folder(tmp_path: Path) -> None:
    assert local_path("mlflow-artifacts:/churn/abc/artifacts", tmp_path) == tmp_path / "churn/abc/artifacts"
    assert local_path("mlflow-artifacts://127.0.0.1:5000/churn/x", tmp_path) == tmp_path / "churn/x"
    assert local_path((tmp_path / "a b").as_uri(), tmp_path) == tmp_path / "a b"
    with pytest.raises(StackError, match="not in the old state folder"):
        local_path("s3://bucket/churn", tmp_path)


def test_a_destination_whose_database_is_down_stops_the_migration_in_one_sentence(tmp_path: Path) -> None:
    """An MLflow server whose database stopped answers 503 to registry reads; the migration says so and copies
    nothing, after the probe's few retries instead of MLflow's default (each request retried for about 4 minutes)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from typer.testing import CliRunner

    from mlops.cli.main import app
    from mlops.stack.migration import PROBE_RETRIES

    asked: list[str] = []

    class Unavailable(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            asked.append(self.path)
            body = b'{"error_code": "TEMPORARILY_UNAVAILABLE", "message": "connection to the database failed"}'
            self.send_response(503)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Unavailable)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    old = tmp_path / "old"
    old.mkdir()
    (old / "mlflow.db").touch()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        res = CliRunner().invoke(app, ["migrate", "--from-state", str(old), "--state-dir", str(tmp_path / "state"),
                                       "--tracking-uri", url, "--no-deployments"])
    finally:
        server.shutdown()
        server.server_close()
    assert res.exit_code != 0, res.output
    assert f"the destination MLflow at {url} cannot read its registry (it answered 503)" in res.output, res.output
    assert "nothing was copied" in res.output, res.output
    assert "Traceback" not in res.output and ": copied" not in res.output
    # the probe's retries, not MLflow's default 7 (each request retried for about 4 minutes)
    assert 1 <= len(asked) <= PROBE_RETRIES + 1 and all("registered-models/search" in p for p in asked), asked
