"""Request signing shared by the bridge, its tests, the benchmark and senders.

Signature = "sha256=" + hex(HMAC-SHA256(secret, f"{timestamp}.".encode() + raw_body)), sent in
X-Mlops-Signature with the timestamp (unix seconds) in X-Mlops-Timestamp and a unique delivery id in
X-Mlops-Delivery. Binding the timestamp into the MAC stops an old request from being re-dated.

The status route (`GET /hooks/<source>/deliveries/<id>`) is signed the same way with the source's
secret, over `GET <path>` (the request path exactly as sent) in place of a body.
"""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid

SIGNATURE_HEADER = "X-Mlops-Signature"
TIMESTAMP_HEADER = "X-Mlops-Timestamp"
DELIVERY_HEADER = "X-Mlops-Delivery"
SCHEME = "sha256="


def _key(secret: str | bytes) -> bytes:
    return secret.encode("utf-8") if isinstance(secret, str) else secret


def sign(secret: str | bytes, timestamp: int | str, body: bytes) -> str:
    """Return the X-Mlops-Signature value for `body` sent at `timestamp`."""
    mac = hmac.new(_key(secret), f"{timestamp}.".encode() + body, hashlib.sha256)
    return SCHEME + mac.hexdigest()


def verify(secret: str | bytes, timestamp: str, body: bytes, signature: str) -> bool:
    """True when `signature` is the valid signature of (timestamp, body); constant-time compare."""
    expected = sign(secret, timestamp, body)
    return hmac.compare_digest(expected.encode("ascii"), signature.encode("utf-8", "replace"))


def signed_headers(
    secret: str | bytes,
    body: bytes,
    *,
    timestamp: int | None = None,
    delivery_id: str | None = None,
) -> dict[str, str]:
    """All headers a sender needs for one delivery (content type included)."""
    ts = int(time.time()) if timestamp is None else int(timestamp)
    return {
        "Content-Type": "application/json",
        TIMESTAMP_HEADER: str(ts),
        DELIVERY_HEADER: delivery_id or str(uuid.uuid4()),
        SIGNATURE_HEADER: sign(secret, ts, body),
    }


def status_message(path: str | bytes) -> bytes:
    """What a status request signs in place of a body: `GET <path>`."""
    return b"GET " + (path.encode("utf-8") if isinstance(path, str) else path)


def status_headers(secret: str | bytes, path: str, *, timestamp: int | None = None) -> dict[str, str]:
    """The headers of a signed `GET <path>` to the status route (path as sent, e.g.
    `/hooks/data-vendor/deliveries/vendor-42`)."""
    ts = int(time.time()) if timestamp is None else int(timestamp)
    return {TIMESTAMP_HEADER: str(ts), SIGNATURE_HEADER: sign(secret, ts, status_message(path))}
