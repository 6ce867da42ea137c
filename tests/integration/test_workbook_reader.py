"""The workbook reader process a worker keeps started ahead: real processes, real files.

A worker keeps one reader waiting so that a workbook's import does not wait for
Python to start. What a user would notice if that went wrong: an import read under
limits other than the ones configured, or one refused because the waiting process
had died.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from services.core.errors import InvalidInput
from services.core.imports import readers
from services.core.imports.readers.chunks import Skips
from tests import workbooks

ROWS = [["Order Number", "Sold For"], *([f"A-{i}", i * 1.5] for i in range(1, 51))]
DEFAULT = readers.Limits()
# The far-row sheet's range (670 MB in calamine) loads under the default limits; under
# these, the reader runs out of memory, or the guard refuses the range first.
TIGHT_MEMORY = readers.Limits(memory_bytes=256 * 1024 * 1024, max_cells=10**9)
SMALL_BUDGET = readers.Limits(memory_bytes=256 * 1024 * 1024, max_cells=10**6)


def waiting_readers() -> list[psutil.Process]:
    """This process's reader processes (waiting, or reading)."""
    found = []
    for process in psutil.Process().children():
        try:
            if "services.core.imports.readers.sheets" in " ".join(process.cmdline()):
                found.append(process)
        except psutil.Error:  # ended (a zombie until reaped)
            continue
    return found


def one_waiting() -> psutil.Process:
    """The spare, once it has started (bounded wait)."""
    deadline = time.monotonic() + 30
    while not (found := waiting_readers()):
        assert time.monotonic() < deadline, "no reader process was started ahead"
        time.sleep(0.01)
    assert len(found) == 1, found
    return found[0]


@pytest.fixture
def spare() -> Iterator[None]:
    yield
    readers.keep_spare(None)
    deadline = time.monotonic() + 30
    while waiting_readers():  # ended once its input closes
        assert time.monotonic() < deadline, "the spare reader did not end"
        time.sleep(0.01)


@pytest.fixture
def orders(tmp_path: Path) -> Path:
    path = tmp_path / "orders.xlsx"
    path.write_bytes(workbooks.xlsx({"Orders": ROWS}))
    return path


def records(path: Path, limits: readers.Limits) -> list[list[str]]:
    book = readers.Workbook(path, "xlsx", limits)
    try:
        layout = readers.workbook_layout(book, limits, None, lambda _headers: (1.0, "test"))
        rows: list[list[str]] = []
        for chunk in readers.read_workbook(book, layout, Skips(), chunk_rows=20):
            rows.extend([str(v) for v in row] for row in zip(*chunk.columns, strict=True))
        return rows
    finally:
        book.close()


def test_a_workbook_is_read_by_the_spare_and_another_is_started(orders: Path, spare: None) -> None:
    readers.keep_spare(DEFAULT)
    first = one_waiting()

    assert records(orders, DEFAULT) == [[a, f"{b:g}"] for a, b in ROWS[1:]]

    assert not first.is_running()  # it read the workbook, and ended with it
    assert one_waiting().pid != first.pid  # the next workbook will not wait for one


def test_a_spare_that_died_waiting_is_not_taken_for_a_refused_file(
    orders: Path, spare: None
) -> None:
    readers.keep_spare(DEFAULT)
    dead = one_waiting()
    dead.send_signal(signal.SIGKILL)  # the OOM killer, say
    dead.wait(timeout=10)

    # A reader killed while reading means "too much memory"; one killed before it had
    # a workbook must not make a good file look like that.
    assert len(records(orders, DEFAULT)) == len(ROWS) - 1


def test_a_spare_started_under_other_limits_is_not_used(tmp_path: Path, spare: None) -> None:
    path = tmp_path / "far.xlsx"
    path.write_bytes(workbooks.hostile_xlsx("far-row"))

    readers.keep_spare(DEFAULT)
    one_waiting()
    with pytest.raises(InvalidInput) as refused:
        readers.Workbook(path, "xlsx", TIGHT_MEMORY)
    assert "needs more memory than Ferry allows for reading a workbook (256 MiB)" in str(
        refused.value
    )

    readers.keep_spare(TIGHT_MEMORY)
    one_waiting()
    book = readers.Workbook(path, "xlsx", SMALL_BUDGET)
    book.close()
    assert book.sheets[0]["refused"].startswith("the sheet 'Orders' uses the range A1:T1048576")


def test_a_read_left_early_does_not_leave_its_rest_to_the_next(tmp_path: Path) -> None:
    # A date order decided late reads the sheet again: the first read is left after a
    # chunk, its other chunks still on their way. The second must get every record.
    path = tmp_path / "orders.xlsx"
    path.write_bytes(workbooks.xlsx({"Orders": ROWS}))
    book = readers.Workbook(path, "xlsx", DEFAULT)
    try:
        layout = readers.workbook_layout(book, DEFAULT, None, lambda _headers: (1.0, "test"))
        first = readers.read_workbook(book, layout, Skips(), chunk_rows=10)
        assert list(next(first).lines) == list(range(2, 12))
        first.close()
        again = list(readers.read_workbook(book, layout, Skips(), chunk_rows=10))
    finally:
        book.close()
    assert [line for chunk in again for line in chunk.lines] == list(range(2, 52))
