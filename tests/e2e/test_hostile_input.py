"""Input a fuzzer or an attacker sends gets a 4xx problem, never a 500 (issue 8.5):
claims of the wrong type in a validly signed token, NUL characters where PostgreSQL
cannot store them, an event id from the far future."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import jwt
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from services.core.deps import Deps
from tests.conftest import SECRET, JobFactory
from tests.e2e.imports_helpers import DATASET, upload
from tests.e2e.sse import DEADLINE, Sse

PROBLEM = "application/problem+json"
CSV = b"ebay_order_id,sale_date,item_name,qty,sale_price,status\n12-1-1,2026-01-01,A,1,1.00,paid\n"


def signed(**claims: Any) -> dict[str, str]:
    """A validly signed bearer token with these claims over alice's."""
    base = {"sub": "alice", "org": "acme", "aud": "ferry", "iss": "ferry"}
    token = jwt.encode({**base, "exp": int(time.time()) + 600, **claims}, SECRET, "HS256")
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize(
    ("claims", "named"),
    [
        ({"perms": 5}, "perms"),
        ({"perms": {"bookkeeping_records.read": True}}, "perms"),
        ({"perms": ["bookkeeping_records.read", 7]}, "perms"),
        ({"sub": "ali\x00ce"}, "sub"),
        ({"org": "ac\x00me"}, "org"),
        ({"org": ""}, "org"),
    ],
)
async def test_a_signed_token_with_malformed_claims_is_401(
    client: AsyncTestClient[Litestar], claims: dict[str, Any], named: str
) -> None:
    for path in ("/v1/datasets", "/v1/jobs"):
        response = await client.get(path, headers=signed(**claims))
        assert response.status_code == 401, response.text
        assert response.headers["content-type"].startswith(PROBLEM)
        assert named in response.json()["detail"]


async def test_perms_as_a_space_separated_string_still_work(
    client: AsyncTestClient[Litestar],
) -> None:
    headers = signed(perms="bookkeeping_records.read bookkeeping_records.write")
    [ds] = (await client.get("/v1/datasets", headers=headers)).json()["items"]
    assert ds["permissions"] == {"read": True, "write": True}


@pytest.mark.parametrize(
    "where", ["multipart filename", "filename query", "filename field", "account_id"]
)
async def test_a_nul_in_an_upload_is_refused_or_dropped_never_a_500(
    client: AsyncTestClient[Litestar], auth: dict[str, str], deps: Deps, where: str
) -> None:
    if where == "multipart filename":
        response = await upload(client, auth, CSV, filename="orders\x00.csv")
    elif where == "filename field":
        response = await client.post(
            "/v1/imports",
            headers=auth,
            data={"dataset": DATASET, "account_id": "main", "filename": "a\x00b.csv"},
            files={"file": ("x.csv", CSV, "text/csv")},
        )
    elif where == "account_id":
        response = await upload(client, auth, CSV, account_id="ma\x00in")
    else:
        response = await client.post(
            "/v1/imports",
            params={"dataset": DATASET, "account_id": "main", "filename": "a\x00b.csv"},
            headers={**auth, "Content-Type": "text/csv"},
            content=CSV,
        )
    if where in ("account_id", "filename query"):
        assert response.status_code == 422, response.text
        field = where.split()[0]
        assert response.json()["errors"] == [{"field": field, "message": "holds a NUL character"}]
        assert await deps.db.fetchval("SELECT count(*) FROM jobs") == 0
        return
    # A file's name as the form gives it is only shown: the NUL is dropped.
    assert response.status_code == 202, response.text
    assert "\x00" not in response.json()["source"]["filename"]


@pytest.mark.parametrize(
    "url",
    [
        "/v1/datasets/bookkeeping_records/export.csv?account_id=%00",
        "/v1/datasets/bookkeeping_records/export.csv?account_id=main&item_name=a%00b",
        "/v1/jobs?cursor=%00",
        "/v1/datasets/book%00keeping/export.csv",
    ],
)
async def test_a_nul_in_a_query_or_path_is_a_422_naming_it(
    client: AsyncTestClient[Litestar], auth: dict[str, str], url: str
) -> None:
    response = await client.get(url, headers=auth)
    assert response.status_code in (404, 422), response.text
    assert response.headers["content-type"].startswith(PROBLEM)


async def test_a_nul_in_an_export_request_is_a_422(
    client: AsyncTestClient[Litestar], auth: dict[str, str]
) -> None:
    for body in (
        {"dataset": DATASET, "format": "csv", "account_id": "m\x00"},
        {"dataset": DATASET, "format": "csv", "filters": {"item_name": "\x00"}},
    ):
        response = await client.post("/v1/exports", headers=auth, json=body)
        assert response.status_code == 422, response.text


async def test_an_event_id_from_the_far_future_resumes_from_the_last(
    live_server: str, auth: dict[str, str], deps: Deps, make_job: JobFactory
) -> None:
    """A browser that reconnects with an id after the stream's last is not told to go
    away (which would make it reconnect every 2 s for ever): it gets what comes next."""
    job = await make_job(status="running")
    await deps.events.announce(job, "status")
    url = f"{live_server}/v1/jobs/{job.id}/events"
    sse = Sse()
    task = asyncio.create_task(sse.read(url, {**auth, "Last-Event-ID": "99999999999999-0"}))
    await asyncio.wait_for(sse.opened.wait(), DEADLINE)
    assert sse.status == 200
    await deps.events.announce(job, "progress", {"done": 1, "total": 2})
    finished = await deps.db.fetchrow(
        "UPDATE jobs SET status = 'succeeded', finished_at = now() WHERE id = $1 RETURNING *",
        job.id,
    )
    assert finished is not None
    await deps.events.announce(job, "succeeded")
    await asyncio.wait_for(task, DEADLINE)
    assert sse.types == ["progress", "succeeded"]
    # Once the job ended, the same far-future id is told the stream is over.
    async with httpx.AsyncClient(timeout=DEADLINE) as http:
        again = await http.get(url, headers={**auth, "Last-Event-ID": "99999999999999-0"})
    assert again.status_code == 204


async def test_an_event_id_beyond_any_stream_is_a_422(
    client: AsyncTestClient[Litestar], auth: dict[str, str], make_job: JobFactory
) -> None:
    job = await make_job(status="succeeded")
    response = await client.get(
        f"/v1/jobs/{job.id}/events",
        headers={**auth, "Last-Event-ID": "99999999999999999999-0"},
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "Last-Event-ID"
