"""Signing secrets sealed at rest: what is stored opens only with the configured keys."""

from __future__ import annotations

import base64

import msgspec
import pytest

from services.core.errors import SettingsError
from services.core.settings import Settings
from services.core.webhooks.sealing import PREFIX, Sealer, Unopenable

SECRET = "whsec_" + "s" * 43


def sealer(keys: str = "", jwt: str = "the-jwt-secret-" + "x" * 30) -> Sealer:
    return Sealer(msgspec.structs.replace(Settings(), webhook_secret_keys=keys, jwt_secret=jwt))


def test_a_sealed_secret_hides_the_secret_and_opens_to_it() -> None:
    sealed = sealer().seal(SECRET)
    assert sealed.startswith(PREFIX)
    assert "s" * 10 not in sealed
    assert "whsec_" not in sealed
    assert sealer().open(sealed) == SECRET
    assert sealer().seal(SECRET) != sealed  # a fresh nonce each time


def test_without_keys_the_key_comes_from_the_jwt_secret() -> None:
    sealed = sealer().seal(SECRET)
    with pytest.raises(Unopenable, match="FERRY_WEBHOOK_SECRET_KEYS"):
        sealer(jwt="another-jwt-secret-" + "y" * 30).open(sealed)
    # An operator rotating the JWT secret keeps the old one as a key, and nothing breaks.
    assert sealer("the-jwt-secret-" + "x" * 30).open(sealed) == SECRET
    with pytest.raises(SettingsError, match="FERRY_WEBHOOK_SECRET_KEYS"):
        sealer(jwt="")  # no key at all: refused, not a key everyone can derive


def test_the_first_key_seals_and_every_key_opens() -> None:
    old = sealer("old key").seal(SECRET)
    rotated = sealer("new key, old key")
    assert rotated.open(old) == SECRET
    assert rotated.stale(old)
    new = rotated.seal(SECRET)
    assert not rotated.stale(new)
    assert sealer("new key").open(new) == SECRET
    with pytest.raises(Unopenable):
        sealer("new key").open(old)


def test_a_secret_from_before_sealing_opens_as_it_is_and_is_stale() -> None:
    assert sealer().open(SECRET) == SECRET
    assert sealer().stale(SECRET)
    assert not sealer().stale(None)


def test_a_tampered_seal_does_not_open() -> None:
    sealed = sealer().seal(SECRET)
    head, _, data = sealed.rpartition(":")
    raw = bytearray(base64.urlsafe_b64decode(data))
    raw[-1] ^= 1
    with pytest.raises(Unopenable, match="does not open"):
        sealer().open(f"{head}:{base64.urlsafe_b64encode(bytes(raw)).decode()}")
