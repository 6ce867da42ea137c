"""Fixtures: real PostgreSQL, Redis and S3 (moto) over real connections.

- PostgreSQL: the server on 127.0.0.1:5432 when it answers (``TEST_DATABASE_URL``
  overrides), an embedded one otherwise. A template database is migrated once per
  session and cloned for every test that asks for ``database_url``.
- Redis: 127.0.0.1:6379 when it answers (``TEST_REDIS_URL``), an embedded Valkey
  otherwise. Each session locks a free db index; every test gets it flushed.
- S3: ``moto_server`` from ``.venv-moto`` on a free loopback port; a bucket per test.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import redis as redis_sync
import uvicorn
from litestar import Litestar
from litestar.testing import AsyncTestClient

from services.api.app import create_app
from services.core import jobs
from services.core.auth import mint_token
from services.core.db.migrate import migrate
from services.core.deps import Deps, open_deps
from services.core.embedded import embedded_postgres, embedded_valkey
from services.core.settings import Settings
from services.core.storage.s3 import S3Storage
from services.worker.settings import drain

ROOT = Path(__file__).resolve().parents[1]
MOTO_SERVER = ROOT / ".venv-moto" / "bin" / "moto_server"
SECRET = "test-secret-" + "x" * 32
ALL_PERMS = ["bookkeeping_records.read", "bookkeeping_records.write"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _answers(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
        return True
    return False


# --- PostgreSQL ---------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_admin_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A superuser URL of the PostgreSQL the tests use."""
    if url := os.environ.get("TEST_DATABASE_URL"):
        yield url
    elif _answers("127.0.0.1", 5432):
        yield "postgresql://postgres@127.0.0.1:5432/postgres"
    else:
        with embedded_postgres(tmp_path_factory.mktemp("pg")) as url:
            yield url


def _with_db(url: str, name: str) -> str:
    parsed = httpx.URL(url)
    return str(parsed.copy_with(path=f"/{name}"))


