"""The bridge's SQLite file under the state dir: seen deliveries (replay protection) and the outbox.

`accept()` is one transaction: it claims the delivery's keys (its delivery id and its signature) and
queues the event in the outbox, or does neither. Claims are atomic (a unique key inside BEGIN
IMMEDIATE), so two concurrent copies of one delivery cannot both pass, even across worker processes.
Once `accept()` returns, the event survives a crash of the bridge or an outage of Prefect: the
forwarder leases outbox rows, sends them, and deletes them when Prefect acknowledged them. A lease
left by a crashed forwarder expires and the row is sent again; the event id is deterministic, so
Prefect drops the second copy. Events Prefect refuses as invalid move to `dead_letter`.

`deliveries` remembers each accepted delivery (its event id, when it was accepted and forwarded, or why
Prefect refused it) as long as its delivery id, for the status route (`GET /hooks/<source>/deliveries/<id>`).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from mlops.core.settings import private_file

SCHEMA = """
CREATE TABLE IF NOT EXISTS seen (
    key TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    claimed_at REAL NOT NULL,
    expires_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS seen_expires ON seen (expires_at);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    body BLOB NOT NULL,
    created_at REAL NOT NULL,
    lease_until REAL NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT
);
CREATE TABLE IF NOT EXISTS deliveries (
    source TEXT NOT NULL,
    delivery TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event TEXT NOT NULL,
    accepted_at REAL NOT NULL,
    forwarded_at REAL,
    error TEXT,
    expires_at REAL NOT NULL,
    PRIMARY KEY (source, delivery)
);
CREATE INDEX IF NOT EXISTS deliveries_event ON deliveries (event_id);
CREATE INDEX IF NOT EXISTS deliveries_expires ON deliveries (expires_at);
CREATE TABLE IF NOT EXISTS dead_letter (
    event_id TEXT PRIMARY KEY,
    body BLOB NOT NULL,
    created_at REAL NOT NULL,
    failed_at REAL NOT NULL,
    error TEXT NOT NULL
);
"""

# A key is free when unseen or past its retention.
CLAIM = """
INSERT INTO seen (key, state, claimed_at, expires_at) VALUES (?, 'done', ?, ?)
ON CONFLICT (key) DO UPDATE SET claimed_at = excluded.claimed_at, expires_at = excluded.expires_at
WHERE seen.expires_at < excluded.claimed_at
"""


@dataclass(frozen=True)
class Delivery:
    """What the bridge knows about one accepted delivery."""

    source: str
    delivery: str
    event_id: str
    event: str
    accepted_at: float
    forwarded_at: float | None = None
    error: str | None = None  # why Prefect refused the event (it is in dead_letter)
    queued: bool = False  # still in the outbox
    last_error: str | None = None  # the last failed attempt to forward it


class DeliveryStore:
    """Seen-delivery keys with expiry, and the outbox. Each call is a short synchronous SQLite transaction."""

    def __init__(self, path: Path, *, purge_every: float = 60.0) -> None:
        private_file(path)  # delivery ids and queued events: the bridge owner's only
        self.path = path
        self._purge_every = purge_every
        self._next_purge = 0.0
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=5.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)

    def accept(self, keys: dict[str, float], event_id: str, body: bytes, now: float | None = None,
               record: tuple[str, str, str, float] | None = None) -> str | None:
        """Record every key (key -> seconds to remember it) as seen and queue `body` (the event's JSON)
        in the outbox, in one transaction; return the first key already taken (nothing changed), or None.
        `record` (source, delivery id, event name, seconds to keep it) remembers the delivery for its status."""
        now = time.time() if now is None else now
        with self._lock:
            self._maybe_purge(now)
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for key, ttl in keys.items():
                    if self._db.execute(CLAIM, (key, now, now + ttl)).rowcount != 1:
                        self._db.execute("ROLLBACK")
                        return key
                self._db.execute("INSERT OR IGNORE INTO outbox (event_id, body, created_at) VALUES (?, ?, ?)",
                                 (event_id, body, now))
                if record is not None:
                    source, delivery, event, ttl = record
                    self._db.execute(
                        "INSERT OR REPLACE INTO deliveries (source, delivery, event_id, event, accepted_at, expires_at) "
                        "VALUES (?, ?, ?, ?, ?, ?)", (source, delivery, event_id, event, now, now + ttl))
                self._db.execute("COMMIT")
                return None
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    # ---- the outbox ------------------------------------------------------------------------------
    def lease(self, limit: int, lease_seconds: float, now: float | None = None) -> list[tuple[int, bytes]]:
        """Up to `limit` queued events, oldest first, that no live lease holds; lease them to the caller."""
        now = time.time() if now is None else now
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                rows = self._db.execute(
                    "SELECT seq, body FROM outbox WHERE lease_until <= ? ORDER BY seq LIMIT ?", (now, limit)
                ).fetchall()
                self._db.executemany("UPDATE outbox SET lease_until = ?, attempts = attempts + 1 WHERE seq = ?",
                                     [(now + lease_seconds, seq) for seq, _ in rows])
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        return [(int(seq), bytes(body)) for seq, body in rows]

    def sent(self, seqs: list[int], now: float | None = None) -> None:
        """Prefect acknowledged these events: note it on their deliveries and drop them from the outbox."""
        now = time.time() if now is None else now
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "UPDATE deliveries SET forwarded_at = ? WHERE event_id = (SELECT event_id FROM outbox WHERE seq = ?)",
                    [(now, seq) for seq in seqs])
                self._db.executemany("DELETE FROM outbox WHERE seq = ?", [(seq,) for seq in seqs])
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def retry_later(self, seqs: list[int], delay: float, error: str, now: float | None = None) -> None:
        """Sending failed; make the rows available again after `delay` seconds."""
        now = time.time() if now is None else now
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany("UPDATE outbox SET lease_until = ?, last_error = ? WHERE seq = ?",
                                 [(now + delay, error[:500], seq) for seq in seqs])
            self._db.execute("COMMIT")

    def dead(self, seq: int, error: str, now: float | None = None) -> None:
        """Prefect refused this event as invalid: keep it in `dead_letter` for an operator, out of the outbox."""
        now = time.time() if now is None else now
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "INSERT OR REPLACE INTO dead_letter (event_id, body, created_at, failed_at, error) "
                    "SELECT event_id, body, created_at, ?, ? FROM outbox WHERE seq = ?", (now, error[:500], seq))
                self._db.execute(
                    "UPDATE deliveries SET error = ? WHERE event_id = (SELECT event_id FROM outbox WHERE seq = ?)",
                    (error[:500], seq))
                self._db.execute("DELETE FROM outbox WHERE seq = ?", (seq,))
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def outbox_stats(self, now: float | None = None) -> dict[str, float | int | str | None]:
        """Queued events, the age of the oldest, the last send error, and dead letters (for /health)."""
        now = time.time() if now is None else now
        with self._lock:
            count, oldest = self._db.execute("SELECT COUNT(*), MIN(created_at) FROM outbox").fetchone()
            err = self._db.execute(
                "SELECT last_error FROM outbox WHERE last_error IS NOT NULL ORDER BY seq LIMIT 1").fetchone()
            dead = self._db.execute("SELECT COUNT(*) FROM dead_letter").fetchone()[0]
        return {"queued": int(count), "oldest_age_seconds": round(now - oldest, 3) if oldest else 0.0,
                "last_error": err[0] if err else None, "dead_letters": int(dead)}

    def delivery(self, source: str, delivery: str, now: float | None = None) -> Delivery | None:
        """What is known about one delivery (None when unknown or past its retention)."""
        now = time.time() if now is None else now
        with self._lock:
            row = self._db.execute(
                "SELECT d.source, d.delivery, d.event_id, d.event, d.accepted_at, d.forwarded_at, d.error, "
                "o.seq IS NOT NULL, o.last_error FROM deliveries d LEFT JOIN outbox o ON o.event_id = d.event_id "
                "WHERE d.source = ? AND d.delivery = ? AND d.expires_at >= ?", (source, delivery, now)).fetchone()
        if row is None:
            return None
        return Delivery(row[0], row[1], row[2], row[3], float(row[4]), row[5], row[6], bool(row[7]), row[8])

    def seen(self, key: str, now: float | None = None) -> bool:
        """Whether a key is remembered (within its retention); for tests and operators."""
        now = time.time() if now is None else now
        with self._lock:
            row = self._db.execute("SELECT 1 FROM seen WHERE key = ? AND expires_at >= ?", (key, now)).fetchone()
        return row is not None

    def _maybe_purge(self, now: float) -> None:
        if now >= self._next_purge:
            self._db.execute("DELETE FROM seen WHERE expires_at < ?", (now,))
            self._db.execute("DELETE FROM deliveries WHERE expires_at < ?", (now,))
            self._next_purge = now + self._purge_every

    def close(self) -> None:
        with self._lock:
            self._db.close()
