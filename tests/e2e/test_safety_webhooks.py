"""Attacks on the real stack through the webhook bridge and the train deployment, as a security reviewer
would make them (issue 12): a path outside the data roots (`/etc/passwd`, `../` traversal, a symlink
out of a root) or over the size cap is refused before it is opened; an empty, null, wrong-typed or
missing path is a 422 and starts nothing; an empty `source_path` given to the deployment is refused,
not read as "train on the built-in data"; files that arrive together are each run in turn (queued,
never cancelled) and the sender can look every delivery up; no run state or log quotes the data.

Every file here fails before training, so the champion never moves; the module deletes the train
runs it made, so the modules after it see the stack as they would without it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest

from mlops.webhooks.signing import status_headers
from tests.support.stack import SETTLE, TERMINAL, Live, api, champion, deliver, logs, run_deployment, runs, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

TOKEN = "TOKEN-" + uuid.uuid4().hex[:12]  # in every data file here; must never show in a state or a log
QUEUED_FILES = 3


def status(live: Live, delivery: str) -> httpx.Response:
    path = f"/hooks/data-vendor/deliveries/{delivery}"
    return httpx.get(f"{live.opts.url('webhook-bridge')}{path}", headers=status_headers(live.secret, path), timeout=30)


def run_logs(live: Live, run_ids: list[str]) -> str:
    found = api(live, "POST", "/logs/filter", json={"logs": {"flow_run_id": {"any_": run_ids}}, "limit": 200})
    return "\n".join(str(entry["message"]) for entry in found)


def state_names(live: Live, run_id: str) -> list[str]:
    return [str(s["name"]) for s in api(live, "GET", "/flow_run_states/", params={"flow_run_id": run_id})]


@dataclass
class Attack:
    """Deliveries made together, what the stack did with them, and the runs to delete afterwards."""

    deliveries: dict[str, str]  # case -> delivery id
    paths: dict[str, str]
    run_of: dict[str, dict[str, Any]] = field(default_factory=dict)  # case -> its finished flow run
    made: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def attack(live: Live, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Attack]:
    """Deliver every path attack and three files at once, then wait until each has its finished run."""
    before = {r["id"] for r in runs(live)}
    champion_before = champion(live)
    outside = tmp_path_factory.mktemp("outside-the-roots")  # not under the config's folder
    secret = outside / "secret.csv"
    secret.write_text(f"user,password\nroot,{TOKEN}\n")
    here = live.work / "safety"  # under the config's folder: a data root
    here.mkdir(exist_ok=True)
    link = here / "innocent.csv"
    link.unlink(missing_ok=True)
    link.symlink_to(secret)
    big = here / "big.csv"
    with big.open("wb") as fh:
        fh.truncate(300 * 1024 * 1024)  # sparse: over the 256 MiB default cap, nothing written
    climb = "../" * len(live.work.resolve().parts)
    paths = {
        "etc_passwd": "/etc/passwd",
        "traversal": f"{here}/{climb}{str(secret).lstrip('/')}",
        "symlink_out": str(link),
        "over_size": str(big),
    }
    for i in range(QUEUED_FILES):  # inside a root and read, but not training data: the header lacks the target
        f = here / f"queued-{i}.csv"
        f.write_text(f"{TOKEN}_{i},root:x:0:0:{TOKEN}\n1,{TOKEN}\n2,{TOKEN}\n")
        paths[f"queued_{i}"] = str(f)
    deliveries = {case: f"safety-{case}-{uuid.uuid4()}" for case in paths}
    for case, path in paths.items():
        resp = deliver(live, {"dataset": "churn", "path": path, "rows": 1}, delivery=deliveries[case])
        assert resp.status_code == 202, (case, resp.text)
    found = Attack(deliveries, paths)
    try:
        # each delivery's automation creates its run; on a busy SQLite server a creation answered 503 is retried
        # by the server's client for up to about 4 minutes (SERVER_CLIENT_RETRIES)
        mine = wait_for(lambda: (m := [r for r in runs(live) if r["id"] not in before]) and len(m) >= len(paths) and m,
                        timeout=300)
        assert mine and len(mine) == len(paths), logs(live)
        found.made = [r["id"] for r in mine]
        by_path = {r["parameters"]["source_path"]: r["id"] for r in mine}
        assert set(by_path) == set(paths.values())
        for case, path in paths.items():
            run_id = by_path[path]
            done = wait_for(lambda rid=run_id: (r := api(live, "GET", f"/flow_runs/{rid}"))["state"]["type"] in TERMINAL
                            and r, timeout=600)
            assert done, (case, logs(live))
            found.run_of[case] = done
        assert champion(live) == champion_before
        yield found
    finally:
        for run_id in found.made:  # the modules after this one count train runs from zero
            wait_for(lambda rid=run_id: api(live, "GET", f"/flow_runs/{rid}")["state"]["type"] in TERMINAL, timeout=600)
            api(live, "DELETE", f"/flow_runs/{run_id}")


# ---- tests ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("payload", "words"), [
    ({"dataset": "churn", "path": ""}, "payload field 'path' must not be empty"),
    ({"dataset": "churn", "path": None}, "payload field 'path' must be a string, got null"),
    ({"dataset": "churn", "path": 123}, "payload field 'path' must be a string, got an integer"),
    ({"dataset": "churn", "path": ["/etc/passwd"]}, "payload field 'path' must be a string, got a list"),
    ({"dataset": "churn"}, "payload field 'path' is required"),
])
def test_an_empty_null_wrong_typed_or_missing_path_is_422_and_starts_nothing(
        live: Live, payload: dict[str, Any], words: str) -> None:
    before = len(runs(live))
    delivery = f"safety-422-{uuid.uuid4()}"
    resp = deliver(live, payload, delivery=delivery)
    assert resp.status_code == 422 and words in resp.json()["error"], resp.text
    assert "StrictUndefined" not in resp.text
    time.sleep(SETTLE)
    assert len(runs(live)) == before
    assert status(live, delivery).status_code == 404  # never accepted, so nothing to look up


@pytest.mark.parametrize("case", ["etc_passwd", "traversal", "symlink_out"])
def test_a_path_outside_the_data_roots_is_refused_before_it_is_opened(live: Live, attack: Attack, case: str) -> None:
    run = attack.run_of[case]
    message = run["state"]["message"] or ""
    assert run["state"]["type"] == "FAILED", message
    assert "refused: a data file must resolve, symlinks followed, inside a data root" in message
    assert TOKEN not in message and "root:x" not in message
    if case == "symlink_out":
        assert "it resolves to" in message


def test_a_file_over_the_size_cap_is_refused_before_it_is_read(live: Live, attack: Attack) -> None:
    run = attack.run_of["over_size"]
    assert run["state"]["type"] == "FAILED"
    assert "314,572,800 bytes is over the cap of 268,435,456 bytes" in run["state"]["message"]


def test_files_that_arrive_together_each_get_a_run_in_turn_none_cancelled(live: Live, attack: Attack) -> None:
    queued = [f"queued_{i}" for i in range(QUEUED_FILES)]
    for case in queued:
        run = attack.run_of[case]
        assert run["state"]["type"] == "FAILED", (case, run["state"])  # it ran and read its file
        assert "target column(s) ['churned'" in run["state"]["message"] and "not in the data" in run["state"]["message"]
    everything = [attack.run_of[c] for c in attack.paths]
    assert not [r for r in everything if r["state"]["type"] == "CANCELLED"]
    waited = [r["id"] for r in everything if "AwaitingConcurrencySlot" in state_names(live, r["id"])]
    assert waited, "files delivered together overlap, so some run must have waited for the slot"


def test_every_accepted_delivery_can_be_looked_up_to_its_run(live: Live, attack: Attack) -> None:
    for case, delivery in attack.deliveries.items():
        want = attack.run_of[case]["id"]
        doc = wait_for(lambda d=delivery: (s := status(live, d).json()).get("status") == "run" and s, timeout=60)
        assert doc, (case, status(live, delivery).text)
        assert [r["id"] for r in doc["runs"]] == [want] and doc["runs"][0]["state"] == "FAILED"
        assert doc["forwarded_at"] and doc["event"] == "mlops.data.arrived"
        assert TOKEN not in orjson.dumps(doc).decode()


def test_no_state_message_or_log_quotes_the_data(live: Live, attack: Attack) -> None:
    ids = list(attack.made)
    text = run_logs(live, ids) + "\n".join(str(attack.run_of[c]["state"]["message"]) for c in attack.paths)
    assert "refused" in text and "not in the data" in text
    assert TOKEN not in text and "root:x" not in text
    worker_log = (live.opts.logs_dir / "worker.log").read_text(errors="replace")
    assert TOKEN not in worker_log and "root:x:0:0" not in worker_log


def test_an_empty_source_path_given_to_the_deployment_is_refused(live: Live, attack: Attack) -> None:
    """The deployment, not only the webhook: "" used to mean "train on the config's built-in data"."""
    before = champion(live)
    run_id = run_deployment(live, "train", {"source_path": "", "reason": "e2e: empty path"})
    attack.made.append(run_id)
    done = wait_for(lambda: (r := api(live, "GET", f"/flow_runs/{run_id}"))["state"]["type"] in TERMINAL and r,
                    timeout=300)
    assert done and done["state"]["type"] == "FAILED", done
    assert "source_path must name a CSV/Parquet file or folder inside a data root" in done["state"]["message"]
    assert champion(live) == before