async def _admin(url: str, *statements: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        for sql in statements:
            await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def template_db(pg_admin_url: str) -> Iterator[str]:
    """Name of a database migrated once for the session; tests get copies."""
    name = f"ferry_tpl_{uuid.uuid4().hex[:8]}"
    asyncio.run(_admin(pg_admin_url, f'CREATE DATABASE "{name}"'))

    async def _migrate() -> None:
        conn = await asyncpg.connect(_with_db(pg_admin_url, name))
        try:
            await migrate(conn)
        finally:
            await conn.close()

    asyncio.run(_migrate())
    yield name
    asyncio.run(_admin(pg_admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
async def database_url(pg_admin_url: str, template_db: str) -> AsyncIterator[str]:
    """A fresh, migrated database of its own for this test."""
    name = f"ferry_t_{uuid.uuid4().hex[:10]}"
    await _admin(pg_admin_url, f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    yield _with_db(pg_admin_url, name)
    await _admin(pg_admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def empty_database_url(pg_admin_url: str) -> AsyncIterator[str]:
    """A database with nothing in it (migration tests)."""
    name = f"ferry_e_{uuid.uuid4().hex[:10]}"
    await _admin(pg_admin_url, f'CREATE DATABASE "{name}"')
    yield _with_db(pg_admin_url, name)
    await _admin(pg_admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- Redis --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if url := os.environ.get("TEST_REDIS_URL"):
        yield url.rstrip("/")
    elif _answers("127.0.0.1", 6379):
        yield "redis://127.0.0.1:6379"
    else:
        with embedded_valkey(tmp_path_factory.mktemp("valkey")) as url:
            yield url


@pytest.fixture(scope="session")
def redis_db(redis_base_url: str) -> Iterator[int]:
    """A db index no other test session on this Redis is using (1-15), locked in db 0."""
    admin = redis_sync.Redis.from_url(f"{redis_base_url}/0")
    token = f"{os.getpid()}-{uuid.uuid4().hex}"
    try:
        for index in range(1, 16):
            if admin.set(f"ferry-test:db:{index}", token, nx=True, ex=3 * 3600):
                break
        else:
            pytest.fail("all Redis db indexes 1-15 are taken by other test sessions")
        yield index
        if admin.get(f"ferry-test:db:{index}") == token.encode():
            admin.delete(f"ferry-test:db:{index}")
    finally:
        admin.close()


@pytest.fixture
def redis_url(redis_base_url: str, redis_db: int) -> str:
    """This session's Redis db, flushed before the test."""
    url = f"{redis_base_url}/{redis_db}"
    client = redis_sync.Redis.from_url(url)
    client.flushdb()
    client.close()
    return url


# --- S3 (moto) ----------------------------------------------------------------------


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A moto S3 server on a free loopback port, for the whole session."""
    if not MOTO_SERVER.exists():
        pytest.fail(f"{MOTO_SERVER} is missing: run `make setup`")
    port = free_port()
    proc = subprocess.Popen(
        [str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while not _answers("127.0.0.1", port):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail("moto_server did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture
def s3_bucket() -> str:
    return f"ferry-test-{uuid.uuid4().hex[:12]}"


@contextlib.asynccontextmanager
async def moto_storage(endpoint: str, bucket: str) -> AsyncIterator[S3Storage]:
    """An S3 storage on moto with the smallest part size S3 allows; creates the bucket."""
    async with S3Storage.connect(
        bucket=bucket,
        endpoint_url=endpoint,
        access_key_id="testing",
        secret_access_key="testing",
        part_size=5 * 1024 * 1024,
    ) as storage:
        await storage.ensure_bucket()
        yield storage


@pytest.fixture
async def s3_storage(moto_endpoint: str, s3_bucket: str) -> AsyncIterator[S3Storage]:
    """An S3 storage on a fresh moto bucket."""
    async with moto_storage(moto_endpoint, s3_bucket) as storage:
        yield storage


# --- Ferry --------------------------------------------------------------------------


@pytest.fixture(params=["local"])
def storage_backend(request: pytest.FixtureRequest) -> str:
    """Which storage the Ferry under test uses; e2e modules parametrize it with s3."""
    backend: str = request.param
    return backend


@pytest.fixture
def settings(
    request: pytest.FixtureRequest,
    database_url: str,
    redis_url: str,
    tmp_path: Path,
    storage_backend: str,
) -> Settings:
    s3: dict[str, Any] = {}
    if storage_backend == "s3":
        s3 = {
            "s3_bucket": request.getfixturevalue("s3_bucket"),
            "s3_endpoint_url": request.getfixturevalue("moto_endpoint"),
            "s3_access_key_id": "testing",
            "s3_secret_access_key": "testing",
            "s3_part_size": 5 * 1024 * 1024,
        }
    return Settings(
        database_url=database_url,
        redis_url=redis_url,
        storage_dir=str(tmp_path / "storage"),
        jwt_secret=SECRET,
        db_pool_max=8,
        # Limits far above what a test does (tests of the limits set their own).
        rate_limit_user=100_000,
        rate_limit_org=100_000,
        **s3,
    )


@pytest.fixture
async def deps(settings: Settings) -> AsyncIterator[Deps]:
    if settings.s3_bucket:
        async with moto_storage(settings.s3_endpoint_url, settings.s3_bucket):
            pass
    async with open_deps(settings) as opened:
        yield opened


@pytest.fixture
def app(settings: Settings, deps: Deps) -> Litestar:
    """The api; it opens its own connections (the test client runs it on another loop)."""
    return create_app(settings)


@pytest.fixture
async def client(app: Litestar) -> AsyncIterator[AsyncTestClient[Litestar]]:
    async with AsyncTestClient(app=app) as c:
        yield c


def ferry_env(settings: Settings, **overrides: str) -> dict[str, str]:
    """The environment of a ``ferry`` process on these settings (and no other FERRY_*)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FERRY_")}
    for name in (
        "database_url", "redis_url", "jwt_secret", "storage_dir",
        "s3_bucket", "s3_endpoint_url", "s3_access_key_id", "s3_secret_access_key",
    ):  # fmt: skip
        if value := getattr(settings, name):
            env[f"FERRY_{name.upper()}"] = str(value)
    return env | {f"FERRY_{name.upper()}": value for name, value in overrides.items()}


TokenFactory = Callable[..., str]


@pytest.fixture
def make_token(settings: Settings) -> TokenFactory:
    """``make_token(sub=…, org=…, perms=[…], ttl=…)`` → a bearer token."""

    def _make(
        *, sub: str = "alice", org: str = "acme", perms: list[str] | None = None, ttl: int = 600
    ) -> str:
        return mint_token(
            settings, sub=sub, org=org, perms=ALL_PERMS if perms is None else perms, ttl=ttl
        )

    return _make


@pytest.fixture
def auth(make_token: TokenFactory) -> dict[str, str]:
    """Headers of user alice in org acme, allowed to read and write every dataset."""
    return {"Authorization": f"Bearer {make_token()}"}


def job_fields(**overrides: Any) -> dict[str, Any]:
    """The columns of a test job: a queued CSV export of alice in acme; override any."""
    return {
        "kind": "export",
        "org_id": "acme",
        "user_id": "alice",
        "dataset": "bookkeeping_records",
        "status": "queued",
        "params": {"format": "csv"},
    } | overrides


JobFactory = Callable[..., Awaitable[jobs.Job]]


@pytest.fixture
def make_job(deps: Deps) -> JobFactory:
    """``await make_job(kind=…, org_id=…, status=…, params=…)`` → a job row, made directly.

    No api and no queue: for tests of what happens to a job, not of how it is asked for.
    """

    async def _make(**overrides: Any) -> jobs.Job:
        job, _created = await jobs.create_job(deps.db, **job_fields(**overrides))
        return job

    return _make


WorkerRun = Callable[..., Awaitable[None]]


@pytest.fixture
def run_worker(settings: Settings, deps: Deps) -> WorkerRun:
    """Run a real arq worker in this process until the queue is empty (burst mode).

    ``run_worker(deps=other)`` runs it on other dependencies (e.g. a broken storage).
    """

    async def _run(deps: Deps = deps, **overrides: Any) -> None:
        await drain(settings, deps, **overrides)

    return _run


@pytest.fixture
async def live_server(app: Litestar) -> AsyncIterator[str]:
    """The app on a real uvicorn at 127.0.0.1 (for SSE, which the test client cannot end)."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on")
    )
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 10
    while not server.started:
        if task.done() or time.monotonic() > deadline:
            pytest.fail("uvicorn did not start")
        await asyncio.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    await asyncio.wait_for(task, 10)
