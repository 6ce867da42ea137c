"""Exports measured from outside, each figure against a baseline taken in the same run.

`python -m bench exports` (part of `make bench`). ``BENCH_EXPORT_ROWS`` sets the large
size (default 1,000,000; the small one is a tenth). Ferry runs as real processes
(``ferry api`` and arq workers polling every 50 ms, local storage); ``curl`` is the
client, writing to /dev/null. Each comparison runs twice, interleaved with its
baseline, and the best of each is kept (the machine may be shared).

- **CSV**: baseline ``psql -c "COPY (<the export's own SELECT>) TO STDOUT (FORMAT csv,
  HEADER)"`` into /dev/null. Ferry: ``GET export.csv`` (direct) and ``POST
  /v1/exports`` → job ``succeeded`` → ``GET …/download`` (background). First on a
  *fresh* table: seeded with autovacuum off, so no visibility map and no statistics
  (one untimed scan sets the hint bits first, so both sides meet the same pages);
  then again after ``VACUUM ANALYZE``.
- **Parquet**: against Ferry's own CSV of the same rows, direct and background.
- **JSON / NDJSON**: baseline a probe process reading the same rows through an
  asyncpg cursor and encoding them with msgspec, bytes dropped: nothing else.
- **XLSX**: baseline bare xlsxwriter ``constant_memory`` writing the same rows from
  memory (a child process) at the small size; the large job is compared with ten
  times that.
- **Concurrency**: four background CSV exports of half the large size each (four
  accounts, four users) POSTed at once, against one alone: rows/s from the first
  job's ``created_at`` to the last one's ``finished_at``; one and two workers.
- **Peak RSS** of the api and the worker that served every format at each size.
"""

from __future__ import annotations

import asyncio
import functools
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgspec
import redis as redis_sync
import xlsxwriter

from bench.common import Figure, Report, free_port, redis_url, scratch_database
from services.core import demo
from services.core.auth import mint_token
from services.core.datasets import load_registry
from services.core.datasets.sql import export_query
from services.core.db.pool import connect
from services.core.exports.json import BATCH
from services.core.exports.run import snapshot
from services.core.exports.spec import build_spec
from services.core.exports.xlsx import CURRENCY_FORMATS, DATE_FORMAT
from services.core.settings import Settings, load_settings

REDIS_DB = 13
ORG = "bench"
SECRET = "bench-secret-" + "x" * 32
DATASET = "bookkeeping_records"
REPEATS = 2
CONCURRENT = 4


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


def spec_query(account: str, fmt: str = "csv") -> tuple[str, list[Any]]:
    ds = load_registry(Settings().datasets_dir).get(DATASET)
    spec = build_spec(ds, format=fmt, preset="all", filters={"account_id": account})
    fields = [ds.field(name) for name in spec.columns]
    mode = "text" if fmt == "csv" else "typed"
    return export_query(ds, fields, ORG, spec.filters, mode=mode)  # type: ignore[arg-type]


def literal_sql(account: str) -> str:
    """The CSV export's SELECT with its arguments written in, for psql."""
    sql, args = spec_query(account)
    for i in range(len(args), 0, -1):
        sql = sql.replace(f"${i}", "'" + str(args[i - 1]).replace("'", "''") + "'")
    return sql


# --- the database -----------------------------------------------------------------------


async def seed(database_url: str, accounts: dict[str, int]) -> None:
    conn = await connect(database_url)
    try:
        # Fresh as after a large import: no autovacuum, so no visibility map, no stats.
        await conn.execute("ALTER TABLE bookkeeping_records SET (autovacuum_enabled = off)")
        for account, rows in accounts.items():
            for start in range(0, rows, 200_000):
                n = min(200_000, rows - start)
                await demo.seed(conn, org_id=ORG, account_id=account, rows=n)
        # One untimed read sets the hint bits, so whichever side runs first does not
        # pay for writing them; the table keeps no visibility map and no statistics.
        await conn.execute("SET max_parallel_workers_per_gather = 0")
        await conn.fetchval("SELECT count(*) FROM bookkeeping_records")
    finally:
        await conn.close()


async def settle(database_url: str) -> None:
    conn = await connect(database_url)
    try:
        await conn.execute("VACUUM ANALYZE bookkeeping_records")
    finally:
        await conn.close()


