"""Verify that a webhook came from Ferry: ``verify_signature(body, header, secret)``.

Ferry signs each delivery with ``Ferry-Signature: t=<unix time>,v1=<hex>``, where
``<hex>`` is HMAC-SHA256 of ``"<t>." + body`` under the endpoint's secret. While a
secret is being rotated the header carries several ``v1=``; any one matching is
enough. A timestamp further than ``tolerance`` seconds from now is refused, so a
captured delivery cannot be replayed later.
"""

from __future__ import annotations

import hashlib
import hmac
import time

from ferry_client._exceptions import InvalidSignature

HEADER = "Ferry-Signature"
TOLERANCE = 300


def sign(body: bytes, secret: str | bytes, timestamp: int) -> str:
    """The ``v1`` signature of ``body`` at ``timestamp`` (what Ferry sends)."""
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, b"%d." % timestamp + body, hashlib.sha256).hexdigest()


def verify_signature(
    body: bytes,
    header: str | None,
    secret: str | bytes,
    *,
    tolerance: int = TOLERANCE,
    now: float | None = None,
) -> int:
    """Check ``header`` (the ``Ferry-Signature`` value) against the raw request ``body``.

    Returns the signed timestamp; raises ``InvalidSignature`` saying why otherwise.
    Pass the body exactly as received, before any JSON parsing.
    """
    if not header:
        raise InvalidSignature(f"no {HEADER} header")
    timestamp: int | None = None
    signatures: list[str] = []
    for item in header.split(","):
        name, _, value = item.strip().partition("=")
        if name == "t" and value.isdigit():
            timestamp = int(value)
        elif name == "v1" and value:
            signatures.append(value)
    if timestamp is None or not signatures:
        raise InvalidSignature(f"malformed {HEADER} header: expected t=<unix time>,v1=<hex>")
    age = (time.time() if now is None else now) - timestamp
    if abs(age) > tolerance:
        raise InvalidSignature(f"the signature is {int(age)} s old, beyond {tolerance} s")
    expected = sign(body, secret, timestamp)
    if not any(hmac.compare_digest(expected, s) for s in signatures):
        raise InvalidSignature("no signature matches this body and secret")
    return timestamp
