"""The retrain policy: when monitoring windows add up to a retrain, and how only one training starts.

`decide` is pure with an injected clock: it takes the policy state, one window's summary and the
config, and returns a decision with its reasons plus the new state. The rules:

- An empty window gives no decision; a data-quality failure (missing column, type change) gives
  no drift verdict and no retrain. Neither extends nor breaks a streak of drifted windows.
- On a labelled window a fresh model (fitted without the window's newer half) is scored beside the
  champion (mlops.monitoring.payoff); its gains add up, never below zero, into the champion's
  staleness since the last retrain (a CUSUM). A retrain pays when the staleness exceeds
  `retrain_cost` and this window's gain is significant: a steady small gain retrains every few
  windows, a sudden large one at once. With the default cost a significant gain alone retrains once the
  retrain budget (below) is full: a retrain not taken then is budget lost. Where that comparison was
  made it decides alone: a champion that decayed while a fresh model does no better is kept (a retrain
  would not help), and drift is then only noted.
- Otherwise a window drifts when its drift share >= `drift_share_threshold`; `consecutive_windows`
  drifted windows in a row, or degraded live quality, call for a retrain.
- A retrain is blocked while a training run is in flight (a lock that expires after
  `training_lock_minutes`), within `cooldown_minutes` of the last retrain, while the retrain budget
  is short of one retrain (each judged window adds `retrain_budget`, 0.5 by default, up to
  `retrain_burst`; a retrain spends 1: growing data would otherwise retrain nearly every window, while
  a sudden change after a quiet stretch may still retrain back to back), and while fewer than
  `min_rows` new rows have been monitored since the last retrain (rows accumulate over windows).
  A blocked call stays pending: the streak is kept, so the next window can retrain.

`PolicyStore` keeps the state in a JSON file guarded by an exclusive lock (`mlops.core.state`), so two monitor
runs at once cannot both trigger; `should_start_training` is the training side's guard against
event storms (ten triggers in a minute start one training).

Every guard (cooldown, dedupe, min rows, the training lock) reads one clock (`Clock`): the wall clock
in production, data time in a backtest or a test (`clock_at`). A claimed training that trained
nothing frees the slot as if it had never started (`finish_training(trained=False)`).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from mlops.core.config import RetrainPolicyConfig
from mlops.core.state import LockedJsonFile, Transaction

Verdict = Literal["retrain", "hold", "no_decision"]
Clock = Callable[[], datetime]


def wall_clock() -> datetime:
    """Now, in UTC: the production clock."""
    return datetime.now(UTC)


def clock_at(at: datetime | None) -> Clock:
    """The clock every guard reads: the wall clock, or (given `at`) a clock stopped at that data time."""
    if at is None:
        return wall_clock
    fixed = _utc(at)
    return lambda: fixed


def _utc(now: datetime) -> datetime:
    """Aware UTC; a naive time is taken to be UTC already."""
    return now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)


def _iso(t: datetime | None) -> str | None:
    return None if t is None else _utc(t).isoformat()


def _parse(t: str | None) -> datetime | None:
    return None if t is None else _utc(datetime.fromisoformat(t))


@dataclass
class WindowSummary:
    """What one monitoring window tells the policy."""

    rows: int
    drift_share: float | None = None
    dataset_drift: bool = False
    quality_degraded: bool = False
    quality_reason: str = ""
    quality_failed: bool = False
    model_version: str | None = None  # the champion that scored the window
    live_metric: float | None = None  # its primary metric on the window's labelled rows
    payoff_gain: float | None = None  # how much better a fresh model did on the window (mlops.monitoring.payoff)
    payoff_ci_low: float | None = None  # its lower confidence bound
    payoff_cost: float | None = None  # the retrain cost it is weighed against
    payoff_reason: str = ""


@dataclass
class TrainingLock:
    """A training run requested by the policy (`started` False) or running (`started` True)."""

    requested_at: datetime
    expires_at: datetime
    started: bool = False
    started_at: datetime | None = None
    run_id: str | None = None
    previous_start_at: datetime | None = None  # restored when the run trains nothing

    def active(self, now: datetime) -> bool:
        return _utc(now) < self.expires_at

    def to_dict(self) -> dict[str, Any]:
        return {"requested_at": _iso(self.requested_at), "expires_at": _iso(self.expires_at),
                "started": self.started, "started_at": _iso(self.started_at), "run_id": self.run_id,
                "previous_start_at": _iso(self.previous_start_at)}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TrainingLock:
        requested, expires = _parse(raw["requested_at"]), _parse(raw["expires_at"])
        if requested is None or expires is None:
            raise ValueError("a training lock needs requested_at and expires_at")
        return cls(requested, expires, bool(raw.get("started", False)), _parse(raw.get("started_at")),
                   raw.get("run_id"), _parse(raw.get("previous_start_at")))


@dataclass
class PolicyState:
    """Everything the policy remembers between windows; round-trips through JSON."""

    consecutive_drifted: int = 0
    new_rows: int = 0
    staleness: float = 0.0  # what keeping the champion has cost since the last retrain (summed fresh-model gains)
    budget: float | None = None  # retrains the budget allows now (retrain_budget); None before the first retrain
    last_retrain_at: datetime | None = None
    last_training_start_at: datetime | None = None
    in_flight: TrainingLock | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    live_baselines: dict[str, list[float]] = field(default_factory=dict)  # version -> its first live metrics

    def to_dict(self) -> dict[str, Any]:
        return {
            "consecutive_drifted": self.consecutive_drifted,
            "new_rows": self.new_rows,
            "staleness": self.staleness,
            "budget": self.budget,
            "last_retrain_at": _iso(self.last_retrain_at),
            "last_training_start_at": _iso(self.last_training_start_at),
            "in_flight": None if self.in_flight is None else self.in_flight.to_dict(),
            "history": self.history,
            "live_baselines": self.live_baselines,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> PolicyState:
        lock = raw.get("in_flight")
        return cls(
            consecutive_drifted=int(raw.get("consecutive_drifted", 0)),
            new_rows=int(raw.get("new_rows", 0)),
            staleness=float(raw.get("staleness", 0.0)),
            budget=None if raw.get("budget") is None else float(raw["budget"]),
            last_retrain_at=_parse(raw.get("last_retrain_at")),
            last_training_start_at=_parse(raw.get("last_training_start_at")),
            in_flight=None if lock is None else TrainingLock.from_dict(lock),
            history=list(raw.get("history", [])),
            live_baselines={str(k): [float(x) for x in v] for k, v in (raw.get("live_baselines") or {}).items()},
        )

    @classmethod
    def from_json(cls, text: str) -> PolicyState:
        return cls.from_dict(json.loads(text))


@dataclass
class Decision:
    """The verdict for one window, with every reason; `to_dict` is the retrain event's payload."""

    retrain: bool
    reasons: list[str]
    verdict: Verdict
    at: datetime
    drifted: bool | None = None
    consecutive_drifted: int = 0
    new_rows: int = 0
    triggers: list[str] = field(default_factory=list)
    blocks: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["at"] = _iso(self.at)
        return out


