"""Redis restarts (empty: no persistence) while an XLSX export and an import validation run."""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_sync

from services.core.deps import Deps
from tests.conftest import JobFactory, TokenFactory, _answers, free_port
from tests.e2e.export_files import seed_records
from tests.e2e.imports_helpers import Client, orders_csv, upload
from tests.faults.conftest import (
    HAND_BACK_SECONDS,
    Workers,
    assert_exported_once,
    claimed,
    export,
    job,
    reached,
    records_locked,
    until,
)

ROWS = 60_000


class RedisServer:
    """A redis-server of this test's own, on a free port, that the test stops and starts."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed (apt-get install redis-server)")
        self.port = free_port()
        self.args = [binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        self.args += ["--save", "", "--appendonly", "no", "--dir", str(directory)]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not _answers("127.0.0.1", self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("redis-server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """Everything in this module (api, workers, the test) uses the test's own Redis."""
    return redis_server.url


def answers(url: str) -> bool:
    client = redis_sync.Redis.from_url(url)
    with contextlib.suppress(redis_sync.RedisError), contextlib.closing(client):
        return bool(client.ping())
    return False


async def test_workers_ride_out_a_redis_restart_and_every_job_ends_once(
    client: Client,
    make_token: TokenFactory,
    deps: Deps,
    make_job: JobFactory,
    workers: Workers,
    redis_server: RedisServer,
) -> None:
    auth = {"Authorization": f"Bearer {make_token()}"}
    await seed_records(deps, "acme", "big", ROWS)
    worker = await workers.start("worker").ready()
    async with records_locked(deps):  # both jobs wait in their first query: both started
        xlsx = await export(deps, make_job, "xlsx", "big")
        uploaded = await upload(client, auth, orders_csv(2_000))
        assert uploaded.status_code == 202, uploaded.text
        validation = uploaded.json()["id"]
        await until(claimed(deps, xlsx.id), "the export to start", workers)
        await until(claimed(deps, validation), "the validation to start", workers)
        redis_server.stop()
    # Redis is down. The validation ends meanwhile; the export writes its sheet.
    await until(reached(deps, validation, "validated", "failed"), "the validation", workers)

    async def exporting() -> bool:
        row = await job(deps, xlsx.id)
        return row.final or bool(row.progress and row.progress.get("done"))

    await until(exporting, "the export to write rows while Redis is down", workers)
    redis_server.start()  # empty: nothing survived the restart

    done = await until(reached(deps, xlsx.id, "succeeded", "failed"), "the export", workers)
    await assert_exported_once(deps, done, ROWS)
    validated = await job(deps, validation)
    assert (validated.status, validated.attempt) == ("validated", 1)
    assert validated.result is not None
    assert validated.result["totals"]["valid"] == 2_000
    assert (done.attempt, done.crashes) == (1, 0)

    # The worker is still there and takes new work from the restarted Redis.
    assert worker.alive
    await until(lambda: _true(answers(redis_server.url)), "Redis to answer", workers)
    await seed_records(deps, "acme", "small", 10)
    after = await export(deps, make_job, "csv", "small")
    fresh = await until(reached(deps, after.id, "succeeded", "failed"), "a new export", workers)
    await assert_exported_once(deps, fresh, 10)

    worker.signal(signal.SIGTERM)  # idle: it leaves at once, well within its grace
    assert await worker.exited(HAND_BACK_SECONDS) == 0


async def _true(value: bool) -> bool:
    return value
