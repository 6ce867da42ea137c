"""What every benchmark shares: a scratch database, free ports, Redis dbs, the report table."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from services.core.db.migrate import migrate

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"


def admin_url() -> str:
    return os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def redis_url(db: int = 14) -> str:
    """A Redis db of its own per benchmark, away from the test sessions' (1-12)."""
    return os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379") + f"/{db}"


def _with_db(url: str, name: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{name}"


@contextlib.contextmanager
def scratch_database() -> Iterator[str]:
    """A freshly migrated database, dropped afterwards."""
    name = f"ferry_bench_{uuid.uuid4().hex[:8]}"

    async def create() -> None:
        admin = await asyncpg.connect(admin_url())
        await admin.execute(f'CREATE DATABASE "{name}"')
        await admin.close()
        conn = await asyncpg.connect(_with_db(admin_url(), name))
        await migrate(conn)
        await conn.close()

    async def drop() -> None:
        admin = await asyncpg.connect(admin_url())
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()

    asyncio.run(create())
    try:
        yield _with_db(admin_url(), name)
    finally:
        asyncio.run(drop())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Figure:
    name: str
    rows: int
    seconds: float
    baseline: str = ""
    baseline_seconds: float | None = None
    rss_mib: int | None = None
    note: str = ""

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0

    @property
    def ratio(self) -> float | None:
        """Speed relative to the baseline (>1 is faster than the baseline)."""
        if not self.baseline_seconds:
            return None
        return self.baseline_seconds / self.seconds


@dataclass
class Report:
    title: str
    figures: list[Figure] = field(default_factory=list)

    def add(self, figure: Figure) -> Figure:
        self.figures.append(figure)
        print(f"  {figure.name}: {figure.rows:,} rows in {figure.seconds:.2f} s", flush=True)
        return figure

    def render(self) -> str:
        lines = [
            f"## {self.title}",
            "",
            "| figure | rows | seconds | rows/s | vs baseline | peak RSS | note |",
            "| --- | ---: | ---: | ---: | --- | ---: | --- |",
        ]
        for f in self.figures:
            ratio = f"{f.ratio:.2f}x {f.baseline}" if f.ratio is not None else "(baseline)"
            rss = f"{f.rss_mib} MiB" if f.rss_mib is not None else ""
            lines.append(
                f"| {f.name} | {f.rows:,} | {f.seconds:.2f} | {f.rows_per_s:,.0f} | "
                f"{ratio} | {rss} | {f.note} |"
            )
        return "\n".join(lines) + "\n"