def _clear_expired_lock(state: PolicyState, now: datetime, notes: list[str]) -> None:
    lock = state.in_flight
    if lock is not None and not lock.active(now):
        notes.append(f"the training lock from {_iso(lock.requested_at)} expired at {_iso(lock.expires_at)} "
                     "without the run reporting back; cleared")
        state.in_flight = None


KEPT_BASELINES = 20  # versions whose live baselines the state keeps


@dataclass(frozen=True)
class LiveBaseline:
    """The live level a champion's window is judged against: a mean of first labelled windows, and whose."""

    value: float
    windows: int
    label: str  # how the reason names it


def live_baseline(state: PolicyState, version: str | None, windows: int) -> LiveBaseline | None:
    """A version's live-quality baseline (the mean of its first `windows` labelled windows' metric) once it has
    them all; until then the baseline of the last champion that formed one (a new champion should do no worse
    live than the one it replaced); None when no version has one (live quality falls back to the holdout)."""
    if windows <= 0 or version is None:
        return None
    own = state.live_baselines.get(str(version), [])
    if len(own) >= windows:
        return LiveBaseline(sum(own[:windows]) / windows, windows,
                            f"live baseline (the champion's first {windows} labelled window(s))")
    for other, values in reversed(state.live_baselines.items()):
        if other != str(version) and len(values) >= windows:
            return LiveBaseline(sum(values[:windows]) / windows, windows,
                                f"live baseline of v{other}, the champion before (its first {windows} labelled "
                                f"window(s); v{version} is forming its own)")
    return None


