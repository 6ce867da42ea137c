"""The asyncpg pool: jsonb travels as Python objects, encoded by msgspec."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeAlias

import asyncpg
import msgspec
from asyncpg.pool import PoolConnectionProxy

if TYPE_CHECKING:
    Pool: TypeAlias = asyncpg.Pool[asyncpg.Record]
    Connection: TypeAlias = asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]
else:  # asyncpg's classes are generic only in its stubs
    Pool = asyncpg.Pool
    Connection = asyncpg.Connection | PoolConnectionProxy


async def _init_connection(conn: Connection) -> None:
    for name in ("json", "jsonb"):
        await conn.set_type_codec(
            name,
            encoder=lambda value: msgspec.json.encode(value).decode(),
            decoder=msgspec.json.decode,
            schema="pg_catalog",
        )


async def connect(url: str) -> asyncpg.Connection[asyncpg.Record]:
    """One connection with Ferry's codecs (migrations, COPY, tests)."""
    conn = await asyncpg.connect(url)
    await _init_connection(conn)
    return conn


async def create_pool(url: str, *, min_size: int = 1, max_size: int = 10) -> Pool:
    """A pool whose connections decode json/jsonb into Python values."""
    pool: Pool | None = await asyncpg.create_pool(
        url,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        command_timeout=None,
        server_settings={"application_name": "ferry"},
    )
    assert pool is not None  # create_pool returns None only when not awaited
    return pool


def record_dict(record: Any) -> dict[str, Any]:
    return dict(record.items())
