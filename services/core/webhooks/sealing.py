"""Signing secrets sealed at rest: what the database holds cannot sign a webhook.

A secret is shown once, when it is made, and then only needed to sign deliveries; the
database keeps it sealed with AES-256-GCM (``sealed:v1:<key id>:<nonce + ciphertext>``,
base64url), so a copy of the database or a backup is not enough to forge a webhook
to a customer's receiver. The keys come from ``FERRY_WEBHOOK_SECRET_KEYS`` — the
first seals, each of them opens, so a key is rotated by putting the new one first —
or, when that is empty, from ``FERRY_JWT_SECRET``. Each key is any text, stretched by
HKDF to 32 bytes; its id is the start of the key's SHA-256, so a sealed secret names
the key that opens it.

A secret stored before sealing existed (``whsec_…``) opens as it is; workers seal it,
and reseal those sealed with a key that is no longer the first (``reseal``).
"""

from __future__ import annotations

import base64
import hashlib
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from services.core.errors import SettingsError, Unavailable
from services.core.settings import Settings

PREFIX = "sealed:v1:"
_CONTEXT = b"ferry webhook signing secret"  # bound to every ciphertext, and to the keys


class Unopenable(Unavailable):
    """A sealed secret none of the configured keys opens: the keys were changed without
    keeping the old one. 503 until an operator adds it back."""


class Sealer:
    """Seals with the first key of the settings, opens with any of them."""

    def __init__(self, settings: Settings) -> None:
        texts = [t.strip() for t in settings.webhook_secret_keys.split(",") if t.strip()]
        if not texts and not settings.jwt_secret:  # a key derived from nothing hides nothing
            raise SettingsError("set FERRY_WEBHOOK_SECRET_KEYS or FERRY_JWT_SECRET")
        self._keys = [_key(text) for text in texts or [settings.jwt_secret]]
        self._by_id = {_key_id(k): k for k in reversed(self._keys)}  # the first wins a tie

    @property
    def current(self) -> str:
        """How a value sealed by the current key starts: the prefix and the key's id."""
        return f"{PREFIX}{_key_id(self._keys[0])}:"

    def seal(self, secret: str) -> str:
        nonce = os.urandom(12)
        sealed = AESGCM(self._keys[0]).encrypt(nonce, secret.encode(), _CONTEXT)
        return self.current + base64.urlsafe_b64encode(nonce + sealed).decode()

    def open(self, stored: str) -> str:
        """The secret of a stored value: sealed, or kept from before sealing."""
        if not stored.startswith(PREFIX):
            return stored
        key_id, _, data = stored.removeprefix(PREFIX).partition(":")
        key = self._by_id.get(key_id)
        if key is None:
            raise Unopenable(
                f"the webhook's signing secret is sealed with key {key_id}, which is not "
                "among FERRY_WEBHOOK_SECRET_KEYS (or the key derived from FERRY_JWT_SECRET); "
                "add the key it was sealed with"
            )
        raw = base64.urlsafe_b64decode(data)
        try:
            return AESGCM(key).decrypt(raw[:12], raw[12:], _CONTEXT).decode()
        except InvalidTag:
            raise Unopenable(
                f"the webhook's signing secret, sealed with key {key_id}, does not open with "
                "it: it was changed in the database"
            ) from None

    def stale(self, stored: str | None) -> bool:
        """Stored in the clear, or sealed with a key that no longer seals."""
        return stored is not None and not stored.startswith(self.current)


def _key(text: str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_CONTEXT).derive(
        text.encode()
    )


def _key_id(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:8]
