"""Latency: `POST /v1/exports` → the job's terminal SSE event, a few rows, workers idle.

`python -m bench latency` (or `make bench`). A real ``ferry api`` and one worker
process on the bench database; an HTTP client outside both times each run: the
POST, then the job's event stream (``links.events``) read up to its terminal event.
``BENCH_LATENCY_RUNS`` runs (default 50) give p50 and p95.

Baseline, same run, same api: the same worker polling its queue every 0.5 s the way
arq does (arq's own ``Worker``, no wake list). For both, the idle worker's CPU over
10 s, children included.
"""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import redis as redis_sync

from bench.common import ROOT, free_port, redis_url, scratch_database
from services.core import demo
from services.core.auth import mint_token
from services.core.db.pool import connect
from services.core.settings import load_settings

REDIS_DB = 11
ORG, USER = "bench", "bench-user"
SECRET = "bench-secret-" + "x" * 32
DATASET = "bookkeeping_records"
ROWS = 5
IDLE_SECONDS = 10.0
TERMINAL = {"succeeded", "failed", "cancelled"}
MODES = {"polling": "arq polling every 0.5 s (baseline)", "woken": "Ferry worker (wake list)"}


def runs() -> int:
    return int(os.environ.get("BENCH_LATENCY_RUNS", "50"))


def env_for(database_url: str, storage: str, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FERRY_")}
    return env | {
        "FERRY_DATABASE_URL": database_url,
        "FERRY_REDIS_URL": redis_url(REDIS_DB),
        "FERRY_JWT_SECRET": SECRET,
        "FERRY_STORAGE_DIR": storage,
        "FERRY_PORT": str(port),
        "FERRY_LOG_LEVEL": "WARNING",
    }


async def seed(database_url: str) -> None:
    conn = await connect(database_url)
    try:
        await demo.seed(conn, org_id=ORG, account_id="tiny", rows=ROWS)
    finally:
        await conn.close()


def start(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", *args], env=env, cwd=ROOT)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait_ready(client: httpx.Client) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            if client.get("/readyz").status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("ferry api did not start")
        time.sleep(0.1)


def one_run(client: httpx.Client, headers: dict[str, str]) -> float:
    """Seconds from sending the POST to reading the job's terminal event."""
    body = {"dataset": DATASET, "format": "csv", "account_id": "tiny", "preset": "all"}
    started = time.perf_counter()
    response = client.post("/v1/exports", json=body, headers=headers)
    while response.status_code == 429:  # a rate limit: wait as told, and time afresh
        time.sleep(float(response.headers.get("retry-after", "1")))
        started = time.perf_counter()
        response = client.post("/v1/exports", json=body, headers=headers)
    response.raise_for_status()
    events = response.json()["links"]["events"]
    with client.stream("GET", events, headers=headers) as stream:
        for line in stream.iter_lines():
            if line.startswith("event:") and line.split(":", 1)[1].strip() in TERMINAL:
                return time.perf_counter() - started
    raise RuntimeError("the event stream ended without a terminal event")


def idle_cpu(pid: int) -> float:
    """CPU% of a process and its children over IDLE_SECONDS while nothing is queued."""

    def cpu() -> float:
        proc = psutil.Process(pid)
        total = sum(proc.cpu_times()[:2])
        for child in proc.children(recursive=True):
            total += sum(child.cpu_times()[:2])
        return total

    time.sleep(1.0)  # let the last job's tail settle
    before, started = cpu(), time.monotonic()
    time.sleep(IDLE_SECONDS)
    return 100 * (cpu() - before) / (time.monotonic() - started)


def measure(client: httpx.Client, headers: dict[str, str], env: dict[str, str], mode: str) -> Any:
    worker = start(["bench.latency", "worker", mode], env)
    try:
        for _ in range(3):  # warm-up: connections, imports, caches
            one_run(client, headers)
        times = [one_run(client, headers) for _ in range(runs())]
        return times, idle_cpu(worker.pid)
    finally:
        stop(worker)


def main() -> str:
    redis_sync.Redis.from_url(redis_url(REDIS_DB)).flushdb()
    port = free_port()
    with scratch_database() as db, tempfile.TemporaryDirectory() as tmp:
        asyncio.run(seed(db))
        env = env_for(db, str(Path(tmp) / "storage"), port)
        settings = load_settings(env)
        token = mint_token(settings, sub=USER, org=ORG, perms=[f"{DATASET}.read"])
        headers = {"Authorization": f"Bearer {token}"}
        api = start(["services.cli", "api"], env)
        results = {}
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
                wait_ready(client)
                for mode in MODES:
                    print(f"  {MODES[mode]}: {runs()} runs …", flush=True)
                    results[mode] = measure(client, headers, env, mode)
        finally:
            stop(api)
    return render(results)


def render(results: dict[str, Any]) -> str:
    lines = [
        f"## Latency: POST /v1/exports → terminal SSE event ({ROWS} rows, {runs()} runs)",
        "",
        "| worker | p50 | p95 | max | vs baseline (p50) | idle worker CPU |",
        "| --- | ---: | ---: | ---: | --- | ---: |",
    ]
    base = statistics.median(results["polling"][0])
    for mode, (times, cpu) in results.items():
        p50 = statistics.median(times)
        p95 = statistics.quantiles(times, n=20)[-1]
        ratio = "(baseline)" if mode == "polling" else f"{base / p50:.1f}x faster"
        lines.append(
            f"| {MODES[mode]} | {p50 * 1000:.0f} ms | {p95 * 1000:.0f} ms | "
            f"{max(times) * 1000:.0f} ms | {ratio} | {cpu:.2f} % |"
        )
    lines += ["", "Target: p50 under 100 ms with workers idle."]
    return "\n".join(lines) + "\n"


def worker(mode: str) -> None:
    """``python -m bench.latency worker woken|polling``: a worker process for one mode."""
    from arq.worker import Worker as ArqWorker

    from services.core.logs import log_config
    from services.worker.settings import create_worker, worker_kwargs

    settings = load_settings(os.environ)
    log_config(settings.log_level, settings.log_format)
    if mode == "woken":
        create_worker(settings).run()
        return
    kwargs = worker_kwargs(settings, poll_delay=0.5)
    kwargs.pop("drain_seconds")
    ArqWorker(**kwargs).run()


if __name__ == "__main__":
    if sys.argv[1:2] == ["worker"]:
        worker(sys.argv[2])
    else:
        print(main())
