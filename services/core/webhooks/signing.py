"""``Ferry-Signature``: HMAC-SHA256 over ``timestamp + "." + body``, keyed by the secret.

    Ferry-Signature: t=1767225600,v1=5257a869e7…

- ``t``: the Unix time (seconds) the attempt was signed; every attempt signs afresh.
- ``v1``: the lowercase hex HMAC-SHA256 of the bytes ``f"{t}.".encode() + body``, keyed
  with the secret's UTF-8 bytes (``whsec_`` prefix included).
- While a rotated-out secret is in its grace period, the header has one ``v1`` per
  secret, the new one first.

A receiver computes the HMAC with its secret, accepts when it equals any ``v1`` (in
constant time) and ``t`` is within a tolerance of its clock (replays of old bodies
fail), then drops deliveries whose ``Ferry-Delivery`` it already handled.
``verify_signature`` is the reference implementation; the README shows it.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Sequence

SCHEME = "v1"
TOLERANCE_SECONDS = 300.0


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The ``v1`` value of ``body`` signed at ``timestamp`` with ``secret``."""
    message = f"{timestamp}.".encode() + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signature_header(secrets: Sequence[str], timestamp: int, body: bytes) -> str:
    """The ``Ferry-Signature`` value: one ``v1`` per secret, in the order given."""
    parts = [f"t={timestamp}"] + [f"{SCHEME}={signature(s, timestamp, body)}" for s in secrets]
    return ",".join(parts)


def verify_signature(
    secret: str,
    header: str,
    body: bytes,
    tolerance: float = TOLERANCE_SECONDS,
    *,
    now: float | None = None,
) -> bool:
    """True when ``header`` signs exactly ``body`` with ``secret`` within ``tolerance`` s."""
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.isdigit():
            timestamp = int(value)
        elif key == SCHEME:
            candidates.append(value)
    if timestamp is None or not candidates:
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    expected = signature(secret, timestamp, body)
    return any(hmac.compare_digest(expected, candidate) for candidate in candidates)