def with_live_metric(summary: WindowSummary, version: str | None, live: Any) -> WindowSummary:
    """The window summary told which champion scored it and its primary metric there (a LiveQuality)."""
    if version is not None and live is not None and getattr(live, "status", None) == "ok":
        summary.model_version = str(version)
        summary.live_metric = live.metrics.get(live.primary_metric)
    return summary


def _note_live_metric(state: PolicyState, window: WindowSummary, windows: int) -> None:
    """Keep the champion's metric while its baseline is still being gathered."""
    if window.model_version is None or window.live_metric is None or window.live_metric != window.live_metric:
        return
    values = state.live_baselines.setdefault(str(window.model_version), [])
    if len(values) < windows:
        values.append(float(window.live_metric))
    for old in list(state.live_baselines)[:-KEPT_BASELINES]:
        del state.live_baselines[old]


def _weigh_payoff(state: PolicyState, window: WindowSummary, budget_full: bool) -> str:
    """Add the window's fresh-model gain to the champion's staleness (a CUSUM: never below zero); a retrain pays
    when the staleness exceeds the retrain cost and this window's gain is not noise, or, with the default cost,
    when the gain is not noise and the budget is at retrain_burst (`budget_full`: a retrain not taken now is
    budget lost). Returns the trigger or ''."""
    if window.payoff_gain is None or window.payoff_cost is None:
        return ""
    state.staleness = max(0.0, state.staleness + window.payoff_gain)
    if (window.payoff_ci_low or 0.0) <= 0:
        return ""
    if state.staleness > window.payoff_cost:
        return (f"{window.payoff_reason}; the champion's staleness {state.staleness:.4g} (fresh models' gains summed "
                f"since the last retrain) exceeds retrain_cost {window.payoff_cost:.4g}: a retrain pays")
    if budget_full:
        return (f"{window.payoff_reason}; the champion's staleness {state.staleness:.4g} is under the default "
                f"retrain_cost {window.payoff_cost:.4g}, but the retrain budget is full (retrain_burst): a retrain "
                "not taken now is budget lost, so a gain that is not noise pays")
    return ""


