"""Exports: CSV through HTTP and a background job vs raw COPY; XLSX vs bare xlsxwriter; RSS.

`python -m bench exports` (or `make bench`). `BENCH_EXPORT_ROWS` sets the large size
(default 1,000,000; the small one is a tenth of it). Baselines run in the same
process, on the same database, in the same run:

- raw COPY: asyncpg ``COPY (the export's own SELECT) TO STDOUT`` into a sink that
  drops the bytes — what CSV export cannot beat;
- bare xlsxwriter: ``constant_memory`` writing the same rows, already in memory, with
  the same formats — the reference XLSX writer without any database or plumbing.

Ferry's figures come from real processes: ``ferry api`` for the HTTP download, and
``python -m bench.exports worker`` (a burst worker) for background jobs, whose own
timings (``started_at`` → ``finished_at``) and peak RSS are reported.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import redis as redis_sync
import xlsxwriter

from bench.common import Figure, Report, free_port, redis_url, run_measured, scratch_database
from services.core import demo, jobs
from services.core.auth import mint_token
from services.core.datasets import load_registry
from services.core.datasets.sql import export_query
from services.core.db.pool import connect, create_pool
from services.core.exports.run import snapshot
from services.core.exports.spec import build_spec
from services.core.exports.xlsx import CURRENCY_FORMATS, DATE_FORMAT
from services.core.queue import arq_redis, enqueue
from services.core.settings import Settings, load_settings

REDIS_DB = 13
ORG, USER = "bench", "bench-user"
SECRET = "bench-secret-" + "x" * 32
DATASET = "bookkeeping_records"


def sizes() -> tuple[int, int]:
    large = int(os.environ.get("BENCH_EXPORT_ROWS", "1000000"))
    return large // 10, large


def env_for(database_url: str, storage: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FERRY_")}
    env |= {
        "FERRY_DATABASE_URL": database_url,
        "FERRY_REDIS_URL": redis_url(REDIS_DB),
        "FERRY_JWT_SECRET": SECRET,
        "FERRY_STORAGE_DIR": storage,
        "FERRY_LOG_LEVEL": "WARNING",
        "FERRY_DIRECT_EXPORT_MAX_ROWS": "100000000",
    }
    return env | extra


async def seed(database_url: str, small: int, large: int) -> None:
    conn = await connect(database_url)
    try:
        for account, rows in (("small", small), ("large", large)):
            for start in range(0, rows, 200_000):
                await demo.seed(
                    conn, org_id=ORG, account_id=account, rows=min(200_000, rows - start)
                )
        # A settled table, as autovacuum leaves it: counts can use index-only scans.
        await conn.execute("VACUUM ANALYZE bookkeeping_records")
    finally:
        await conn.close()


def query(account: str, mode: str) -> tuple[str, list[Any]]:
    ds = load_registry(Settings().datasets_dir).get(DATASET)
    spec = build_spec(ds, format="csv", preset="all", filters={"account_id": account})
    fields = [ds.field(name) for name in spec.columns]
    return export_query(ds, fields, ORG, spec.filters, mode=mode)  # type: ignore[arg-type]


async def raw_copy(database_url: str, account: str) -> float:
    """Baseline: COPY of the export's own SELECT, bytes dropped."""
    sql, args = query(account, "text")
    conn = await connect(database_url)
    try:

        async def drop(chunk: bytes) -> None:
            return None

        started = time.perf_counter()
        async with snapshot(conn):
            await conn.copy_from_query(sql, *args, output=drop, format="csv", header=True)
        return time.perf_counter() - started
    finally:
        await conn.close()


async def rows_in_memory(database_url: str, account: str) -> list[Any]:
    sql, args = query(account, "typed")
    conn = await connect(database_url)
    try:
        async with snapshot(conn):
            return [tuple(r) for r in await conn.fetch(sql, *args)]
    finally:
        await conn.close()


def bare_xlsxwriter(rows: list[Any], path: Path) -> float:
    """Baseline: xlsxwriter constant_memory writing rows already in memory."""
    ds = load_registry(Settings().datasets_dir).get(DATASET)
    fields = [ds.field(n) for n in ds.presets["all"]]
    started = time.perf_counter()
    wb = xlsxwriter.Workbook(str(path), {"constant_memory": True})
    ws = wb.add_worksheet("Records")
    bold = wb.add_format({"bold": True})
    money = wb.add_format({"num_format": CURRENCY_FORMATS["USD"]})
    day = wb.add_format({"num_format": DATE_FORMAT})
    formats = [money if f.type == "money" else day if f.type == "date" else None for f in fields]
    ws.freeze_panes(1, 0)
    ws.write_row(0, 0, [f.label for f in fields], bold)
    for r, row in enumerate(rows, 1):
        for c, value in enumerate(row):
            fmt = formats[c]
            if fmt is None:
                ws.write(r, c, value)
            elif fmt is day:
                ws.write_datetime(r, c, value, fmt)
            else:
                ws.write_number(r, c, value, fmt)
    wb.close()
    return time.perf_counter() - started


async def make_job(database_url: str, fmt: str, account: str) -> str:
    settings = load_settings(env_for(database_url, ""))
    pool = await create_pool(database_url)
    redis = redis_sync.asyncio.Redis.from_url(settings.redis_url)
    try:
        ds = load_registry(settings.datasets_dir).get(DATASET)
        spec = build_spec(ds, format=fmt, preset="all", filters={"account_id": account})
        job, _ = await jobs.create_job(
            pool,
            kind="export",
            org_id=ORG,
            user_id=USER,
            dataset=DATASET,
            status="queued",
            params=spec.to_params(),
        )
        await enqueue(arq_redis(redis), job)
        return str(job.id)
    finally:
        await redis.aclose()
        await pool.close()


