"""The Prefect UI as a person sees it: headless Chromium (Debian package `chromium`, driven over the
DevTools protocol) opens the UI of the running stack, finds the completed training run, opens its
markdown artifact and sees it rendered; a gate-rejected run says REJECTED on its page; the train
deployment's run form shows what each parameter means. Screenshots are saved next to the test's state
folder."""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.loopback import RETRY_STATUSES
from tests.support.stack import (
    TERMINAL,
    Live,
    api,
    ensure_trained,
    events,
    logs,
    run_deployment,
    wait_for,
    wait_state,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class Browser:
    """Headless Chromium with a fresh profile, one page, spoken to over the DevTools websocket."""

    def __init__(self, width: int = 1400, height: int = 1000) -> None:
        from websockets.sync.client import connect

        self.profile = tempfile.mkdtemp(prefix="mlops-chromium-")
        self.proc = subprocess.Popen(
            [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-default-apps",
             f"--user-data-dir={self.profile}", "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
             f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        port_file = Path(self.profile) / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.close()
                raise RuntimeError("Chromium did not open its DevTools port")
            time.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        page = next(t for t in httpx.get(f"http://127.0.0.1:{port}/json", timeout=5).json() if t["type"] == "page")
        self.ws = connect(page["webSocketDebuggerUrl"], max_size=64 * 1024 * 1024)
        self.ids = itertools.count(1)
        self.responses: list[tuple[str, int]] = []  # (url, status) of what the page fetched, once watch_network()
        self.requests: dict[str, str] = {}  # DevTools request id -> url, to name a request that got no answer

    def watch_network(self) -> None:
        """Record the URL and status of every response the page gets from now on (in `responses`; status 0 for a
        request that got no answer)."""
        self.send("Network.enable")

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        msg_id = next(self.ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:
            msg = self._receive(timeout=30)
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return dict(msg.get("result", {}))

    def _receive(self, timeout: float) -> dict[str, Any]:
        """The next DevTools message; a response event is recorded on the way (events arrive only as read)."""
        msg = dict(json.loads(self.ws.recv(timeout=timeout)))
        method, params = msg.get("method"), msg.get("params", {})
        if method == "Network.requestWillBeSent":
            self.requests[params["requestId"]] = params["request"]["url"]
        elif method == "Network.responseReceived":
            self.responses.append((params["response"]["url"], int(params["response"]["status"])))
        elif method == "Network.loadingFailed" and not params.get("canceled"):
            self.responses.append((self.requests.get(params["requestId"], "?"), 0))  # no answer at all
        return msg

    def answers(self, since: int = 0) -> list[tuple[str, int]]:
        """The responses recorded from the `since`-th on, after reading every event Chromium has sent so far."""
        while True:
            try:
                self._receive(timeout=0.05)
            except TimeoutError:
                return self.responses[since:]

    def js(self, expression: str) -> Any:
        res = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return res.get("result", {}).get("value")

    def goto(self, url: str) -> None:
        self.send("Page.navigate", url=url)

    def text(self) -> str:
        return str(self.js("document.body ? document.body.innerText : ''") or "")

    def wait_text(self, needle: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.text()
            if needle in text:
                return text
            time.sleep(0.25)
        raise AssertionError(f"{needle!r} never appeared; the page says:\n{self.text()[:2000]}")

    def click_text(self, text: str) -> str:
        """Click the innermost element whose own text is exactly `text`; returns its tag."""
        script = f"""(() => {{
            const want = {json.dumps(text)};
            const hits = [...document.querySelectorAll('body *')].filter(e => e.innerText && e.innerText.trim() === want);
            const el = hits.find(e => ![...e.children].some(c => c.innerText && c.innerText.trim() === want));
            if (!el) return null;
            el.scrollIntoView(); el.click(); return el.tagName;
        }})()"""
        tag = self.js(script)
        assert tag, f"nothing on the page reads {text!r}:\n{self.text()[:2000]}"
        return str(tag)

    def screenshot(self, path: Path) -> Path:
        data = self.send("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        with_ws = getattr(self, "ws", None)
        if with_ws is not None:
            with_ws.close()
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture
def browser() -> Browser:
    if CHROMIUM is None:
        if os.environ.get("CI"):  # .ci/run installs it: missing there is a failure, not a skip
            pytest.fail("headless Chromium is not installed although CI should have installed it")
        pytest.skip("headless Chromium is not installed (apt-get install -y chromium)")
    b = Browser()
    yield b
    b.close()


def test_prefect_ui_shows_the_training_run_and_its_markdown_report(live: Live, browser: Browser) -> None:
    run = ensure_trained(live)
    ui = live.opts.url("prefect")
    shots = live.work / "screenshots"
    shots.mkdir(exist_ok=True)

    # the runs list shows the completed training run
    browser.goto(f"{ui}/runs")
    browser.wait_text(run["name"], timeout=60)
    browser.click_text(run["name"])
    page = browser.wait_text("Artifacts")
    assert "Promoted" in page and "train" in page  # the final state names the outcome (a Completed type)

    # its Artifacts tab lists the markdown summary; opening it renders the markdown
    browser.click_text("Artifacts")
    key = f"{live.model}-training-summary"
    browser.wait_text(key)
    browser.click_text(key)
    page = browser.wait_text(f"Training run: {live.model} v1")
    heading = browser.js("[...document.querySelectorAll('h1')].map(h => h.innerText.trim())")
    assert f"Training run: {live.model} v1" in heading, heading  # rendered, not shown as raw "# ..."
    assert "Gate verdict" in page and "PASSED" in page
    shot = browser.screenshot(shots / "prefect-ui-training-summary.png")
    assert shot.stat().st_size > 10_000
    print(f"screenshot: {shot}")


def _rejected_run(live: Live) -> dict[str, Any]:
    """A training run the gate rejects: labels shuffled, so no model beats the roc_auc threshold."""
    from mlops.core.data import generate_churn

    ensure_trained(live)  # a champion to keep
    frame = generate_churn(rows=1500, seed=5)
    frame["churned"] = frame["churned"].sample(frac=1.0, random_state=0).to_numpy()
    path = live.data.parent / "churn-shuffled-labels.csv"
    frame.to_csv(path, index=False)
    run_id = run_deployment(live, "train", {"source_path": str(path), "reason": "e2e: labels shuffled"})
    assert wait_state(live, run_id, TERMINAL, timeout=300) == "COMPLETED", logs(live)
    run = api(live, "GET", f"/flow_runs/{run_id}")
    assert run["state"]["name"] == "Rejected" and run["state"]["message"].startswith("REJECTED"), run["state"]
    return dict(run)


def test_a_rejected_run_says_rejected_on_its_page(live: Live, browser: Browser) -> None:
    run = _rejected_run(live)
    ui = live.opts.url("prefect")
    assert run["name"] == f"train-{live.model}-e2e-labels-shuffled"
    assert {f"model:{live.model}", "outcome:rejected"} <= set(run["tags"]), run["tags"]
    assert any(t.startswith("version:v") for t in run["tags"]), run["tags"]
    # the MLflow links point at the MLflow server's pages (Prefect stores a link artifact as markdown)
    found = api(live, "POST", "/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [run["id"]]}}})
    data = {a["key"]: str(a["data"]) for a in found}
    mlflow = live.opts.url("mlflow")
    assert f"]({mlflow}/#/experiments/" in data[f"{live.model}-mlflow-run"], data
    assert f"]({mlflow}/#/models/{live.model}/versions/" in data[f"{live.model}-mlflow-version"], data
    assert "REJECTED" in data[f"{live.model}-versions"]

    browser.goto(f"{ui}/runs/flow-run/{run['id']}")
    page = browser.wait_text("Rejected", timeout=60)  # the state badge
    assert run["name"] in page and "outcome:rejected" in page
    browser.click_text("Details")
    page = browser.wait_text("REJECTED", timeout=30)  # the state message says why
    assert "State Message" in page
    (live.work / "screenshots").mkdir(exist_ok=True)
    shot = browser.screenshot(live.work / "screenshots" / "prefect-ui-rejected-run.png")
    assert shot.stat().st_size > 10_000


def test_the_train_run_form_shows_what_each_parameter_means(live: Live, browser: Browser) -> None:
    dep = api(live, "GET", "/deployments/name/train/train")
    ui = live.opts.url("prefect")
    browser.goto(f"{ui}/deployments/deployment/{dep['id']}/run")
    for text in ("The pipeline config (YAML)", "Why this run happens", "to use the config's source",
                 "Search settings for this run only", "Trials per model family", "configs/default.yaml"):
        browser.wait_text(text, timeout=60)
    (live.work / "screenshots").mkdir(exist_ok=True)
    shot = browser.screenshot(live.work / "screenshots" / "prefect-ui-train-form.png")
    assert shot.stat().st_size > 10_000

    # submitted as shown (nothing typed in), the form starts a run: no "None is not of type" complaint, and
    # the parameters left empty are left out (the flow's defaults apply)
    def runs() -> list[dict[str, Any]]:
        return api(live, "POST", "/flow_runs/filter", json={"deployments": {"id": {"any_": [dep["id"]]}}, "limit": 200})

    create = f"/deployments/{dep['id']}/create_flow_run"
    api_root = live.opts.api_url

    def retryable(status: int) -> bool:  # what Prefect's client retries, or a request that got no answer at all
        return status in RETRY_STATUSES or status == 0

    def started_or_refused(mark: int) -> list[Any]:
        """The runs the form started; else, from the page's requests after the `mark`-th response, the create
        request's error status, or any API request's retryable one (the UI shows "Something went wrong" when a
        request it makes on submit is refused with 503, and may then never send the create)."""
        started = [r for r in runs() if r["id"] not in before]
        if started:
            return started
        got = browser.answers(mark)
        return ([s for url, s in got if url.endswith(create) and s >= 400]
                or [s for url, s in got if url.startswith(api_root) and retryable(s)])

    before = {r["id"] for r in runs()}
    browser.watch_network()
    for _ in range(4):  # the UI does not retry a request the server refused with 503 (SQLite under load): submit
        mark = len(browser.answers())  # again, as Prefect's own client retries; any other answer is final
        browser.click_text("Submit")
        new = wait_for(lambda mark=mark: started_or_refused(mark), timeout=60)
        if not (new and isinstance(new[0], int) and retryable(new[0])):
            break
        new = wait_for(lambda: [r for r in runs() if r["id"] not in before], timeout=5) or new  # did it start anyway?
        if isinstance(new[0], dict):
            break
    created = [s for url, s in browser.answers() if url.endswith(create)]
    errors = [(url, s) for url, s in browser.answers() if s >= 400 or s == 0]
    assert new and isinstance(new[0], dict), (f"the form started no run (the create request got {created}, the"
                                              f" page's failed requests: {errors}); it says:\n{browser.text()[-1500:]}")
    assert "not of type" not in browser.text()
    params = new[0]["parameters"]
    assert "source_path" not in params and "search" not in params, params
    # The run is not needed: end it so it frees the deployment's slot for the next test. One that no worker has
    # started yet is cancelled outright (a CANCELLING run that no worker holds would keep the slot until the
    # slot's lease expires, minutes later); one already running is left to its worker to stop.
    new = wait_for(lambda: [r for r in runs() if r["id"] not in before], timeout=30)
    for run in new:
        running = api(live, "GET", f"/flow_runs/{run['id']}")["state"]["type"] == "RUNNING"
        api(live, "POST", f"/flow_runs/{run['id']}/set_state",
            json={"state": {"type": "CANCELLING" if running else "CANCELLED"}, "force": True})
    for run in new:
        assert wait_state(live, run["id"], TERMINAL, timeout=120) in TERMINAL, logs(live)


def test_a_retrain_with_nothing_to_train_on_shows_skipped_on_its_page(live: Live, browser: Browser) -> None:
    """A retrain request when the monitor holds no labelled rows trains nothing: its run ends in its own state,
    Skipped (a Completed type), saying why, not a plain Completed an operator would read as retrained."""
    from mlops.monitoring.retraining import LabelledStore
    from mlops.monitoring.run import MonitorPaths

    ensure_trained(live)
    store = LabelledStore(MonitorPaths.of(live.opts.state_dir, live.opts.state_dir / "reports", live.model).labelled)
    store.archive([f.name for f in store.files()])  # rows earlier tests' monitor runs kept: used up
    run_id = run_deployment(live, "retrain", {"reason": "e2e: nothing labelled"})
    assert wait_state(live, run_id, TERMINAL, timeout=180) == "COMPLETED", logs(live)
    run = api(live, "GET", f"/flow_runs/{run_id}")
    assert run["state"]["name"] == "Skipped", run["state"]
    assert run["state"]["message"].startswith("retrain skipped: "), run["state"]
    assert {"outcome:skipped", "outcome:refused"} & set(run["tags"]), run["tags"]  # no rows, or a training ran now

    browser.goto(f"{live.opts.url('prefect')}/runs/flow-run/{run_id}")
    browser.wait_text("Skipped", timeout=60)  # the state badge names the outcome
    browser.click_text("Details")
    browser.wait_text("retrain skipped", timeout=30)  # the state message says why
    (live.work / "screenshots").mkdir(exist_ok=True)
    shot = browser.screenshot(live.work / "screenshots" / "prefect-ui-skipped-retrain.png")
    assert shot.stat().st_size > 10_000


def test_no_automation_fails_after_a_promoted_run_and_a_completion_automation_fires(live: Live,
                                                                                    browser: Browser) -> None:
    """A user's automation on "flow run completed", keyed on the state type as docs/operations.md says, fires for
    a run that ended Promoted (a named state: its event is prefect.flow-run.Promoted, never ...Completed), and
    no automation action failed (the crash detector used to, 10 minutes after every named state)."""
    run = ensure_trained(live)
    assert run["state"]["name"] == "Promoted", run["state"]
    automation = api(live, "POST", "/automations/", json={
        "name": "e2e: a train run completed", "enabled": True,
        "trigger": {"type": "event", "posture": "Reactive", "threshold": 1, "within": 0,
                    "expect": ["prefect.flow-run.*"],
                    "match": {"prefect.resource.id": "prefect.flow-run.*", "prefect.state-type": "COMPLETED"},
                    "match_related": {"prefect.resource.role": "flow", "prefect.resource.name": "train"}},
        "actions": [{"type": "do-nothing"}]})
    try:
        promoted = run_deployment(live, "train", {"source_path": str(live.data), "reason": "e2e: completion automation"})
        assert wait_state(live, promoted, TERMINAL, timeout=300) == "COMPLETED", logs(live)
        state = api(live, "GET", f"/flow_runs/{promoted}")["state"]
        assert state["name"] in {"Promoted", "Rejected"}, state  # a named Completed state either way
        mine = f"prefect.automation.{automation['id']}"
        fired = wait_for(lambda: events(live, "prefect.automation.triggered", mine), timeout=120)
        assert fired, "the completion automation never fired for a run that ended " + state["name"]
        assert not events(live, "prefect.automation.action.failed"), events(live, "prefect.automation.action.failed")

        browser.goto(f"{live.opts.url('prefect')}/runs/flow-run/{promoted}")
        browser.wait_text(state["name"], timeout=60)  # the run's page: its named state, no crash mark later
        browser.goto(f"{live.opts.url('prefect')}/automations/automation/{automation['id']}")
        browser.wait_text("e2e: a train run completed", timeout=60)
        (live.work / "screenshots").mkdir(exist_ok=True)
        browser.screenshot(live.work / "screenshots" / "prefect-ui-completion-automation.png")
    finally:
        api(live, "DELETE", f"/automations/{automation['id']}")


def test_the_drift_report_link_opens_the_report_in_mlflow(live: Live, browser: Browser) -> None:
    """The monitor run's `drift-report` link artifact is the report's page on the MLflow server (not a file://
    path the browser blocks), and that page shows the Evidently report for the model."""
    import re

    ensure_trained(live)
    run_id = run_deployment(live, "monitor", {"current_path": str(live.data)})
    assert wait_state(live, run_id, TERMINAL, timeout=300) == "COMPLETED", logs(live)
    found = api(live, "POST", "/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [run_id]}}})
    data = {a["key"]: str(a["data"]) for a in found}
    link = re.search(r"\]\((http[^)]+)\)", data.get(f"{live.model}-drift-report", ""))
    assert link, data
    url = link.group(1)
    assert url.startswith(live.opts.url("mlflow") + "/#/"), url
    browser.goto(url)
    # MLflow shows an HTML artifact in an iframe (inline or from a blob URL): read what it shows
    script = """(async () => { const parts = [document.body ? document.body.innerText : ''];
        for (const f of document.querySelectorAll('iframe')) {
            parts.push(f.getAttribute('srcdoc') || '');
            try { parts.push(f.contentDocument.documentElement.innerText) } catch (e) {}
            const src = f.getAttribute('src') || '';
            if (src.startsWith('blob:') || src.startsWith('http')) {
                try { parts.push(await (await fetch(src)).text()) } catch (e) { parts.push('fetch failed: ' + e) }
            }
        }
        return parts.join('\\n'); })()"""
    frames = "[...document.querySelectorAll('iframe')].map(f => [f.src.slice(0, 80), f.sandbox + '', (f.srcdoc || '').length])"
    want = f"Drift report: {live.model} v"
    shown = wait_for(lambda: want in str(browser.js(script) or ""), timeout=90)
    assert shown, f"{want!r} never appeared at {url}; iframes {browser.js(frames)}; the page ends:\n{browser.text()[-1500:]}"
    (live.work / "screenshots").mkdir(exist_ok=True)
    browser.screenshot(live.work / "screenshots" / "mlflow-drift-report.png")