def decide(
    state: PolicyState, window: WindowSummary, cfg: RetrainPolicyConfig, now: datetime
) -> tuple[Decision, PolicyState]:
    """Apply the retrain rules to one window; returns the decision and the new state (input untouched)."""
    now = _utc(now)
    new = copy.deepcopy(state)
    notes: list[str] = []
    _clear_expired_lock(new, now, notes)
    _note_live_metric(new, window, cfg.live_baseline_windows)

    if window.rows <= 0:
        decision = Decision(False, [*notes, "empty window: no rows, so no decision"], "no_decision", now,
                            consecutive_drifted=new.consecutive_drifted, new_rows=new.new_rows)
        return decision, _record(new, decision, window, cfg)
    if window.quality_failed:
        why = window.quality_reason or "the data-quality check failed"
        decision = Decision(False, [*notes, f"data-quality failure ({why}): no drift verdict, no retrain"],
                            "no_decision", now, consecutive_drifted=new.consecutive_drifted, new_rows=new.new_rows)
        return decision, _record(new, decision, window, cfg)
    if window.drift_share is None and not window.quality_degraded and window.payoff_gain is None:
        decision = Decision(False, [*notes, "the window has no drift share, so no decision"], "no_decision", now,
                            consecutive_drifted=new.consecutive_drifted, new_rows=new.new_rows)
        return decision, _record(new, decision, window, cfg)

    new.new_rows += window.rows
    if new.budget is not None:
        new.budget = min(cfg.retrain_burst, new.budget + cfg.retrain_budget)
    drifted: bool | None = None
    triggers: list[str] = []
    if window.drift_share is not None:
        drifted = window.drift_share >= cfg.drift_share_threshold
        new.consecutive_drifted = new.consecutive_drifted + 1 if drifted else 0
        relation = ">=" if drifted else "<"
        notes.append(f"drift share {window.drift_share:.3f} {relation} {cfg.drift_share_threshold:.3f}: "
                     f"{new.consecutive_drifted} of {cfg.consecutive_windows} consecutive drifted window(s)")
        judged = window.live_metric is not None and window.live_metric == window.live_metric
        drift_decides = cfg.drift_trigger == "always"
        if new.consecutive_drifted >= cfg.consecutive_windows and window.payoff_gain is not None and not drift_decides:
            notes.append("drift is not a trigger here: a fresh model scored on the window's labels tells directly "
                         "whether a retrain pays")
        elif new.consecutive_drifted >= cfg.consecutive_windows and judged and cfg.drift_trigger == "without_labels":
            notes.append("drift is not a trigger here: the window's labels judged the champion directly "
                         "(drift_trigger: without_labels)")
        elif new.consecutive_drifted >= cfg.consecutive_windows:
            triggers.append(f"drift share >= {cfg.drift_share_threshold:.3f} for {new.consecutive_drifted} "
                            f"consecutive window(s) (needs {cfg.consecutive_windows})")
    # with the budget at retrain_burst this window's share overflowed: a retrain not taken now is budget lost
    budget_full = cfg.retrain_cost is None and new.budget is not None and new.budget >= cfg.retrain_burst - 1e-9
    pays = _weigh_payoff(new, window, budget_full)
    if pays:
        triggers.append(pays)
    elif window.payoff_gain is not None:
        cost = window.payoff_cost or 0.0
        over = new.staleness > cost
        noise = "" if (window.payoff_ci_low or 0.0) > 0 else f", {'but' if over else 'and'} this window's gain is within noise"
        notes.append(f"{window.payoff_reason}; kept: the champion's staleness {new.staleness:.4g} (fresh models' gains "
                     f"summed since the last retrain) {'exceeds' if over else 'does not exceed'} retrain_cost "
                     f"{cost:.4g}{noise}")
        if window.quality_degraded:
            notes.append(f"live quality degraded ({window.quality_reason or 'no reason given'}), but a retrain would "
                         "not fix it: a fresh model does no better")
    elif window.quality_degraded:
        triggers.append(f"live quality degraded ({window.quality_reason or 'no reason given'})")

    blocks: list[str] = []
    if triggers:
        lock = new.in_flight
        if lock is not None:
            state_word = "running" if lock.started else "requested"
            blocks.append(f"a training run is already {state_word} (since {_iso(lock.requested_at)}, "
                          f"lock expires {_iso(lock.expires_at)})")
        if new.last_retrain_at is not None:
            since = now - new.last_retrain_at
            if since < timedelta(minutes=cfg.cooldown_minutes):
                blocks.append(f"cooldown: {since.total_seconds() / 60:.1f} min since the last retrain "
                              f"< {cfg.cooldown_minutes:g} min")
        if new.budget is not None and new.budget < 1.0 - 1e-9:
            blocks.append(f"retrain budget {new.budget:.2f} < 1: at most {cfg.retrain_budget:.0%} of the windows "
                          f"retrain, on average (retrain_budget)")
        if new.new_rows < cfg.min_rows:
            blocks.append(f"only {new.new_rows} new row(s) since the last retrain < min_rows {cfg.min_rows}")

    retrain = bool(triggers) and not blocks
    reasons = [*notes, *triggers, *(f"blocked: {b}" for b in blocks)]
    if not triggers:
        reasons.append("no retrain trigger")
    decision = Decision(retrain, reasons, "retrain" if retrain else "hold", now, drifted,
                        new.consecutive_drifted, new.new_rows, triggers, blocks)
    if retrain:
        new.last_retrain_at = now
        new.consecutive_drifted = 0
        new.new_rows = 0
        new.staleness = 0.0
        new.budget = 0.0 if new.budget is None else new.budget - 1.0  # the first retrain spends nothing saved
        new.in_flight = TrainingLock(now, now + timedelta(minutes=cfg.training_lock_minutes))
    return decision, _record(new, decision, window, cfg)