async def job_seconds(database_url: str, job_id: str) -> tuple[float, int]:
    conn = await connect(database_url)
    try:
        job = await jobs.load_job(conn, job_id)
    finally:
        await conn.close()
    assert job is not None
    assert job.status == "succeeded", job
    assert job.started_at is not None
    assert job.finished_at is not None
    assert job.result
    return (job.finished_at - job.started_at).total_seconds(), job.result["rows"]


def background(
    database_url: str, storage: str, fmt: str, account: str, engine: str = "rust"
) -> tuple[float, int, int]:
    """A job run by a burst worker in its own process: (seconds, rows, peak RSS MiB)."""
    job_id = asyncio.run(make_job(database_url, fmt, account))
    env = env_for(database_url, storage, FERRY_XLSX_ENGINE=engine)
    _wall, rss, _out = run_measured(["-m", "bench.exports", "worker"], env=env)
    seconds, rows = asyncio.run(job_seconds(database_url, job_id))
    return seconds, rows, rss


def http_download(database_url: str, storage: str, account: str) -> tuple[float, int]:
    """``GET export.csv`` from a real ``ferry api`` process: (seconds, bytes)."""
    port = free_port()
    env = env_for(database_url, storage, FERRY_PORT=str(port))
    api = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "api"], env=env, stderr=subprocess.DEVNULL
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/readyz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("ferry api did not start")
            time.sleep(0.1)
        settings = load_settings(env)
        token = mint_token(settings, sub=USER, org=ORG, perms=[f"{DATASET}.read"])
        url = f"{base}/v1/datasets/{DATASET}/export.csv?account_id={account}&preset=all"
        size = 0
        started = time.perf_counter()
        with httpx.stream(
            "GET", url, headers={"Authorization": f"Bearer {token}"}, timeout=600
        ) as response:
            response.raise_for_status()
            for chunk in response.iter_raw(1024 * 1024):
                size += len(chunk)
        return time.perf_counter() - started, size
    finally:
        api.terminate()
        api.wait(timeout=20)


def bare_in_child(database_url: str, account: str) -> float:
    """The xlsxwriter baseline in a process of its own (its rows in memory stay there)."""
    _wall, _rss, out = run_measured(
        ["-m", "bench.exports", "bare", database_url, account], env=env_for(database_url, "")
    )
    return float(out.split()[-1])


def main() -> str:
    small, large = sizes()
    report = Report(f"Exports ({large:,} and {small:,} rows)")
    redis_sync.Redis.from_url(redis_url(REDIS_DB)).flushdb()
    with scratch_database() as db, tempfile.TemporaryDirectory() as tmp:
        storage = str(Path(tmp) / "storage")
        print(f"  seeding {large + small:,} rows …", flush=True)
        asyncio.run(seed(db, small, large))

        # Interleaved and best of two: the machine is shared, the baseline must see the
        # same conditions as what is compared with it.
        copies, downloads, jobs_run = [], [], []
        for _ in range(2):
            copies.append(asyncio.run(raw_copy(db, "large")))
            downloads.append(http_download(db, storage, "large"))
            jobs_run.append(background(db, storage, "csv", "large"))
        copy_s = min(copies)
        http_s, size = min(downloads)
        seconds, rows, rss_csv = min(jobs_run)
        report.add(Figure("raw COPY TO STDOUT (same SELECT)", large, copy_s))
        report.add(
            Figure(
                "CSV: GET export.csv (ferry api)",
                large,
                http_s,
                "raw COPY",
                copy_s,
                note=f"file of {size / 2**20:.0f} MiB",
            )
        )
        report.add(Figure("CSV: background job", rows, seconds, "raw COPY", copy_s, rss_csv))

        rss: dict[int, int] = {}
        for account, n in (("small", small), ("large", large)):
            base_s = bare_in_child(db, account)
            report.add(Figure(f"bare xlsxwriter constant_memory {n:,}", n, base_s))
            seconds, rows, rss[n] = background(db, storage, "xlsx", account, "rust")
            report.add(
                Figure(
                    f"XLSX job, rust engine {n:,}",
                    rows,
                    seconds,
                    "bare xlsxwriter",
                    base_s,
                    rss[n],
                )
            )
            if n == small:
                seconds, rows, rss_xw = background(db, storage, "xlsx", account, "xlsxwriter")
                report.add(
                    Figure(
                        f"XLSX job, xlsxwriter engine {n:,}",
                        rows,
                        seconds,
                        "bare xlsxwriter",
                        base_s,
                        rss_xw,
                    )
                )
    ratio = rss[large] / rss[small]
    text = report.render()
    text += (
        f"\nWorker peak RSS, XLSX job: {rss[small]} MiB at {small:,} rows, "
        f"{rss[large]} MiB at {large:,} rows: {ratio:.2f}x (target ≤ 1.20x); "
        f"CSV job at {large:,} rows: {rss_csv} MiB.\n"
    )
    return text


def worker() -> None:
    """Run one burst worker with Ferry's settings from the environment (no crons)."""
    from services.worker.settings import create_worker

    settings = load_settings(os.environ)
    create_worker(settings, burst=True, cron_jobs=[], poll_delay=0.05).run()


def bare(database_url: str, account: str) -> None:
    """Fetch the rows into memory, then time bare xlsxwriter writing them (prints seconds)."""
    rows = asyncio.run(rows_in_memory(database_url, account))
    with tempfile.TemporaryDirectory() as tmp:
        print(bare_xlsxwriter(rows, Path(tmp) / "bare.xlsx"))


if __name__ == "__main__":
    if sys.argv[1:] == ["worker"]:
        worker()
    elif sys.argv[1:2] == ["bare"]:
        bare(sys.argv[2], sys.argv[3])
    else:
        print(main())
