"""Hot swap: watch the alias, load a new version in the background, check it, then swap atomically.

Requests read `Watcher.current` once and use that model to the end, so a swap never changes the
model under an in-flight request. A version that fails to load or fails its self-check is not
served and is retried with backoff; the old model keeps serving. A version whose gate failed with no
override recorded on it (mlops.registry.versions.serving_refusal) is refused the same way, checked
again at every poll (an override recorded later is picked up at once). With the registry unreachable
at start-up the server stays not-ready and retries; during a swap it keeps serving the old model.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from mlops.core.startup import freeze_heap
from mlops.registry import versions as registry
from mlops.serving.model import LoadError, Refused, ServedModel, check_servable, load_served_model, resolve_version

log = logging.getLogger("mlops.model_server")

MAX_RETRY_SECONDS = 300.0
MIN_RETRY_SECONDS = 5.0


class ModelSource(Protocol):
    def resolve(self) -> str:
        """The version the alias points at now; raises LoadError when it cannot be known."""

    def load(self, version: str) -> ServedModel:
        """Load and self-check a version; raises LoadError."""


@dataclass
class RegistrySource:
    name: str
    alias: str = "champion"
    tracking_uri: str | None = None
    enforce_ranges: bool = True
    fast_path: bool = True

    def resolve(self) -> str:
        return resolve_version(self.name, self.alias, self.tracking_uri)[0]

    def load(self, version: str) -> ServedModel:
        digest = check_servable(self.name, version, self.tracking_uri)  # Refused before anything is downloaded
        return load_served_model(self.name, version, self.tracking_uri, self.enforce_ranges, self.fast_path, digest)

    def tags(self, version: str) -> dict[str, str]:
        return dict(registry.client(self.tracking_uri).get_model_version(self.name, version).tags)


@dataclass
class _Failure:
    count: int
    retry_at: float
    error: str


@dataclass
class WatchState:
    status: str = "starting"
    last_error: str | None = None
    last_check: float | None = None
    target_version: str | None = None
    swaps: list[dict[str, Any]] = field(default_factory=list)
    registry_error: str | None = None  # the last alias check failed (None once it answers again)
    refused: dict[str, str] | None = None  # the version the alias names and why it is not served

    def degraded(self, serving: str | None) -> list[str]:
        """Why the server, serving `serving`, is not serving what it should (empty when all is well)."""
        if serving is None:
            return []
        out = []
        if self.registry_error:
            out.append(f"the registry is unreachable; still serving v{serving}: {self.registry_error}")
        if self.target_version is not None and self.target_version != serving:
            why = self.refused["reason"] if self.refused and self.refused["version"] == self.target_version \
                else self.last_error or "loading it"
            out.append(f"the alias names v{self.target_version}, not served; still serving v{serving}: {why}")
        return out


class Watcher:
    def __init__(self, source: ModelSource, poll_seconds: float, metrics: Any = None,
                 trigger_file: Path | None = None, on_tick: Any = None, freeze_gc: bool = False) -> None:
        self.source = source
        self.freeze_gc = freeze_gc
        self.poll_seconds = poll_seconds
        self.metrics = metrics
        self.trigger_file = trigger_file
        self.on_tick = on_tick
        self.current: ServedModel | None = None
        self.state = WatchState()
        self._failures: dict[str, _Failure] = {}
        self._check_lock = threading.Lock()
        self._kick = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._trigger_mtime = self._mtime()

    def _count(self, name: str) -> None:
        if self.metrics is not None:
            self.metrics.count(name)

    def _mtime(self) -> float:
        try:
            return self.trigger_file.stat().st_mtime if self.trigger_file else 0.0
        except OSError:
            return 0.0

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="model-watcher", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._kick.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def kick(self) -> None:
        """Check the alias now (the reload route)."""
        self._kick.set()

    def _run(self) -> None:
        next_poll = 0.0
        backoff = 0.5
        last_tick = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            mtime = self._mtime()
            triggered = mtime != self._trigger_mtime
            if now >= next_poll or self._kick.is_set() or triggered:
                self._kick.clear()
                self._trigger_mtime = mtime
                ok = self.check()
                if self.current is None and not ok:
                    next_poll = time.monotonic() + min(backoff, self.poll_seconds)
                    backoff = min(backoff * 2, 30.0)
                else:
                    backoff = 0.5
                    next_poll = time.monotonic() + self.poll_seconds
            if self.on_tick is not None and now - last_tick >= 2.0:
                last_tick = now
                try:
                    self.on_tick()
                except Exception:  # noqa: BLE001 - metrics publishing must not stop the watcher
                    log.debug("metrics publish failed", exc_info=True)
            self._kick.wait(max(0.01, min(0.5, next_poll - time.monotonic())))

    def check(self) -> bool:
        """Resolve the alias and swap when it moved; True when serving what the alias names."""
        with self._check_lock:
            self.state.last_check = time.time()
            try:
                version = self.source.resolve()
            except LoadError as exc:
                self._count("reload_unreachable")
                self.state.last_error = str(exc)
                self.state.registry_error = str(exc)
                self.state.status = "serving" if self.current else "not ready"
                if self.current:
                    log.warning("registry check failed; still serving v%s: %s", self.current.version, exc)
                else:
                    log.warning("no model yet: %s", exc)
                return False
            self.state.registry_error = None
            self.state.target_version = version
            if self.current is not None and self.current.version == version:
                self.state.status = "serving"
                self.state.last_error = None
                self.state.refused = None
                if self.current.promoted_at is None and hasattr(self.source, "tags"):
                    # `promote` moves the alias first and stamps the version just after
                    try:
                        self.current.tags.update(self.source.tags(version))
                    except Exception:  # noqa: BLE001 - informational only
                        pass
                return True
            failure = self._failures.get(version)
            if failure and time.monotonic() < failure.retry_at:
                return False
            old = self.current.version if self.current else None
            log.info("loading %s (serving: %s)", version, old or "nothing")
            self.state.status = "loading" if self.current is None else "serving"
            try:
                new = self.source.load(version)
            except Refused as exc:
                self._refuse(version, str(exc), failure)
                return False
            except Exception as exc:  # noqa: BLE001 - LoadError, or a bug in a model's code
                count = failure.count + 1 if failure else 1
                delay = min(MAX_RETRY_SECONDS, max(MIN_RETRY_SECONDS, self.poll_seconds) * 2 ** (count - 1))
                msg = str(exc) if isinstance(exc, LoadError) else f"{type(exc).__name__}: {exc}"
                self._failures[version] = _Failure(count, time.monotonic() + delay, msg)
                self._count("reload_failed")
                self.state.last_error = f"version {version} not served: {msg}"
                self.state.status = "serving" if self.current else "not ready"
                log.error("version %s not served (attempt %d, next in %.0f s): %s", version, count, delay, msg)
                return False
            first = self.current is None
            self.current = new  # the swap: one reference assignment
            if self.freeze_gc:
                # ~400k long-lived objects (MLflow, scikit-learn, pandas, the model): a full collection
                # would stop every request for hundreds of ms. Collect first only before the first
                # model serves (nobody waits); after a hot swap freeze the new objects alone.
                freeze_heap(collect=first)
            self._failures.pop(version, None)
            self.state.refused = None
            self._count("reload_swapped")
            self.state.status = "serving"
            self.state.last_error = None
            self.state.swaps.append({"from": old, "to": new.version, "at": time.time()})
            del self.state.swaps[:-20]
            log.info("now serving %s v%s (was %s; %s)", new.name, new.version, old or "nothing", new.fast_reason)
            return True

    def _refuse(self, version: str, reason: str, failure: _Failure | None) -> None:
        """Keep serving what is served; check the version again at the next poll (cheap: its tags)."""
        first = failure is None or failure.error != reason
        self._failures[version] = _Failure((failure.count + 1) if failure else 1,
                                           time.monotonic() + min(self.poll_seconds, MIN_RETRY_SECONDS), reason)
        serving = self.current.version if self.current else None
        self.state.refused = {"version": version, "reason": reason}
        self.state.last_error = f"version {version} not served: {reason}"
        self.state.status = "serving" if self.current else "not ready"
        if first:  # once per version and reason, not at every poll
            self._count("reload_refused")
            log.error("version %s not served: %s; %s", version, reason,
                      f"still serving v{serving}" if serving else "nothing is served")
