"""Faults on real processes: `ferry worker` subprocesses that are killed, stopped, cut off
from Redis or PostgreSQL. After each fault every job reaches its right end, once.

Workers run on the test's own Settings (``environ``), with a short lease so a dead
worker's jobs come back within seconds; the test plays the reconciler's cron tick
(``reconcile``) instead of waiting up to 30 s for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import pytest
import redis.exceptions

from services.core import jobs
from services.core.deps import Deps
from services.core.events import job_stream
from services.core.exports.spec import build_spec
from services.core.queue import arq_redis, enqueue
from services.core.settings import Settings, environ
from services.worker.jobs.maintenance import reconcile_jobs
from tests.conftest import ROOT, JobFactory

LEASE_SECONDS = 2
DEADLINE = 60.0
# A stopped worker exits within its drain plus this (services.worker.worker).
HAND_BACK_SECONDS = 10.0
T = TypeVar("T")


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Short leases; the slow, reference XLSX engine, so an export is still running when
    the fault strikes; a worker per job kind at most two at once."""
    return msgspec.structs.replace(
        settings,
        job_lease_seconds=LEASE_SECONDS,
        xlsx_engine="xlsxwriter",
        worker_drain_seconds=2.0,
        log_level="INFO",
    )


class Worker:
    """One worker process (in a session of its own, so its children go with it)."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log: Path) -> None:
        self.name, self.log = name, log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                args, env=env, cwd=ROOT, stdout=out, stderr=out, start_new_session=True
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    async def exited(self, deadline: float) -> int:
        """The exit code, once the process ended within ``deadline`` seconds."""
        end = time.monotonic() + deadline
        while self.proc.poll() is None:
            if time.monotonic() > end:
                pytest.fail(f"{self.name} still running after {deadline} s\n{self.tail()}")
            await asyncio.sleep(0.05)
        return self.proc.returncode

    async def ready(self, deadline: float = DEADLINE) -> Worker:
        """Once it has opened its connections and polls the queue."""
        end = time.monotonic() + deadline
        while "worker ready" not in self.log.read_text(errors="replace"):
            if not self.alive or time.monotonic() > end:
                pytest.fail(f"{self.name} did not start\n{self.tail()}")
            await asyncio.sleep(0.05)
        return self

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace").splitlines()
        return f"--- {self.name} ---\n" + "\n".join(text[-lines:])

    def kill_all(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


class Workers:
    """Start workers on the test's settings; every one (and its children) is gone at teardown."""

    def __init__(self, settings: Settings, tmp_path: Path) -> None:
        self.settings, self.tmp_path = settings, tmp_path
        self.started: list[Worker] = []

    def start(self, name: str, *, module: str = "services.cli", **settings: Any) -> Worker:
        base = {k: v for k, v in os.environ.items() if not k.startswith("FERRY_")}
        env = base | environ(msgspec.structs.replace(self.settings, **settings))
        args = [sys.executable, "-m", module] + (["worker"] if module == "services.cli" else [])
        worker = Worker(name, args, env, self.tmp_path / f"{name}.log")
        self.started.append(worker)
        return worker

    def tails(self) -> str:
        return "\n".join(w.tail() for w in self.started)


@pytest.fixture
def workers(settings: Settings, tmp_path: Path) -> Iterator[Workers]:
    started = Workers(settings, tmp_path)
    yield started
    for worker in started.started:
        worker.kill_all()


async def until(
    check: Callable[[], Awaitable[T]], what: str, workers: Workers, deadline: float = DEADLINE
) -> T:
    """Poll ``check()`` until it is truthy, within a deadline (the workers' logs on failure)."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if value := await check():
            return value
        await asyncio.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}\n{workers.tails()}")


async def export(
    deps: Deps, make_job: JobFactory, fmt: str, account: str, **extra: Any
) -> jobs.Job:
    """An export job of every column of ``account``, handed to the workers."""
    ds = deps.registry.get("bookkeeping_records")
    spec = build_spec(ds, format=fmt, preset="all", filters={"account_id": account})
    made = await make_job(params=spec.to_params() | extra)
    await enqueue(arq_redis(deps.redis), made)
    return made


async def job(deps: Deps, job_id: Any) -> jobs.Job:
    found = await jobs.load_job(deps.db, job_id)
    assert found is not None
    return found


def reached(deps: Deps, job_id: Any, *statuses: str) -> Callable[[], Awaitable[jobs.Job | None]]:
    """A check: the job, once it is in one of ``statuses``."""

    async def check() -> jobs.Job | None:
        row = await job(deps, job_id)
        return row if row.status in statuses else None

    return check


def running(deps: Deps, job_id: Any) -> Callable[[], Awaitable[jobs.Job | None]]:
    """A check: the job, once a worker holds it and has reported rows done."""

    async def check() -> jobs.Job | None:
        row = await job(deps, job_id)
        if row.lease_until is None or row.status not in jobs.RUNNING:
            return None
        if row.progress and row.progress.get("done"):
            return row
        with contextlib.suppress(redis.exceptions.RedisError):  # a test may stop Redis
            events = await deps.events.read(job_stream(job_id))
            if any(e.type == "progress" and e.data.get("done") for e in events):
                return row
        return None

    return check


def claimed(deps: Deps, job_id: Any) -> Callable[[], Awaitable[jobs.Job | None]]:
    """A check: the job, once a worker holds it."""

    async def check() -> jobs.Job | None:
        row = await job(deps, job_id)
        return row if row.lease_until is not None else None

    return check


@contextlib.asynccontextmanager
async def records_locked(deps: Deps) -> AsyncIterator[None]:
    """Every export waits in its first query until the block ends (a table lock held)."""
    async with deps.db.acquire() as conn, conn.transaction():
        await conn.execute("LOCK TABLE bookkeeping_records IN ACCESS EXCLUSIVE MODE")
        yield


async def reconcile(deps: Deps, workers: Workers, *job_ids: Any) -> dict[str, int]:
    """The reconciler's cron tick, once the lease of each of ``job_ids`` has lapsed."""

    async def lapsed() -> bool:
        rows = [await job(deps, i) for i in job_ids]
        return all(r.lease_until and r.lease_until.timestamp() < time.time() for r in rows)

    if job_ids:
        await until(lapsed, "the dead worker's leases to lapse", workers)
    return await reconcile_jobs({"deps": deps, "redis": arq_redis(deps.redis)})


async def files(deps: Deps, export: jobs.Job) -> list[str]:
    """Finished files of an export, in whichever storage the test uses."""
    storage: Any = deps.storage
    prefix = f"{export.org_id}/exports/{export.id}/"
    if storage.backend == "local":
        base = storage.path(prefix.rstrip("/"))
        return sorted(str(p.relative_to(storage.root)) for p in base.rglob("*") if p.is_file())
    page = await storage.client.list_objects_v2(Bucket=storage.bucket, Prefix=prefix)
    return sorted(obj["Key"] for obj in page.get("Contents", []))


async def assert_exported_once(deps: Deps, export: jobs.Job, rows: int) -> None:
    """Succeeded, with all its rows, and exactly one file: the one its result names."""
    assert export.status == "succeeded", export.error
    assert export.result is not None
    assert export.result["rows"] == rows
    assert await files(deps, export) == [
        f"{export.org_id}/exports/{export.id}/{export.result['filename']}"
    ]
