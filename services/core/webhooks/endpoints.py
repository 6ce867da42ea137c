"""Webhook endpoints of an org: register, change, delete, rotate the signing secret.

A secret is shown once, in the answer that made it; the api never shows it again. A
rotated-out secret keeps signing beside the new one for a grace period, so receivers
can switch without dropping a delivery. Requests that carry an ``Idempotency-Key``
answer a retry with what the first one made (secret included), instead of making
another endpoint or another secret.
"""

from __future__ import annotations

import secrets
import uuid
from datetime import datetime
from typing import Any, Literal

import asyncpg
import msgspec

from services.core.db.pool import Pool
from services.core.errors import Conflict, InvalidInput, NotFound
from services.core.jobs import JobStatus, Kind, key_reused, request_hash
from services.core.settings import Settings
from services.core.webhooks import Q, addresses
from services.core.webhooks.sealing import Sealer, Unopenable

EventType = Literal[
    "job.succeeded",
    "job.failed",
    "job.cancelled",
    "import.validated",
    "import.committed",
    "import.rolled_back",
]
# Which change of a job is which event; migration 0040's webhook_event_types says the same.
EVENTS: dict[tuple[Kind, JobStatus], EventType] = {
    ("export", JobStatus.SUCCEEDED): "job.succeeded",
    ("export", JobStatus.FAILED): "job.failed",
    ("import", JobStatus.FAILED): "job.failed",
    ("export", JobStatus.CANCELLED): "job.cancelled",
    ("import", JobStatus.CANCELLED): "job.cancelled",
    ("import", JobStatus.VALIDATED): "import.validated",
    ("import", JobStatus.COMMITTED): "import.committed",
    ("import", JobStatus.ROLLED_BACK): "import.rolled_back",
}
PING = "ping"  # sent by POST /v1/webhooks/{id}/test, whatever the endpoint subscribed to
MAX_PER_ORG = 50
MAX_DESCRIPTION = 500
SECRET_PREFIX = "whsec_"  # noqa: S105 - the prefix of made secrets, not a secret


