"""Helpers of the import tests: upload a file, run the worker, read the import."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from litestar import Litestar
from litestar.testing import AsyncTestClient

from services.core.deps import Deps
from services.core.events import job_stream
from tests.conftest import WorkerRun

DATA = Path(__file__).resolve().parents[1] / "data"
DATASET = "bookkeeping_records"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"

Client = AsyncTestClient[Litestar]


async def upload(
    client: Client,
    headers: dict[str, str],
    content: bytes,
    *,
    filename: str = "orders.csv",
    content_type: str = "text/csv",
    account_id: str = "main",
    dataset: str = DATASET,
    **fields: str,
) -> Any:
    """A multipart upload as a browser form sends it."""
    return await client.post(
        "/v1/imports",
        headers=headers,
        data={"dataset": dataset, "account_id": account_id, **fields},
        files={"file": (filename, content, content_type)},
    )


async def imported(
    client: Client,
    headers: dict[str, str],
    run_worker: WorkerRun,
    content: bytes,
    **kwargs: Any,
) -> dict[str, Any]:
    """Upload, let a real worker validate, and return the import document."""
    response = await upload(client, headers, content, **kwargs)
    assert response.status_code == 202, response.text
    await run_worker()
    doc = (await client.get(f"/v1/imports/{response.json()['id']}", headers=headers)).json()
    assert isinstance(doc, dict)
    return doc


async def download(client: Client, headers: dict[str, str], url: str) -> bytes:
    """A file the api serves itself (local storage) or redirects to (S3, presigned)."""
    response = await client.get(url, headers=headers, follow_redirects=False)
    if response.status_code == 307:
        async with httpx.AsyncClient() as outside:
            response = await outside.get(response.headers["location"])
    assert response.status_code == 200, response.text
    return response.content


async def event_types(deps: Deps, job_id: str) -> list[str]:
    return [e.type for e in await deps.events.read(job_stream(job_id))]


async def records(deps: Deps, account_id: str = "main") -> list[dict[str, Any]]:
    rows = await deps.db.fetch(
        "SELECT * FROM bookkeeping_records WHERE org_id = 'acme' AND account_id = $1 "
        "AND deleted_at IS NULL ORDER BY id",
        account_id,
    )
    return [dict(r.items()) for r in rows]


HEADER = "ebay_order_id,sale_date,item_name,qty,sale_price,status"


def orders_csv(rows: int, *, start: int = 0, header: str = HEADER, sep: str = ",") -> bytes:
    """A clean CSV of ``rows`` orders with unique ids."""
    lines = [header]
    for i in range(start, start + rows):
        day = 1 + i % 28
        order, price = f"10-{i:05d}-{i * 7 % 100000:05d}", f"{10 + i % 90}.{i % 100:02d}"
        lines.append(sep.join([order, f"2026-03-{day:02d}", f"Item {i}", "1", price, "paid"]))
    return ("\n".join(lines) + "\n").encode()


async def job_row(deps: Deps, job_id: str) -> dict[str, Any]:
    row = await deps.db.fetchrow("SELECT * FROM jobs WHERE id = $1::uuid", job_id)
    assert row is not None
    return dict(row.items())