def _record(state: PolicyState, decision: Decision, window: WindowSummary, cfg: RetrainPolicyConfig) -> PolicyState:
    state.history.append({
        "at": _iso(decision.at),
        "verdict": decision.verdict,
        "retrain": decision.retrain,
        "rows": window.rows,
        "drift_share": window.drift_share,
        "dataset_drift": window.dataset_drift,
        "drifted": decision.drifted,
        "consecutive_drifted": decision.consecutive_drifted,
        "reasons": decision.reasons,
    })
    del state.history[: max(0, len(state.history) - cfg.history_size)]
    return state


def start_training(
    state: PolicyState, now: datetime, dedupe_window: timedelta, lock_minutes: float = 240.0,
    run_id: str | None = None, is_alive: Callable[[str], bool | None] | None = None,
) -> tuple[bool, PolicyState]:
    """Claim the single training slot: refused while a run is running or within the dedupe window.

    `is_alive(run_id)` (False: the run holding the slot has ended, e.g. a crashed or cancelled worker whose
    run never released it; None: unknown) frees a slot no training holds any more, so no request is folded
    into a training that does not exist.
    """
    now = _utc(now)
    new = copy.deepcopy(state)
    _clear_expired_lock(new, now, [])
    lock = new.in_flight
    if lock is not None and lock.started and lock.run_id and is_alive is not None and is_alive(lock.run_id) is False:
        new = finish_training(new, now, succeeded=False, trained=False)
    if new.in_flight is not None and new.in_flight.started:
        return False, new
    if new.last_training_start_at is not None and now - new.last_training_start_at < dedupe_window:
        return False, new
    requested = new.in_flight.requested_at if new.in_flight is not None else now
    new.in_flight = TrainingLock(requested, now + timedelta(minutes=lock_minutes), True, now, run_id,
                                 new.last_training_start_at)
    new.last_training_start_at = now
    return True, new


def finish_training(state: PolicyState, now: datetime, succeeded: bool, trained: bool = True) -> PolicyState:
    """Release the training slot; a successful run restarts the cooldown from its finish.

    A run that trained nothing (`trained` False: no labelled rows, no champion) or failed leaves no start
    behind, so requests in the next `dedupe_seconds` are not folded into a training that never was or that
    produced nothing; when the policy asked for it, it gives back the retrain budget it took.
    """
    new = copy.deepcopy(state)
    lock = new.in_flight
    gone = not trained or not succeeded
    if gone and lock is not None and lock.started and lock.started_at == new.last_training_start_at:
        new.last_training_start_at = lock.previous_start_at
    if gone and lock is not None and new.budget is not None and lock.requested_at == new.last_retrain_at:
        new.budget += 1.0  # the policy's retrain retrained nothing: its share of the budget is not spent
    new.in_flight = None
    if succeeded:
        new.last_retrain_at = _utc(now)
        new.consecutive_drifted = 0
        new.new_rows = 0
        new.staleness = 0.0
    return new


