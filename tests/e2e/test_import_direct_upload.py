"""Direct-to-storage upload (issue 12.7), on S3 (moto) and the local folder: a URL to PUT
the file to, then an import from it; expired, foreign and unfinished uploads refused."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from services.core.auth import TokenVerifier
from services.core.deps import Deps
from services.core.settings import Settings
from services.core.storage import keys
from services.worker.jobs.imports import expire_uploads
from tests.conftest import TokenFactory, WorkerRun
from tests.e2e.imports_helpers import Client, orders_csv, records

# Every test runs on both backends but the one about the api's own upload URL (local only).
both_backends = pytest.mark.parametrize("storage_backend", ["local", "s3"], indirect=True)


async def ticket(
    client: Client, auth: dict[str, str], content: bytes, content_type: str = "text/csv"
) -> dict[str, Any]:
    answer = await client.post(
        "/v1/uploads",
        headers=auth,
        json={"filename": "orders.csv", "bytes": len(content), "content_type": content_type},
    )
    assert answer.status_code == 201, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def put(client: Client, url: str, content: bytes, headers: dict[str, str]) -> httpx.Response:
    """PUT to a presigned S3 URL (outside the api) or to the api's own upload URL."""
    if urlsplit(url).path.startswith("/v1/uploads/"):
        return await client.put(url, content=content, headers=headers)
    async with httpx.AsyncClient() as outside:
        return await outside.put(url, content=content, headers=headers)


async def start(client: Client, auth: dict[str, str], upload_id: str, **extra: str) -> Any:
    body = {"upload_id": upload_id, "dataset": "bookkeeping_records", "account_id": "main"}
    return await client.post("/v1/imports", headers=auth, json=body | extra)


@both_backends
async def test_a_file_put_straight_to_storage_is_imported(
    client: Client, auth: dict[str, str], run_worker: WorkerRun, deps: Deps, settings: Settings
) -> None:
    content = orders_csv(500)
    got = await ticket(client, auth, content)
    assert got["method"] == "PUT"
    assert got["storage"] == deps.storage.backend
    assert got["headers"] == {"Content-Type": "text/csv", "Content-Length": str(len(content))}
    expires = datetime.fromisoformat(got["expires_at"])
    assert timedelta(seconds=850) < expires - datetime.now(UTC) <= timedelta(seconds=900)
    if deps.storage.backend == "s3":
        # moto checks neither signatures nor expiry: the URL itself says what S3 would.
        query = parse_qs(urlsplit(got["url"]).query)
        assert query["X-Amz-Expires"] == [str(settings.upload_url_ttl)]
        signed = datetime.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        assert abs((signed + timedelta(seconds=900)) - expires) < timedelta(seconds=2)
        assert query["X-Amz-SignedHeaders"] == ["content-length;content-type;host"]
    unfinished = await start(client, auth, got["id"])
    assert unfinished.status_code == 409
    assert unfinished.json()["detail"].startswith("the upload is not finished: nothing stored")
    answer = await put(client, got["url"], content, got["headers"])
    assert answer.status_code in (200, 204), answer.text

    started = await start(client, auth, got["id"])
    assert started.status_code == 202, started.text
    doc = started.json()
    assert doc["source"]["filename"] == "orders.csv"
    assert await deps.storage.stat(keys.upload_file("acme", got["id"])) is None  # moved
    again = await start(client, auth, got["id"])  # the same request: the same import
    assert (again.status_code, again.json()["id"]) == (202, doc["id"])
    elsewhere = await start(client, auth, got["id"], account_id="second")
    assert elsewhere.status_code == 409
    assert doc["id"] in elsewhere.json()["detail"]

    await run_worker()
    done = (await client.get(f"/v1/imports/{doc['id']}", headers=auth)).json()
    assert done["status"] == "validated", done["error"]
    assert done["totals"]["valid"] == 500
    await client.post(f"/v1/imports/{doc['id']}/commit", headers=auth)
    await run_worker()
    assert len(await records(deps)) == 500


@both_backends
async def test_foreign_and_expired_uploads_are_refused(
    client: Client,
    auth: dict[str, str],
    deps: Deps,
    make_token: TokenFactory,
) -> None:
    content = orders_csv(3)
    got = await ticket(client, auth, content)
    assert (await put(client, got["url"], content, got["headers"])).status_code in (200, 204)
    other_org = {"Authorization": f"Bearer {make_token(org='globex')}"}
    other_user = {"Authorization": f"Bearer {make_token(sub='bob')}"}
    assert (await start(client, other_org, got["id"])).status_code == 404
    foreign = await start(client, other_user, got["id"])
    assert foreign.status_code == 403
    assert foreign.json()["detail"] == "this upload belongs to another user"
    await deps.db.execute(
        "UPDATE uploads SET expires_at = now() - interval '1 second' WHERE id = $1::uuid",
        got["id"],
    )
    expired = await start(client, auth, got["id"])
    assert expired.status_code == 410
    assert expired.json()["detail"].startswith("the upload expired at")
    assert (await start(client, auth, "not-an-id")).status_code == 404
    assert await deps.db.fetchval("SELECT count(*) FROM jobs") == 0
    # An hour after expiry the cron deletes what nobody imported.
    await deps.db.execute("UPDATE uploads SET expires_at = now() - interval '2 hours'")
    assert await expire_uploads({"deps": deps}) == 1
    assert await deps.storage.stat(keys.upload_file("acme", got["id"])) is None


@both_backends
async def test_an_upload_request_is_bounded_like_an_upload(
    client: Client, auth: dict[str, str], settings: Settings
) -> None:
    big = await client.post(
        "/v1/uploads",
        headers=auth,
        json={"filename": "x.csv", "bytes": settings.import_max_bytes + 1},
    )
    assert big.status_code == 413
    odd = await client.post(
        "/v1/uploads",
        headers=auth,
        json={"filename": "x.pdf", "bytes": 10, "content_type": "application/pdf"},
    )
    assert odd.status_code == 415
    empty = await client.post("/v1/uploads", headers=auth, json={"filename": "x", "bytes": 0})
    assert empty.status_code == 400


async def test_the_local_upload_url_holds_its_promises(
    client: Client, auth: dict[str, str], deps: Deps, settings: Settings
) -> None:
    assert deps.storage.backend == "local"  # the storage_backend fixture's default
    content = orders_csv(3)
    got = await ticket(client, auth, content)
    url, headers = got["url"], got["headers"]
    wrong_type = await client.put(url, content=content, headers={"Content-Type": "text/plain"})
    assert wrong_type.status_code == 415
    longer = await client.put(url, content=content + b"x", headers={"Content-Type": "text/csv"})
    assert longer.status_code == 413
    shorter = await client.put(url, content=content[:-1], headers={"Content-Type": "text/csv"})
    assert shorter.status_code == 422
    assert await deps.storage.stat(keys.upload_file("acme", got["id"])) is None
    # The token is the credential: an expired one (really past) or another upload's fails.
    tokens = TokenVerifier(settings)
    past = tokens.mint_upload_token(got["id"], "acme", int(time.time()) - 1)
    base = url.split("?")[0]
    expired = await client.put(f"{base}?token={past}", content=content, headers=headers)
    assert expired.status_code == 403
    assert expired.json()["detail"] == "the upload URL has expired; ask for a new one"
    other = await ticket(client, auth, content)
    stolen = other["url"].split("?")[1]
    assert (
        await client.put(f"{base}?{stolen}", content=content, headers=headers)
    ).status_code == 403
    assert (await client.put(url, content=content, headers=headers)).status_code == 204
