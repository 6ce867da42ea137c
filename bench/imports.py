"""Imports: a 1M-row CSV uploaded → validated → committed, against raw COPY FROM.

`python -m bench imports` (part of `make bench`). For each size Ferry runs as it is
deployed — ``ferry api`` and ``ferry worker`` processes on a scratch database — and
``curl`` streams the file up and asks for the commit; the end of each step is seen
by polling the job's row every 5 ms. Peak RSS is read per process when they stop:
the worker's is the import's. In the same run and the same table, the baseline is
PostgreSQL's own ``COPY … FROM`` of the same file. PostgreSQL 15 has no
``ON_ERROR ignore``, so the baseline loads the file's valid rows (99%); rows/s are
compared. The XLSX figures validate a workbook of a tenth of the large size and one of
the large size, against python-calamine alone reading the same sheet; their peak RSS is
the worker's and its workbook reader's (a process of its own: its ``VmHWM`` read every
20 ms while the import runs).

Each figure is the median of ``BENCH_ROUNDS`` (default 3) rounds, each pairing the
baseline with Ferry on a scratch database of its own, so that a machine whose speed
drifts moves both; the note gives the range of the rounds' ratios, and peak RSS is the
largest of the rounds.

The small workbook's rounds are short: there are at least five, and the baseline of each is
the median of three readings taken just before it, calamine's time on this machine
moving by a third from one reading to the next.

``BENCH_IMPORT_ROWS`` (default 1,000,000) sets the large size; the small one is a tenth.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import os
import random
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import psutil

from bench.common import Figure, Report, scratch_database
from bench.exports import ORG, Ferry, peak_rss_mib
from services.core import demo

COLUMNS = list(demo.COLUMNS[2:])  # the record columns, without org and account
ACCOUNT = "main"
XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


ROUNDS = max(1, int(os.environ.get("BENCH_ROUNDS", "3")))
XLSX_ROUNDS = 5


def median_round(
    rounds: list[tuple[float, dict[str, float], float]],
) -> tuple[dict[str, float], float, str]:
    """The round of median ratio (its times and baseline seconds), the peak RSS of all
    rounds in it, and the spread of the ratios as the note says it."""
    ordered = sorted(rounds, key=lambda r: r[0])
    _, times, baseline = ordered[len(ordered) // 2]
    times = {
        **times,
        **{
            rss: max(r[1][rss] for r in rounds)
            for rss in ("worker_rss", "api_rss", "reader_rss")
            if rss in times
        },
    }
    ratios = [r[0] for r in ordered]
    if len(ratios) == 1:
        return times, baseline, "one round"
    return times, baseline, f"median of {len(ratios)} rounds, {ratios[0]:.2f}x to {ratios[-1]:.2f}x"


# --- data -------------------------------------------------------------------------------


def _spoil(row: list[Any], rng: random.Random, previous: list[Any]) -> None:
    """Make a row invalid the ways real files are: one broken value per row."""
    kind = rng.randrange(6)
    if kind == 0:
        row[0] = ""  # no order id
    elif kind == 1:
        row[1] = "2026-02-30"
    elif kind == 2:
        row[3] = "two"
    elif kind == 3:
        row[4] = "free"
    elif kind == 4:
        row[8] = "lost-in-space"
    else:
        row[0] = previous[0]  # the order id of the row before


def write_csv(path: Path, valid_path: Path, rows: int) -> int:
    """``rows`` orders, 1% invalid; the valid ones also go to ``valid_path``; returns them."""

    rng = random.Random(7)
    valid = 0
    with (
        open(path, "w", newline="") as fh,
        open(valid_path, "w", newline="") as good,
    ):
        out, ok = csv.writer(fh), csv.writer(good)
        out.writerow(COLUMNS)
        ok.writerow(COLUMNS)
        previous: list[Any] = []
        for index, record in enumerate(demo.records(ORG, ACCOUNT, rows)):
            row = list(record[2:])
            if index % 100 == 99:
                _spoil(row, rng, previous)
            else:
                ok.writerow(row)
                valid += 1
            out.writerow(row)
            previous = row
    return valid


def write_xlsx(path: Path, rows: int) -> None:
    import xlsxwriter

    book = xlsxwriter.Workbook(str(path), {"constant_memory": True})
    sheet = book.add_worksheet("Orders")
    dates = book.add_format({"num_format": "yyyy-mm-dd"})
    money = book.add_format({"num_format": "$#,##0.00"})
    labels = ["Order Number", "Sale Date", "Item Title", "Quantity", "Sold For", "Fees"]
    sheet.write_row(0, 0, [*labels, "Shipping", "Cost", "Status"])
    for r, record in enumerate(demo.records(ORG, ACCOUNT, rows), start=1):
        order, day, item, qty, price, fees, ship, cost, status = record[2:]
        sheet.write_string(r, 0, str(order))
        sheet.write_datetime(r, 1, day, dates)
        sheet.write_string(r, 2, str(item))
        sheet.write_number(r, 3, qty)
        for c, cents in ((4, price), (5, fees), (6, ship), (7, cost)):
            sheet.write_number(r, c, cents / 100, money)  # type: ignore[operator]
        sheet.write_string(r, 8, str(status))
    book.close()


# --- baseline ---------------------------------------------------------------------------


async def raw_copy(database_url: str, path: Path) -> float:
    """PostgreSQL's COPY FROM of the file into the same (empty) table; seconds."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            f"ALTER TABLE bookkeeping_records ALTER org_id SET DEFAULT '{ORG}', "
            f"ALTER account_id SET DEFAULT '{ACCOUNT}'"
        )
        started = time.perf_counter()
        await conn.copy_to_table(
            "bookkeeping_records", source=path, columns=COLUMNS, format="csv", header=True
        )
        seconds = time.perf_counter() - started
        await conn.execute(
            "ALTER TABLE bookkeeping_records ALTER org_id DROP DEFAULT, "
            "ALTER account_id DROP DEFAULT"
        )
        await conn.execute("TRUNCATE bookkeeping_records RESTART IDENTITY CASCADE")
        await conn.execute("VACUUM ANALYZE bookkeeping_records")
        await conn.execute("CHECKPOINT")
        return seconds
    finally:
        await conn.close()