# ---------------------------------------------------------------------------------------------
# file-backed store


class PolicyStore:
    """The policy state in a JSON file (`mlops.core.state.LockedJsonFile`): every read-modify-write holds
    an exclusive lock, so concurrent monitor runs and trainings see each other's changes."""

    def __init__(self, path: str | Path, timeout_seconds: float = 30.0) -> None:
        self.file: LockedJsonFile[PolicyState] = LockedJsonFile(
            path, "retrain policy state", PolicyState, parse=PolicyState.from_dict, dump=PolicyState.to_dict,
            holder="monitor run", timeout_seconds=timeout_seconds)
        self.path = self.file.path

    def load(self) -> PolicyState:
        return self.file.read()

    @contextmanager
    def transaction(self) -> Iterator[Transaction[PolicyState]]:
        """Exclusive read-modify-write: replace `tx.data` and it is saved when the block ends cleanly."""
        with self.file.transaction() as tx:
            yield tx


def decide_and_record(store: PolicyStore, window: WindowSummary, cfg: RetrainPolicyConfig, now: datetime) -> Decision:
    """`decide` under the store's exclusive lock, so concurrent monitor runs see each other's decision."""
    with store.transaction() as tx:
        decision, tx.data = decide(tx.data, window, cfg, now)
    return decision


def should_start_training(
    store: PolicyStore, now: datetime, dedupe_window: timedelta | float, lock_minutes: float = 240.0,
    run_id: str | None = None, is_alive: Callable[[str], bool | None] | None = None,
) -> bool:
    """True for exactly one caller per training: the event-storm guard at the start of training.

    `dedupe_window` is a timedelta or seconds; starts closer together than this collapse into one.
    """
    window = dedupe_window if isinstance(dedupe_window, timedelta) else timedelta(seconds=float(dedupe_window))
    with store.transaction() as tx:
        ok, tx.data = start_training(tx.data, now, window, lock_minutes, run_id, is_alive)
    return ok


def record_training_finished(store: PolicyStore, now: datetime, succeeded: bool, trained: bool = True) -> None:
    """Release the training slot in the store (call when a training run ends, either way; `trained`
    False when it trained nothing)."""
    with store.transaction() as tx:
        tx.data = finish_training(tx.data, now, succeeded, trained)


@dataclass
class TrainingSlot:
    """The single training slot as `training_slot` claimed it. `granted` False: another training holds it
    (`refusal` says which, in one sentence). The block sets `trained` once a training starts and `succeeded` when
    it completed, which the release records."""

    granted: bool
    refusal: str = ""
    trained: bool = False
    succeeded: bool = False


@contextmanager
def training_slot(store: PolicyStore, clock: Clock, cfg: RetrainPolicyConfig, run_id: str, model_name: str,
                  is_alive: Callable[[str], bool | None] | None = None) -> Iterator[TrainingSlot]:
    """Claim the training slot for the block (`should_start_training`: one training per burst of requests) and
    release it when the block ends, either way (`record_training_finished`, as the block set `trained` and
    `succeeded`); a refused claim holds nothing, so it releases nothing."""
    if not should_start_training(store, clock(), cfg.dedupe_seconds, cfg.training_lock_minutes, run_id, is_alive):
        holder = store.load().in_flight
        which = f"flow run {holder.run_id}" if holder is not None and holder.run_id else "the training started"
        yield TrainingSlot(False, f"another training of '{model_name}' ({which}) is running or started less than "
                                  f"{cfg.dedupe_seconds:g} s ago; this request is folded into it")
        return
    slot = TrainingSlot(True)
    try:
        yield slot
    finally:
        record_training_finished(store, clock(), slot.succeeded, slot.trained)
