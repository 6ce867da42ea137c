"""The asyncpg pool: jsonb travels as Python objects, encoded by msgspec.

Outages: a connection that cannot be made raises ``DatabaseUnavailable`` (the api
answers 503 with ``Retry-After``). A pooled connection PostgreSQL has closed meanwhile
(restarted, ``pg_terminate_backend``) fails the statement sent on it; the pool's own
``fetch*``/``execute`` then send it once more on a fresh connection when that is safe:
a read, or a statement that was never sent (asyncpg knew the connection was closed).
A write whose fate is unknown is not repeated blindly: ``jobs.create_job`` looks
whether its row exists first; the others fail with 503 and may be retried by the
client (with the same ``Idempotency-Key`` where the route takes one).
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any, TypeAlias

import asyncpg
import msgspec
import redis.exceptions
from asyncpg.pool import PoolConnectionProxy

from services.core.errors import DatabaseUnavailable

if TYPE_CHECKING:
    Pool: TypeAlias = asyncpg.Pool[asyncpg.Record]
    Connection: TypeAlias = asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]
    _PoolBase: TypeAlias = asyncpg.Pool[asyncpg.Record]
else:  # asyncpg's classes are generic only in its stubs
    Pool = asyncpg.Pool
    Connection = asyncpg.Connection | PoolConnectionProxy
    _PoolBase = asyncpg.Pool

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 5.0  # seconds; asyncpg waits 60 by default, a request should not

# A statement that only reads (after its comment lines): safe to send twice.
_READ = re.compile(
    r"^(\s*--[^\n]*\n)*\s*SELECT\b(?!.*\bFOR\s+(UPDATE|SHARE|NO KEY|KEY)\b)", re.I | re.S
)


def connection_lost(exc: BaseException) -> bool:
    """The connection died under a statement (not: the statement was wrong)."""
    if isinstance(exc, asyncpg.InterfaceError):
        return "connection is closed" in str(exc)
    if isinstance(exc, asyncpg.exceptions.InternalClientError):
        # The server's FATAL arrived between statements: asyncpg refuses the next one.
        return "cannot switch to state" in str(exc)
    return isinstance(
        exc,
        asyncpg.PostgresConnectionError | asyncpg.exceptions.OperatorInterventionError,
    )


def outage(exc: BaseException) -> bool:
    """A failure of PostgreSQL or Redis being away, not of the request: worth a 503."""
    if isinstance(exc, DatabaseUnavailable) or connection_lost(exc):
        return True
    return isinstance(
        exc,
        asyncpg.TooManyConnectionsError
        | OSError
        | TimeoutError
        | redis.exceptions.ConnectionError
        | redis.exceptions.TimeoutError,
    )


def _repeatable(exc: BaseException, query: str) -> bool:
    """True when sending ``query`` again after ``exc`` cannot do anything twice."""
    if isinstance(exc, asyncpg.InterfaceError | asyncpg.exceptions.InternalClientError):
        return connection_lost(exc)  # asyncpg refused to send it at all
    return connection_lost(exc) and bool(_READ.match(query))


async def _init_connection(conn: Connection) -> None:
    for name in ("json", "jsonb"):
        await conn.set_type_codec(
            name,
            encoder=lambda value: msgspec.json.encode(value).decode(),
            decoder=msgspec.json.decode,
            schema="pg_catalog",
        )


async def _connect_or_unavailable(*args: Any, **kwargs: Any) -> Any:
    """asyncpg.connect, whose failures mean the database is away (not a bug of ours)."""
    try:
        return await asyncpg.connect(*args, **kwargs)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        log.warning(
            "database unreachable",
            extra={"action": "db_unreachable", "error": f"{type(exc).__name__}: {exc}"[:300]},
        )
        raise DatabaseUnavailable() from exc


class FerryPool(_PoolBase):
    """asyncpg's pool whose one-statement methods survive a dead pooled connection."""

    async def _send(self, method: str, query: str, args: Any, kwargs: Any) -> Any:
        for last in (False, True):
            async with self.acquire() as conn:
                try:
                    return await getattr(conn, method)(query, *args, **kwargs)
                except Exception as exc:
                    if last or not _repeatable(exc, query):
                        raise
                    # What closed this one (a restart, a mass termination) closed its
                    # idle siblings too: the retry, and every later acquire, gets a new one.
                    await self.expire_connections()
                    log.warning(
                        "pooled connection was closed; statement sent again",
                        extra={"action": "db_retry", "error": str(exc)[:200]},
                    )
        raise AssertionError("unreachable")

    async def release(self, connection: Any, *, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Give a connection back; one that died after its last statement (its reset
        failed) is closed, which is no failure of the work done on it."""
        try:
            await super().release(connection, timeout=timeout)
        except Exception as exc:
            if not connection_lost(exc):
                raise
            log.info("a released connection was closed", extra={"action": "db_closed"})

    async def execute(self, query: str, *args: Any, **kwargs: Any) -> str:
        status: str = await self._send("execute", query, args, kwargs)
        return status

    async def fetch(self, query: str, *args: Any, **kwargs: Any) -> list[Any]:
        rows: list[Any] = await self._send("fetch", query, args, kwargs)
        return rows

    async def fetchrow(self, query: str, *args: Any, **kwargs: Any) -> Any:
        return await self._send("fetchrow", query, args, kwargs)

    async def fetchval(self, query: str, *args: Any, **kwargs: Any) -> Any:
        return await self._send("fetchval", query, args, kwargs)


async def connect(url: str) -> asyncpg.Connection[asyncpg.Record]:
    """One connection with Ferry's codecs (migrations, COPY, tests)."""
    conn = await asyncpg.connect(url)
    await _init_connection(conn)
    return conn


async def create_pool(
    url: str, *, min_size: int = 1, max_size: int = 10, application_name: str = "ferry"
) -> Pool:
    """A pool whose connections decode json/jsonb into Python values.

    ``application_name`` shows in ``pg_stat_activity``: which process holds a backend.
    """
    pool = FerryPool(
        url,
        min_size=min_size,
        max_size=max_size,
        max_queries=50_000,
        max_inactive_connection_lifetime=300.0,
        connect=_connect_or_unavailable,
        init=_init_connection,
        loop=None,
        connection_class=asyncpg.Connection,
        record_class=asyncpg.Record,
        timeout=CONNECT_TIMEOUT,
        command_timeout=None,
        server_settings={"application_name": application_name},
    )
    await pool
    return pool


def record_dict(record: Any) -> dict[str, Any]:
    return dict(record.items())