async def job_span(database_url: str, ids: list[str]) -> tuple[float, int]:
    """Wait until the jobs end; (first created_at → last finished_at in seconds, rows)."""
    conn = await connect(database_url)
    try:
        while True:
            rows = await conn.fetch(
                "SELECT status, created_at, finished_at, result FROM jobs "
                "WHERE id = ANY($1::uuid[])",
                ids,
            )
            if all(r["status"] not in ("queued", "running") for r in rows):
                break
            await asyncio.sleep(0.01)
    finally:
        await conn.close()
    failed = [r for r in rows if r["status"] != "succeeded"]
    assert not failed, failed
    span = max(r["finished_at"] for r in rows) - min(r["created_at"] for r in rows)
    return span.total_seconds(), sum(r["result"]["rows"] for r in rows)


# --- Ferry as processes -------------------------------------------------------------------


@dataclass
class Ferry:
    """``ferry api`` and workers on a scratch database; peak RSS read when they stop."""

    database_url: str
    storage: str
    workers: int = 1
    # The exports' workers poll every 50 ms without crons; the imports run ``ferry worker``.
    worker: tuple[str, ...] = ("-m", "bench.exports", "worker")
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.port = free_port()
        env = env_for(self.database_url, self.storage, FERRY_PORT=str(self.port), **self.env)
        self.settings = load_settings(env)
        self.base = f"http://127.0.0.1:{self.port}"
        quiet = subprocess.DEVNULL
        self.api = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "api"], env=env, stderr=quiet, cwd=ROOT
        )
        self.worker_procs = [
            subprocess.Popen([sys.executable, *self.worker], env=env, stderr=quiet, cwd=ROOT)
            for _ in range(self.workers)
        ]
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{self.base}/readyz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("ferry api did not start")
            time.sleep(0.1)

    def token(self, user: str = "bench-user", perm: str = "read") -> str:
        return mint_token(self.settings, sub=user, org=ORG, perms=[f"{DATASET}.{perm}"])

    def curl(self, path: str, user: str = "bench-user") -> tuple[float, int]:
        """GET with curl into /dev/null: (seconds, bytes)."""
        started = time.perf_counter()
        out = subprocess.run(
            [
                *("curl", "-sSfL", "-o", "/dev/null", "-w", "%{size_download}"),
                *("-H", f"Authorization: Bearer {self.token(user)}", self.base + path),
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        return time.perf_counter() - started, int(out)

    def direct(self, fmt: str, account: str) -> tuple[float, int]:
        return self.curl(f"/v1/datasets/{DATASET}/export.{fmt}?account_id={account}&preset=all")

    def post(self, fmt: str, account: str, user: str = "bench-user") -> str:
        body = {"dataset": DATASET, "format": fmt, "preset": "all", "account_id": account}
        headers = {"Authorization": f"Bearer {self.token(user)}"}
        response = httpx.post(f"{self.base}/v1/exports", json=body, headers=headers)
        response.raise_for_status()
        job_id: str = response.json()["id"]
        return job_id

    def background(self, fmt: str, account: str) -> tuple[float, int]:
        """POST → succeeded → download with curl: (seconds, rows)."""
        started = time.perf_counter()
        job_id = self.post(fmt, account)
        _span, rows = asyncio.run(job_span(self.database_url, [job_id]))
        self.curl(f"/v1/exports/{job_id}/download")
        return time.perf_counter() - started, rows

    def stop(self) -> tuple[int, int]:
        """Stop everything; peak RSS in MiB of the api and of the largest worker, each
        process itself (a worker's workbook readers are processes of their own, capped
        by their own limit; the rusage of a reaped process would count them too)."""
        peaks = []
        for proc in [self.api, *self.worker_procs]:
            peaks.append(peak_rss_mib(proc.pid))
            proc.terminate()
            os.waitpid(proc.pid, 0)
            proc.returncode = 0
        return peaks[0], max(peaks[1:])


ROOT = Path(__file__).resolve().parents[1]


def peak_rss_mib(pid: int) -> int:
    """The process's peak resident set so far (``VmHWM``), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) // 1024
    raise RuntimeError(f"no VmHWM for process {pid}")


def best(runs: list[tuple[float, int]]) -> tuple[float, int]:
    return min(runs)


def interleaved(steps: dict[str, Callable[[], tuple[float, int]]]) -> dict[str, tuple[float, int]]:
    """Each step ``REPEATS`` times, in turn; the best run of each."""
    runs: dict[str, list[tuple[float, int]]] = {name: [] for name in steps}
    for _ in range(REPEATS):
        for name, step in steps.items():
            runs[name].append(step())
    return {name: best(r) for name, r in runs.items()}


def psql_copy(database_url: str, account: str, rows: int) -> Callable[[], tuple[float, int]]:
    command = f"COPY ({literal_sql(account)}) TO STDOUT WITH (FORMAT csv, HEADER)"

    def run() -> tuple[float, int]:
        started = time.perf_counter()
        subprocess.run(
            ["psql", database_url, "-X", "-q", "-c", command],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        return time.perf_counter() - started, rows

    return run


def probe(database_url: str, account: str, fmt: str) -> Callable[[], tuple[float, int]]:
    def run() -> tuple[float, int]:
        out = subprocess.run(
            [sys.executable, "-m", "bench.exports", "probe", database_url, account, fmt],
            check=True,
            capture_output=True,
            text=True,
            cwd=ROOT,
        ).stdout.split()
        return float(out[0]), int(out[1])

    return run


def bare_in_child(database_url: str, account: str) -> float:
    """The xlsxwriter baseline in a process of its own (its rows in memory stay there)."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.exports", "bare", database_url, account],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    ).stdout
    return float(out.split()[-1])