class Endpoint(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    org_id: str
    url: str
    events: list[str]
    description: str | None
    enabled: bool
    secret: str
    previous_secret: str | None
    previous_secret_until: datetime | None
    idempotency_key: str | None
    request_hash: str | None
    secret_key: str | None
    created_by: str
    created_at: datetime
    updated_at: datetime


def _endpoint(row: asyncpg.Record) -> Endpoint:
    return Endpoint(**{**dict(row.items()), "events": list(row["events"])})


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def _opened(endpoint: Endpoint, sealer: Sealer) -> Endpoint:
    """The endpoint with its current secret in the clear, to show the once it may be."""
    return msgspec.structs.replace(endpoint, secret=sealer.open(endpoint.secret))


def check_fields(events: list[str], description: str | None) -> tuple[list[str], str | None]:
    """The events without repeats and the trimmed description; InvalidInput otherwise."""
    errors = []
    if not events:
        errors.append({"field": "events", "message": "subscribe to at least one event"})
    if description is not None and len(description) > MAX_DESCRIPTION:
        errors.append({"field": "description", "message": f"over {MAX_DESCRIPTION} characters"})
    elif description is not None and "\x00" in description:
        errors.append({"field": "description", "message": "must not contain NUL characters"})
    if errors:
        raise InvalidInput(
            "; ".join(f"{e['field']}: {e['message']}" for e in errors), errors=errors
        )
    return list(dict.fromkeys(events)), (description.strip() or None) if description else None


async def create_endpoint(
    db: Pool,
    settings: Settings,
    *,
    org_id: str,
    user_id: str,
    url: str,
    events: list[str],
    description: str | None = None,
    enabled: bool = True,
    idempotency_key: str | None = None,
) -> tuple[Endpoint, bool]:
    """Register an endpoint with a new secret; ``(endpoint, created)``.

    The URL must be one Ferry may reach (``addresses``). The same Idempotency-Key and
    body return the first endpoint; with another body they are refused.
    """
    events, description = check_fields(events, description)
    digest = request_hash(
        {"url": url, "events": events, "description": description, "enabled": enabled}
    )
    sealer = Sealer(settings)
    if idempotency_key is not None:
        replay = await _by_key(db, org_id, idempotency_key, digest)
        if replay is not None:
            return _opened(replay, sealer), False
    await addresses.resolve(url, settings)
    secret = new_secret()
    row = await db.fetchrow(
        Q.insert_endpoint,
        uuid.uuid4(),
        org_id,
        url,
        events,
        description,
        enabled,
        sealer.seal(secret),
        idempotency_key,
        digest if idempotency_key else None,
        user_id,
        MAX_PER_ORG,
    )
    if row is not None:
        return msgspec.structs.replace(_endpoint(row), secret=secret), True
    if idempotency_key is not None and (
        replay := await _by_key(db, org_id, idempotency_key, digest)
    ):
        return _opened(replay, sealer), False  # a concurrent request with the same key won
    raise Conflict(f"this org has {MAX_PER_ORG} webhooks; delete one first")


async def _by_key(db: Pool, org_id: str, key: str, digest: str) -> Endpoint | None:
    row = await db.fetchrow(Q.get_endpoint_by_key, org_id, key)
    if row is None:
        return None
    if row["request_hash"] != digest:
        raise key_reused()
    return _endpoint(row)


async def list_endpoints(db: Pool, org_id: str) -> list[Endpoint]:
    """The org's endpoints, oldest first."""
    return [_endpoint(r) for r in await db.fetch(Q.list_endpoints, org_id)]


async def get_endpoint(db: Pool, endpoint_id: uuid.UUID, org_id: str) -> Endpoint:
    """An endpoint of this org, or NotFound (also for another org's)."""
    row = await db.fetchrow(Q.get_endpoint, endpoint_id, org_id)
    if row is None:
        raise NotFound("no such webhook")
    return _endpoint(row)


async def update_endpoint(
    db: Pool, settings: Settings, endpoint: Endpoint, changes: dict[str, Any]
) -> Endpoint:
    """Change ``url``, ``events``, ``description`` or ``enabled``; a new URL is checked."""
    merged = {
        name: changes.get(name, getattr(endpoint, name))
        for name in ("url", "events", "description", "enabled")
    }
    events, description = check_fields(merged["events"], merged["description"])
    if merged["url"] != endpoint.url:
        await addresses.resolve(merged["url"], settings)
    row = await db.fetchrow(
        Q.update_endpoint,
        endpoint.id,
        endpoint.org_id,
        merged["url"],
        events,
        description,
        merged["enabled"],
    )
    if row is None:
        raise NotFound("no such webhook")
    return _endpoint(row)


async def delete_endpoint(db: Pool, endpoint_id: uuid.UUID, org_id: str) -> None:
    """Delete an endpoint, its pending deliveries and its delivery log."""
    if await db.fetchval(Q.delete_endpoint, endpoint_id, org_id) is None:
        raise NotFound("no such webhook")


async def rotate_secret(
    db: Pool,
    settings: Settings,
    endpoint: Endpoint,
    *,
    idempotency_key: str | None = None,
) -> Endpoint:
    """A new secret; the current one keeps signing beside it for
    ``webhook_secret_grace_seconds``.

    A retry with the Idempotency-Key that made the current secret returns it unchanged.
    """
    sealer = Sealer(settings)
    if idempotency_key is not None and endpoint.secret_key == idempotency_key:
        return _opened(endpoint, sealer)
    secret = new_secret()
    row = await db.fetchrow(
        Q.rotate_secret,
        endpoint.id,
        endpoint.org_id,
        sealer.seal(secret),
        settings.webhook_secret_grace_seconds,
        idempotency_key,
    )
    if row is None:  # gone, or a concurrent retry with the same key rotated first
        return _opened(await get_endpoint(db, endpoint.id, endpoint.org_id), sealer)
    return msgspec.structs.replace(_endpoint(row), secret=secret)


async def reseal(db: Pool, settings: Settings) -> int:
    """Seal the secrets stored in the clear (from before sealing) or sealed with a key
    that no longer seals; how many endpoints changed. Safe beside a rotation: a row is
    only written if its secrets are still the ones read."""
    sealer = Sealer(settings)

    def sealed(stored: str | None) -> str | None:
        return sealer.seal(sealer.open(stored)) if stored and sealer.stale(stored) else stored

    changed = 0
    for row in await db.fetch(Q.stale_secrets, sealer.current):
        secret, previous = row["secret"], row["previous_secret"]
        try:
            sealed_secret, sealed_previous = sealed(secret), sealed(previous)
        except Unopenable:
            continue  # its deliveries say why; nothing to do here until the key is back
        status = await db.execute(
            Q.reseal_secrets, row["id"], secret, previous, sealed_secret, sealed_previous
        )
        changed += status == "UPDATE 1"
    return changed
