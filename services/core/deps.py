"""Everything a process needs, opened once: ``async with open_deps(settings) as deps``."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from redis.asyncio import Redis

from services.core.datasets import Registry, load_registry
from services.core.db.pool import Pool, create_pool
from services.core.events import EventBus
from services.core.settings import Settings, required
from services.core.storage import Storage, open_storage


@dataclass(frozen=True, slots=True)
class Deps:
    settings: Settings
    db: Pool
    redis: Redis
    storage: Storage
    events: EventBus
    registry: Registry


@contextlib.asynccontextmanager
async def open_deps(
    settings: Settings, *, check_schema: bool = True, role: str = "ferry"
) -> AsyncIterator[Deps]:
    """Open the pool, Redis, storage and registry; close them on exit in reverse order.

    ``role`` names the process to PostgreSQL (``application_name``). The registry is
    checked against the live schema, so a dataset file that names a missing column
    stops start-up with a message naming it.
    """
    database_url, redis_url = required(settings, "database_url"), required(settings, "redis_url")
    registry = load_registry(settings.datasets_dir)
    async with contextlib.AsyncExitStack() as stack:
        db = await create_pool(
            database_url,
            min_size=settings.db_pool_min,
            max_size=settings.db_pool_max,
            application_name=role,
        )
        stack.push_async_callback(db.close)
        if check_schema:
            async with db.acquire() as conn:
                await registry.check_schema(conn)
        # A connect that hangs must fail (and the request answer 503), not wait for ever.
        redis = Redis.from_url(redis_url, socket_connect_timeout=5)
        stack.push_async_callback(redis.aclose)
        storage = await stack.enter_async_context(open_storage(settings))
        events = EventBus(redis, retention_seconds=settings.event_retention_seconds)
        yield Deps(settings, db, redis, storage, events, registry)
