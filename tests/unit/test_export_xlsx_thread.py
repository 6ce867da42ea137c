"""The XLSX writer thread cannot outlive the event loop that feeds it.

Its batches come from the loop; were it to wait for one for ever after the loop stopped
(a worker leaving on an error, say), the process could never exit: Python joins such
threads at exit, and the signal handlers that could stop it ran on that loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading

import pytest

from services.core.exports.xlsx import WAIT_STEP, Stopped, _result


def test_a_batch_never_coming_from_a_stopped_loop_stops_the_thread() -> None:
    loop = asyncio.new_event_loop()  # not running: nobody will ever complete the fetch
    pending: concurrent.futures.Future[list[object]] = concurrent.futures.Future()
    try:
        with pytest.raises(Stopped):  # instead of waiting for ever
            _result(pending, loop)
    finally:
        loop.close()


async def test_a_cancelled_export_stops_its_thread_while_the_loop_runs() -> None:
    loop = asyncio.get_running_loop()
    pending: concurrent.futures.Future[list[object]] = concurrent.futures.Future()
    stop = threading.Event()
    waiting = loop.run_in_executor(None, _result, pending, loop, stop)
    stop.set()
    with pytest.raises(Stopped):
        await asyncio.wait_for(waiting, 10 * WAIT_STEP)


async def test_a_batch_that_arrives_is_handed_over() -> None:
    loop = asyncio.get_running_loop()
    pending: concurrent.futures.Future[list[object]] = concurrent.futures.Future()
    waiting = loop.run_in_executor(None, _result, pending, loop, threading.Event())
    pending.set_result([("row",)])
    assert await waiting == [("row",)]