# --- the figures --------------------------------------------------------------------------


def csv_figures(report: Report, ferry: Ferry, db: str, n: int, state: str) -> None:
    got = interleaved(
        {
            "copy": psql_copy(db, "large", n),
            "direct": lambda: ferry.direct("csv", "large"),
            "background": lambda: ferry.background("csv", "large"),
        }
    )
    copy_s = got["copy"][0]
    report.add(Figure(f"psql COPY TO STDOUT, {state} table", n, copy_s))
    report.add(
        Figure(
            f"CSV direct (curl), {state}",
            n,
            got["direct"][0],
            "psql COPY",
            copy_s,
            note=f"{got['direct'][1] / 2**20:.0f} MiB",
        )
    )
    report.add(
        Figure(
            f"CSV background: POST → download, {state}",
            got["background"][1],
            got["background"][0],
            "psql COPY",
            copy_s,
        )
    )


def parquet_figures(report: Report, ferry: Ferry, n: int) -> None:
    got = interleaved(
        {
            "csv": lambda: ferry.direct("csv", "large"),
            "parquet": lambda: ferry.direct("parquet", "large"),
            "csv job": lambda: ferry.background("csv", "large"),
            "parquet job": lambda: ferry.background("parquet", "large"),
        }
    )
    for kind, base in (("direct (curl)", "csv"), ("background", "csv job")):
        name = "parquet" if base == "csv" else "parquet job"
        report.add(
            Figure(
                f"Parquet {kind}",
                n,
                got[name][0],
                f"Ferry CSV {kind}",
                got[base][0],
                note=f"{got[name][1] / 2**20:.0f} MiB" if base == "csv" else "",
            )
        )


def json_figures(report: Report, ferry: Ferry, db: str, n: int) -> None:
    for fmt in ("ndjson", "json"):
        got = interleaved(
            {
                "probe": probe(db, "large", fmt),
                "direct": functools.partial(ferry.direct, fmt, "large"),
            }
        )
        report.add(Figure(f"asyncpg + msgspec probe, {fmt}", n, got["probe"][0]))
        report.add(
            Figure(f"{fmt.upper()} direct (curl)", n, got["direct"][0], "probe", got["probe"][0])
        )


def xlsx_figures(report: Report, ferry: Ferry, db: str, n: int) -> float:
    bare_s = bare_in_child(db, "small")
    report.add(Figure("bare xlsxwriter constant_memory", n, bare_s))
    got = interleaved(
        {
            "direct": lambda: ferry.direct("xlsx", "small"),
            "background": lambda: ferry.background("xlsx", "small"),
        }
    )
    report.add(Figure("XLSX direct (curl)", n, got["direct"][0], "bare xlsxwriter", bare_s))
    report.add(
        Figure(
            "XLSX background: POST → download", n, got["background"][0], "bare xlsxwriter", bare_s
        )
    )
    return bare_s


def every_format_once(ferry: Ferry, account: str) -> None:
    """Give the api and the worker each format at this size (for their peak RSS)."""
    for fmt in ("csv", "json", "ndjson", "xlsx", "parquet"):
        ferry.direct(fmt, account)
        ferry.background(fmt, account)


