"""`ferry worker --check`: the liveness probe of a worker (compose, Kubernetes)."""

from __future__ import annotations

import signal
import subprocess
import sys

import msgspec

from services.core.settings import Settings, environ
from tests.conftest import ROOT, free_port
from tests.faults.conftest import HAND_BACK_SECONDS, Workers, until


def check(settings: Settings) -> subprocess.CompletedProcess[str]:
    env = environ(settings)
    return subprocess.run(
        [sys.executable, "-m", "services.cli", "worker", "--check"],
        env={"PATH": "/usr/bin:/bin"} | env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


async def test_check_tells_whether_this_hosts_worker_is_alive(
    settings: Settings, workers: Workers
) -> None:
    before = check(settings)
    assert (before.returncode, before.stdout.count("\n")) == (1, 1)
    assert before.stdout.startswith("unhealthy: no worker on this host reported")

    worker = await workers.start("worker").ready()

    async def healthy() -> subprocess.CompletedProcess[str] | None:
        done = check(settings)
        return done if done.returncode == 0 else None

    alive = await until(healthy, "the worker's health record", workers)
    assert alive.stdout.startswith("healthy: ")
    assert "j_ongoing=0" in alive.stdout

    worker.signal(signal.SIGTERM)
    assert await worker.exited(HAND_BACK_SECONDS) == 0
    assert check(settings).returncode == 1  # a worker that left takes its record with it


def test_check_without_redis_is_unhealthy_in_one_line(settings: Settings) -> None:
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    down = check(msgspec.structs.replace(settings, redis_url=nowhere))
    assert (down.returncode, down.stdout.count("\n")) == (1, 1)
    assert down.stdout.startswith("unhealthy: cannot reach Redis")
    assert down.stderr == ""
