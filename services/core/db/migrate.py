"""Plain-SQL migrations applied in order, once each, under an advisory lock."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from services.core.db.pool import Connection
from services.core.errors import SettingsError

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parents[3] / "migrations"
# Any constant works as long as every Ferry process uses the same one.
LOCK_ID = 0x46455252  # "FERR"


async def migrate(conn: Connection, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply pending migrations; return the versions applied (empty when up to date).

    Concurrent callers (several api replicas starting at once) queue on the advisory
    lock, so each migration runs exactly once. A landed migration whose text changed
    is refused: migrations are never edited, a new one is added instead.
    """
    files = sorted(directory.glob("[0-9][0-9][0-9][0-9]_*.sql"))  # noqa: ASYNC240 - start-up
    if not files:
        raise SettingsError(f"no migrations found in {directory}")
    applied: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", LOCK_ID)
    try:
        await conn.execute(
            """
            CREATE TABLE IF NOT EXISTS schema_migrations (
                version    text PRIMARY KEY,
                checksum   text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )
            """
        )
        rows = await conn.fetch("SELECT version, checksum FROM schema_migrations")
        done: dict[str, str] = {r["version"]: r["checksum"] for r in rows}
        for path in files:
            sql = path.read_text()
            checksum = hashlib.sha256(sql.encode()).hexdigest()
            if path.stem in done:
                if done[path.stem] != checksum:
                    raise SettingsError(
                        f"migration {path.name} changed after it was applied; "
                        "add a new migration instead of editing it"
                    )
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, checksum) VALUES ($1, $2)",
                    path.stem,
                    checksum,
                )
            log.info("migration applied", extra={"action": "migrated", "version": path.stem})
            applied.append(path.stem)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_ID)
    return applied