def calamine_read(path: Path) -> float:
    import python_calamine

    started = time.perf_counter()
    book = python_calamine.CalamineWorkbook.from_path(str(path))
    for _row in book.get_sheet_by_index(0).iter_rows():
        pass
    return time.perf_counter() - started


# --- Ferry as it runs: ``ferry api`` and ``ferry worker``, curl the client ------------------


def curl(ferry: Ferry, method: str, path: str, *args: str) -> dict[str, Any]:
    """A request with curl (a file streamed with ``-T``); its JSON answer."""
    token = ferry.token("bench-importer", perm="write")
    answer = subprocess.run(
        [
            *("curl", "-sSf", "-X", method, *args),
            *("-H", "Expect:", "-H", f"Authorization: Bearer {token}", ferry.base + path),
        ],
        check=True,
        capture_output=True,
    ).stdout
    document: dict[str, Any] = json.loads(answer)
    return document


async def until(database_url: str, job_id: str, wanted: str) -> dict[str, Any]:
    """Poll the job's row every 5 ms until it is ``wanted``; its result."""
    conn = await asyncpg.connect(database_url)
    try:
        while True:
            row = await conn.fetchrow(
                "SELECT status, result, error FROM jobs WHERE id = $1::uuid", job_id
            )
            assert row is not None
            if row["status"] == wanted:
                return json.loads(row["result"])  # type: ignore[no-any-return]
            assert row["status"] not in ("failed", "cancelled", "expired"), dict(row)
            await asyncio.sleep(0.005)
    finally:
        await conn.close()