def concurrency_figures(report: Report, db: str, storage: str, n: int, workers: int) -> None:
    ferry = Ferry(db, storage, workers=workers)
    try:
        alone, together = [], []
        for _ in range(REPEATS):
            alone.append(asyncio.run(job_span(db, [ferry.post("csv", "c1", "user-1")])))
            ids = [ferry.post("csv", f"c{i}", f"user-{i}") for i in range(1, CONCURRENT + 1)]
            together.append(asyncio.run(job_span(db, ids)))
    finally:
        ferry.stop()
    one_s, one_rows = min(alone)
    all_s, all_rows = min(together)
    label = f"{workers} worker process{'es' if workers > 1 else ''}"
    report.add(Figure(f"one CSV job of {n:,} alone, {label}", one_rows, one_s))
    # Same rows/s means four times the rows in four times the time.
    report.add(
        Figure(
            f"{CONCURRENT} CSV jobs at once, {label}",
            all_rows,
            all_s,
            "one alone (rows/s)",
            one_s * all_rows / one_rows,
        )
    )


def main() -> str:
    small, large = sizes()
    half = large // 2
    report = Report(f"Exports ({large:,} and {small:,} rows)")
    redis_sync.Redis.from_url(redis_url(REDIS_DB)).flushdb()
    accounts = {"small": small, "large": large} | {f"c{i}": half for i in range(1, CONCURRENT + 1)}
    with scratch_database() as db, tempfile.TemporaryDirectory() as tmp:
        storage = str(Path(tmp) / "storage")
        print(f"  seeding {sum(accounts.values()):,} rows …", flush=True)
        asyncio.run(seed(db, accounts))

        ferry = Ferry(db, storage)
        try:
            csv_figures(report, ferry, db, large, "fresh")
            asyncio.run(settle(db))
            csv_figures(report, ferry, db, large, "settled")
            parquet_figures(report, ferry, large)
            json_figures(report, ferry, db, large)
            seconds, rows = ferry.background("xlsx", "large")
        finally:
            api_large, worker_large = ferry.stop()

        ferry = Ferry(db, storage)
        try:
            bare_s = xlsx_figures(report, ferry, db, small)
            every_format_once(ferry, "small")
        finally:
            api_small, worker_small = ferry.stop()
        report.add(
            Figure(
                f"XLSX background {large:,}: POST → download",
                rows,
                seconds,
                "bare xlsxwriter at the small size, x10",
                bare_s * large / small,
            )
        )
        for workers in (1, 2):
            concurrency_figures(report, db, storage, half, workers)

    text = report.render()
    text += (
        f"\nPeak RSS serving every format (direct and background): api {api_small} MiB at "
        f"{small:,} rows, {api_large} MiB at {large:,} ({api_large / api_small:.2f}x); "
        f"worker {worker_small} MiB at {small:,}, {worker_large} MiB at {large:,} "
        f"({worker_large / worker_small:.2f}x); target ≤ 1.20x.\n"
    )
    return text


# --- child processes ------------------------------------------------------------------------


def worker() -> None:
    """One worker with Ferry's settings from the environment, polling every 50 ms, no crons."""
    from services.worker.settings import create_worker

    settings = load_settings(os.environ)
    create_worker(settings, cron_jobs=[], poll_delay=0.05).run()


async def probe_rows(database_url: str, account: str, fmt: str) -> tuple[float, int]:
    """Read the export's rows with an asyncpg cursor, encode them with msgspec, drop them."""
    sql, args = spec_query(account, fmt)
    ds = load_registry(Settings().datasets_dir).get(DATASET)
    keys = ds.presets["all"]
    encoder = msgspec.json.Encoder()
    conn = await connect(database_url)
    rows = 0
    started = time.perf_counter()
    async with snapshot(conn):
        cursor = await conn.cursor(sql, *args)
        while batch := await cursor.fetch(BATCH):
            items = [dict(zip(keys, r, strict=True)) for r in batch]
            encoder.encode_lines(items) if fmt == "ndjson" else encoder.encode(items)
            rows += len(batch)
    seconds = time.perf_counter() - started
    await conn.close()
    return seconds, rows


async def rows_in_memory(database_url: str, account: str) -> list[Any]:
    sql, args = spec_query(account, "xlsx")
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
    elif sys.argv[1:2] == ["probe"]:
        seconds, rows = asyncio.run(probe_rows(sys.argv[2], sys.argv[3], sys.argv[4]))
        print(seconds, rows)
    else:
        print(main())
