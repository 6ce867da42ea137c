"""One Ferry for a whole contract module: a real uvicorn in a thread (the tests are
synchronous, as schemathesis and generated clients are) and a real ``ferry worker``
process, so jobs end and their event streams close."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import redis as redis_sync
import uvicorn

from services.api.app import create_app
from services.core.auth import mint_token
from services.core.settings import Settings
from tests.conftest import ALL_PERMS, ROOT, SECRET, _admin, _with_db, ferry_env, free_port


@pytest.fixture(scope="module")
def contract_settings(
    pg_admin_url: str,
    template_db: str,
    redis_base_url: str,
    redis_db: int,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Settings]:
    """Settings on a database and Redis db of this module's own."""
    name = f"ferry_c_{uuid.uuid4().hex[:10]}"
    asyncio.run(_admin(pg_admin_url, f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"'))
    redis_url = f"{redis_base_url}/{redis_db}"
    client = redis_sync.Redis.from_url(redis_url)
    client.flushdb()
    client.close()
    yield Settings(
        database_url=_with_db(pg_admin_url, name),
        redis_url=redis_url,
        storage_dir=str(tmp_path_factory.mktemp("contract") / "storage"),
        jwt_secret=SECRET,
        db_pool_max=8,
        sse_heartbeat_seconds=0.5,  # a stream notices its job's end quickly
        # Thousands of requests from one user in a minute: limits would answer most
        # with 429 (documented, but then little else would be tested).
        rate_limit_user=0,
        rate_limit_org=0,
        max_queued_jobs_per_user=100_000,
    )
    asyncio.run(_admin(pg_admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="module")
def ferry_url(contract_settings: Settings) -> Iterator[str]:
    """The api on 127.0.0.1, serving from a thread of its own."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(contract_settings),
            host="127.0.0.1",
            port=port,
            log_config=None,
            lifespan="on",
        )
    )
    thread = threading.Thread(target=server.run, name="contract-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("uvicorn did not start")
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(15)


@pytest.fixture(scope="module")
def ferry_worker(contract_settings: Settings) -> Iterator[subprocess.Popen[bytes]]:
    """A real worker process running the jobs the tests start."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "worker"],
        env=ferry_env(contract_settings, log_level="WARNING"),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    yield proc
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def bearer(contract_settings: Settings) -> dict[str, str]:
    """alice of acme, allowed everything, for the whole module."""
    token = mint_token(contract_settings, sub="alice", org="acme", perms=ALL_PERMS, ttl=3600)
    return {"Authorization": f"Bearer {token}"}


def sample_csv(rows: int = 3) -> bytes:
    """A small valid upload of the bookkeeping dataset."""
    lines = ["ebay_order_id,sale_date,item_name,qty,sale_price,status"]
    lines += [f"12-{n:05d}-00001,2026-01-0{n % 9 + 1},Widget {n},1,10.00,paid" for n in range(rows)]
    return ("\n".join(lines) + "\n").encode()