def settle(ferry: Ferry) -> None:
    """Wait until the workers and the processes they started have used no CPU for
    0.3 s (at most 10 s): a deployed worker meets a job with its start-up long done."""
    workers = [psutil.Process(p.pid) for p in ferry.worker_procs]

    def used() -> float:
        total = 0.0
        for worker in workers:
            for process in [worker, *worker.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    times = process.cpu_times()
                    total += times.user + times.system
        return total

    deadline = time.monotonic() + 10
    before = used()
    while time.monotonic() < deadline:
        time.sleep(0.3)
        now = used()
        if now - before < 0.01:
            return
        before = now


def upload(ferry: Ferry, path: Path, kind: str) -> dict[str, Any]:
    """``curl -T`` of the file as an import of the bench account; the import job."""
    content_type = XLSX_TYPE if kind == "xlsx" else "text/csv"
    return curl(
        ferry,
        "POST",
        f"/v1/imports?dataset=bookkeeping_records&account_id={ACCOUNT}&filename={path.name}",
        *("-T", str(path), "-H", f"Content-Type: {content_type}"),
    )


def warm_up(ferry: Ferry, database_url: str, kind: str) -> None:
    """One small import of the same kind validated first, as a worker in service has
    done: what a first import alone pays (imports, connections) is not timed."""
    with tempfile.TemporaryDirectory(prefix="ferry-bench-warm-up-") as tmp:
        small = Path(tmp) / f"warm-up.{kind}"
        if kind == "xlsx":
            write_xlsx(small, 10)
        else:
            write_csv(small, Path(tmp) / "valid.csv", 10)
        job = upload(ferry, small, kind)
        asyncio.run(until(database_url, job["id"], "validated"))
    settle(ferry)


@contextlib.contextmanager
def reader_peak(ferry: Ferry) -> Iterator[list[int]]:
    """The largest peak RSS (MiB) of the workbook readers of ``ferry``'s workers while
    the block runs, each read from its ``VmHWM`` every 20 ms (it exits with the import)."""
    peak = [0]
    done = threading.Event()
    workers = [psutil.Process(p.pid) for p in ferry.worker_procs]

    def watch() -> None:
        while not done.wait(0.02):
            for worker in workers:
                with contextlib.suppress(psutil.Error, OSError, RuntimeError):
                    for reader in worker.children():
                        peak[0] = max(peak[0], peak_rss_mib(reader.pid))

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        done.set()
        thread.join()


def run_import(database_url: str, path: Path, kind: str, commit: bool) -> dict[str, float]:
    """Upload → validated (→ committed) through a Ferry of its own, warmed up; seconds,
    rows and the peak RSS in MiB of its api and its worker."""
    storage = tempfile.mkdtemp(prefix="ferry-bench-storage-")
    env = {"FERRY_IMPORT_MAX_BYTES": str(1024**3)}
    ferry = Ferry(database_url, storage, worker=("-m", "services.cli", "worker"), env=env)
    times: dict[str, float] = {}
    try:
        warm_up(ferry, database_url, kind)
        with reader_peak(ferry) if kind == "xlsx" else contextlib.nullcontext([0]) as reader:
            started = time.perf_counter()
            job = upload(ferry, path, kind)
            times["upload"] = time.perf_counter() - started
            mark = time.perf_counter()
            doc = asyncio.run(until(database_url, job["id"], "validated"))
            times["validate"] = time.perf_counter() - mark
        if kind == "xlsx":
            times["reader_rss"] = reader[0]
        times["rows"], times["valid"] = doc["totals"]["rows"], doc["totals"]["valid"]
        if commit:
            mark = time.perf_counter()
            body = '{"on_error": "skip"}'
            curl(ferry, "POST", f"/v1/imports/{job['id']}/commit", "--json", body)
            doc = asyncio.run(until(database_url, job["id"], "committed"))
            times["commit"] = time.perf_counter() - mark
            times["committed"] = doc["batch"]["rows"]
        times["total"] = time.perf_counter() - started
    finally:
        times["api_rss"], times["worker_rss"] = ferry.stop()
        shutil.rmtree(storage, ignore_errors=True)
    return times


# --- main -------------------------------------------------------------------------------


def main() -> str:
    big = int(os.environ.get("BENCH_IMPORT_ROWS", "1000000"))
    small = max(big // 10, 1000)
    report = Report(f"Imports ({big:,} and {small:,} rows)")
    with tempfile.TemporaryDirectory(prefix="ferry-bench-imports-") as tmp:
        work = Path(tmp)
        results: dict[int, tuple[dict[str, float], float, int, str]] = {}
        for rows in (small, big):
            path, valid_path = work / f"orders-{rows}.csv", work / f"valid-{rows}.csv"
            print(f"  writing {rows:,} rows …", flush=True)
            valid = write_csv(path, valid_path, rows)
            rounds = []
            for _ in range(ROUNDS):
                with scratch_database() as database_url:
                    copy_seconds = asyncio.run(raw_copy(database_url, valid_path))
                    times = run_import(database_url, path, "csv", commit=True)
                # rows/s against rows/s: the import handles every row, COPY the valid ones
                rounds.append((copy_seconds * rows / valid / times["total"], times, copy_seconds))
            times, copy_seconds, spread = median_round(rounds)
            results[rows] = (times, copy_seconds, valid, spread)
            valid_path.unlink()
            path.unlink()
        for rows in (big, small):
            times, copy_seconds, valid, spread = results[rows]
            baseline = Figure(
                f"raw COPY FROM, {rows:,}-row file",
                valid,
                copy_seconds,
                note="valid rows only (PG 15)",
            )
            report.add(baseline)
            # Compare rows/s: the import handles every row of the file, COPY only the valid ones.
            equivalent = copy_seconds * rows / valid
            report.add(
                Figure(
                    f"import CSV {rows:,}: upload → validate → commit",
                    rows,
                    times["total"],
                    baseline="raw COPY FROM",
                    baseline_seconds=equivalent,
                    rss_mib=int(times["worker_rss"]),
                    note=(
                        f"{spread}; upload {times['upload']:.1f} s, validate "
                        f"{times['validate']:.1f} s, commit {times['commit']:.1f} s; "
                        f"{int(times['committed']):,} committed, "
                        f"{int(times['rows'] - times['valid']):,} invalid reported; "
                        f"RSS: worker (shown), api {int(times['api_rss'])} MiB"
                    ),
                )
            )
        xlsx_ratios = {}
        for xlsx_rows in (small, big):
            xlsx = work / f"orders-{xlsx_rows}.xlsx"
            print(f"  writing {xlsx_rows:,}-row XLSX …", flush=True)
            write_xlsx(xlsx, xlsx_rows)
            rounds = []
            # The small sheet's rounds are short, calamine's time moving by a third from
            # one reading to the next: more rounds, each against three readings.
            readings = 3 if xlsx_rows == small else 1
            for _ in range(max(ROUNDS, XLSX_ROUNDS) if xlsx_rows == small else ROUNDS):
                bare = statistics.median(calamine_read(xlsx) for _ in range(readings))
                with scratch_database() as database_url:
                    times = run_import(database_url, xlsx, "xlsx", commit=False)
                rounds.append((bare / times["total"], times, bare))
            xlsx.unlink()
            times, bare, spread = median_round(rounds)
            xlsx_ratios[xlsx_rows] = (bare / times["total"], times)
            report.add(
                Figure(f"python-calamine reading the {xlsx_rows:,}-row sheet", xlsx_rows, bare)
            )
            report.add(
                Figure(
                    f"import XLSX {xlsx_rows:,}: upload → validate",
                    xlsx_rows,
                    times["total"],
                    baseline="calamine alone",
                    baseline_seconds=bare,
                    rss_mib=int(times["worker_rss"]),
                    note=(
                        f"{spread}; upload {times['upload']:.2f} s, validate "
                        f"{times['validate']:.2f} s; RSS: worker (shown), its workbook reader "
                        f"{int(times['reader_rss'])} MiB, api {int(times['api_rss'])} MiB"
                    ),
                )
            )
    text = report.render()
    big_times, big_copy, big_valid, _ = results[big]
    small_times = results[small][0]
    ratio_big = big_copy * big / big_valid / big_times["total"]

    def xlsx_rss(rss: str) -> str:
        return " and ".join(f"{int(xlsx_ratios[n][1][rss])} MiB" for n in (small, big))

    text += (
        f"\nThe three figures (issue 12):\n"
        f"- CSV {big:,} rows, upload → validate → commit: {ratio_big:.2f}x raw COPY FROM "
        f"(target >= 0.75x).\n"
        f"- Peak RSS of the worker: {int(small_times['worker_rss'])} MiB at {small:,} rows, "
        f"{int(big_times['worker_rss'])} MiB at {big:,}; of the api: "
        f"{int(small_times['api_rss'])} and {int(big_times['api_rss'])} MiB "
        f"(target: flat, under 250 MB = 238 MiB).\n"
        f"- XLSX {small:,} rows, upload → validate: {xlsx_ratios[small][0]:.2f}x "
        f"python-calamine reading the sheet alone (target >= 0.7x); at {big:,} rows "
        f"{xlsx_ratios[big][0]:.2f}x. Peak RSS of the worker {xlsx_rss('worker_rss')}, "
        f"of its workbook reader {xlsx_rss('reader_rss')}.\n"
    )
    return text


if __name__ == "__main__":
    print(main())
