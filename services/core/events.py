"""Job events on Redis Streams: append, read after an id, block for new ones.

Each job has a stream, and each caller (org, user) has one for the notification
feed. Stream ids are the SSE event ids, so a client that reconnects with
``Last-Event-ID`` reads exactly what it missed: Redis returns entries strictly
after the given id, in order.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
import redis.exceptions
from redis.asyncio import Redis

from services.core.jobs import Job, job_document
from services.core.queue import arq_redis, wake_webhooks
from services.core.webhooks.endpoints import EVENTS as WEBHOOK_EVENTS

log = logging.getLogger(__name__)


class Event(msgspec.Struct, frozen=True):
    id: str
    type: str
    data: dict[str, Any]


def job_stream(job_id: object) -> str:
    return f"ferry:events:job:{job_id}"


def user_stream(org_id: str, user_id: str) -> str:
    return f"ferry:events:user:{org_id}:{user_id}"


class EventBus:
    """Append-only, capped and expiring event streams."""

    def __init__(self, redis: Redis, *, retention_seconds: int, maxlen: int = 10_000) -> None:
        self.redis = redis
        self.retention = retention_seconds
        self.maxlen = maxlen

    async def publish(
        self, *, job_id: object, org_id: str, user_id: str, type: str, data: dict[str, Any]
    ) -> str:
        """Append an event to the job's stream and to its owner's feed; returns its id."""
        payload = {"type": type, "job_id": str(job_id), "data": msgspec.json.encode(data)}
        streams = (job_stream(job_id), user_stream(org_id, user_id))
        async with self.redis.pipeline(transaction=True) as pipe:
            for stream in streams:
                pipe.xadd(stream, payload, maxlen=self.maxlen, approximate=True)  # type: ignore[arg-type]
                pipe.expire(stream, self.retention)
            results = await pipe.execute()
        event_id = results[0]
        return event_id.decode() if isinstance(event_id, bytes) else str(event_id)

    async def announce(self, job: Job, type: str, data: dict[str, Any] | None = None) -> None:
        """Publish an event of ``job`` (its document unless ``data`` is given); when its
        status is a webhook event, wake a worker to deliver it.

        Best effort: the job row is the truth and SSE clients re-read it, so a Redis
        hiccup here must not fail the request or the job that changed the row.
        """
        try:
            await self.publish(
                job_id=job.id,
                org_id=job.org_id,
                user_id=job.user_id,
                type=type,
                data=job_document(job) if data is None else data,
            )
        except redis.exceptions.RedisError:
            log.warning("event not published", extra={"job_id": str(job.id), "type": type})
        if (job.kind, job.status) in WEBHOOK_EVENTS:
            # The change wrote its webhook deliveries (migration 0040); send them now
            # rather than at the next cron run.
            try:
                await wake_webhooks(arq_redis(self.redis))
            except redis.exceptions.RedisError:
                log.warning("webhooks not woken", extra={"job_id": str(job.id)})

    async def last_id(self, stream: str) -> str:
        """Id of the newest event, or ``0-0`` for an empty stream."""
        entries = await self.redis.xrevrange(stream, count=1)
        if not entries:
            return "0-0"
        entry_id = entries[0][0]
        return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)

    async def read(
        self, stream: str, after: str = "0-0", *, block_ms: int | None = None, count: int = 500
    ) -> list[Event]:
        """Events strictly after ``after``; with ``block_ms``, wait that long for one."""
        reply = await self.redis.xread({stream: after}, count=count, block=block_ms)
        events: list[Event] = []
        for _name, entries in reply or ():
            for entry_id, fields in entries:
                events.append(_event(entry_id, fields))
        return events


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _event(entry_id: bytes | str, fields: dict[Any, Any]) -> Event:
    decoded = {_text(k): v for k, v in fields.items()}
    data = msgspec.json.decode(decoded["data"])
    data.setdefault("job_id", _text(decoded["job_id"]))
    return Event(_text(entry_id), _text(decoded["type"]), data)
