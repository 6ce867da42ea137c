"""A browser's EventSource on ``links.events`` keeps working until the job ends.

EventSource cannot send headers and reconnects by itself (with ``Last-Event-ID``) to
the URL it was opened with, so the token in that URL must keep opening the job's
stream for as long as the job runs, however long that is — and open nothing else.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import jwt
import msgspec
import pytest

from services.core.settings import Settings
from tests.conftest import SECRET, WorkerRun
from tests.e2e.sse import DEADLINE, Sse

EXPORT = {"dataset": "bookkeeping_records", "format": "csv"}
TTL = 1  # seconds: the old lifetime of every event link, made tiny


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return msgspec.structs.replace(
        settings, events_token_ttl=TTL, events_feed_ttl=3600, sse_heartbeat_seconds=0.2
    )


@pytest.fixture
async def http(live_server: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live_server, timeout=DEADLINE) as c:
        yield c


def claims(link: str) -> dict[str, object]:
    token = link.split("token=")[1]
    decoded: dict[str, object] = jwt.decode(token, options={"verify_signature": False})
    return decoded


async def past(exp: float) -> None:
    """Wait until the clock has passed ``exp`` (the event waited for is time itself)."""
    await asyncio.sleep(max(exp + 0.1 - time.time(), 0))


async def test_a_link_outlives_its_ttl_while_the_job_runs_and_sees_the_end(
    http: httpx.AsyncClient,
    live_server: str,
    auth: dict[str, str],
    run_worker: WorkerRun,
) -> None:
    job = (await http.post("/v1/exports", json=EXPORT, headers=auth)).json()
    link = live_server + job["links"]["events"]
    first = Sse()
    reader = asyncio.create_task(first.read(link))
    await asyncio.wait_for(first.received.wait(), DEADLINE)
    reader.cancel()  # the connection drops (a laptop lid, a proxy's idle timeout)
    assert first.types == ["status"]
    last_id = first.events[-1]["id"]

    await past(float(claims(link)["exp"]))  # type: ignore[arg-type]
    # The job still waits for a worker: EventSource reconnects with the same URL.
    again = Sse()
    reconnected = asyncio.create_task(again.read(link, {"Last-Event-ID": last_id}))
    await asyncio.wait_for(again.opened.wait(), DEADLINE)
    assert again.status == 200
    await run_worker()
    await asyncio.wait_for(reconnected, DEADLINE)
    assert again.types[-1] == "succeeded"
    assert "status" in again.types  # running, told after the id it resumed from

    # Once the job has ended, the link lasts the grace period, then no longer.
    finished = (await http.get(f"/v1/jobs/{job['id']}", headers=auth)).json()["finished_at"]
    assert finished is not None
    await past(time.time() + TTL)
    late = await http.get(link, headers={"Last-Event-ID": again.events[-1]["id"]})
    assert late.status_code == 401
    assert "fetch the job again" in late.json()["detail"]
    # A fresh link from the job opens it again (to replay the end, or 204 at the end).
    fresh = (
        live_server
        + (await http.get(f"/v1/jobs/{job['id']}", headers=auth)).json()["links"]["events"]
    )
    ended = await http.get(fresh, headers={"Last-Event-ID": again.events[-1]["id"]})
    assert ended.status_code == 204


async def test_a_link_opens_nothing_but_its_own_stream(
    http: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    one = (await http.post("/v1/exports", json=EXPORT, headers=auth)).json()
    other = (await http.post("/v1/exports", json={**EXPORT, "format": "json"}, headers=auth)).json()
    token = one["links"]["events"].split("token=")[1]
    assert (await http.get(f"/v1/jobs/{other['id']}/events?token={token}")).status_code == 401
    assert (await http.get(f"/v1/events?token={token}")).status_code == 401
    as_bearer = {"Authorization": f"Bearer {token}"}
    for path in (f"/v1/jobs/{one['id']}", "/v1/jobs", f"/v1/jobs/{one['id']}/events"):
        response = await http.get(path, headers=as_bearer)
        assert response.status_code == 401, path
    cancel = await http.post(f"/v1/jobs/{one['id']}/cancel", headers=as_bearer)
    assert cancel.status_code == 401


async def test_the_feed_link_lasts_a_session_and_no_longer(
    http: httpx.AsyncClient, live_server: str, auth: dict[str, str]
) -> None:
    page = (await http.get("/v1/jobs", headers=auth)).json()
    link = page["links"]["events"]
    made = claims(link)
    assert made["exp"] == made["iat"] + 3600  # type: ignore[operator]
    feed = Sse()
    reader = asyncio.create_task(feed.read(live_server + link))
    await asyncio.wait_for(feed.opened.wait(), DEADLINE)
    assert feed.status == 200
    reader.cancel()
    now = int(time.time())
    expired = jwt.encode({**made, "iat": now - 7200, "exp": now - 10}, SECRET, algorithm="HS256")
    response = await http.get(f"/v1/events?token={expired}")
    assert response.status_code == 401
    assert "expired" in response.json()["detail"]
