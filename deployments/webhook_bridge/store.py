"""Persistent memory of accepted deliveries (SQLite under the state dir), for replay protection.

A delivery is first *claimed* (pending), then *confirmed* once Prefect took the event, or *released*
if emission failed so the sender may retry. Claims are atomic (a unique key inside BEGIN IMMEDIATE),
so two concurrent copies of one delivery cannot both pass, even across worker processes. A claim
left pending by a crash is reclaimable after `stale_claim_seconds`: the event id is deterministic,
so a retry of a delivery that did reach Prefect is deduplicated there.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS seen (
    key TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    claimed_at REAL NOT NULL,
    expires_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS seen_expires ON seen (expires_at);
"""

CLAIM = """
INSERT INTO seen (key, state, claimed_at, expires_at) VALUES (?, 'pending', ?, ?)
ON CONFLICT (key) DO UPDATE SET state = 'pending', claimed_at = excluded.claimed_at,
    expires_at = excluded.expires_at
WHERE seen.expires_at < excluded.claimed_at OR (seen.state = 'pending' AND seen.claimed_at < ?)
"""


class DeliveryStore:
    """Seen-delivery keys with expiry. Each call is a short synchronous SQLite transaction."""

    def __init__(self, path: Path, *, stale_claim_seconds: float = 60.0, purge_every: float = 60.0) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.stale_claim_seconds = stale_claim_seconds
        self._purge_every = purge_every
        self._next_purge = 0.0
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=5.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)

    def claim(self, keys: dict[str, float], now: float | None = None) -> str | None:
        """Claim every key (key -> seconds to remember it) or none; return the first key already
        taken, or None when all were claimed."""
        now = time.time() if now is None else now
        stale = now - self.stale_claim_seconds
        with self._lock:
            self._maybe_purge(now)
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for key, ttl in keys.items():
                    if self._db.execute(CLAIM, (key, now, now + ttl, stale)).rowcount != 1:
                        self._db.execute("ROLLBACK")
                        return key
                self._db.execute("COMMIT")
                return None
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def confirm(self, keys: list[str]) -> None:
        """Mark claimed keys as delivered: a later copy is a replay."""
        self._many("UPDATE seen SET state = 'done' WHERE key = ?", keys)

    def release(self, keys: list[str]) -> None:
        """Forget pending claims after a failed emission so the sender can retry."""
        self._many("DELETE FROM seen WHERE key = ? AND state = 'pending'", keys)

    def _many(self, sql: str, keys: list[str]) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(sql, [(k,) for k in keys])
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def state(self, key: str) -> str | None:
        """The stored state of a key ('pending', 'done') or None; for tests and operators."""
        with self._lock:
            row = self._db.execute(
                "SELECT state FROM seen WHERE key = ? AND expires_at >= ?", (key, time.time())
            ).fetchone()
        return row[0] if row else None

    def _maybe_purge(self, now: float) -> None:
        if now >= self._next_purge:
            self._db.execute("DELETE FROM seen WHERE expires_at < ?", (now,))
            self._next_purge = now + self._purge_every

    def close(self) -> None:
        with self._lock:
            self._db.close()
