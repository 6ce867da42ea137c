"""An import asked to do what its status does not allow: 409 naming the status, no change.

Each of these answered 500 once, because the conflict's status clashed with the
problem's own ``status`` member.
"""

from __future__ import annotations

import csv
import io
from typing import Any

import httpx
import pytest

from services.core.deps import Deps
from tests.conftest import WorkerRun
from tests.e2e.imports_helpers import HEADER, Client, download, imported, orders_csv, upload

ORDER = "10-00001-00007"  # the second order of orders_csv, on line 3


def assert_conflict(response: httpx.Response, status: str) -> None:
    assert response.status_code == 409, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == 409
    assert body["type"] == "urn:ferry:problem:conflict"
    assert body["job_status"] == status
    assert status in body["detail"]


async def status_of(client: Client, auth: dict[str, str], job_id: str) -> Any:
    return (await client.get(f"/v1/imports/{job_id}", headers=auth)).json()["status"]


async def test_commit_while_uploaded_or_validating_is_a_conflict(
    client: Client, auth: dict[str, str], run_worker: WorkerRun
) -> None:
    uploaded = (await upload(client, auth, orders_csv(3))).json()
    commit = await client.post(f"/v1/imports/{uploaded['id']}/commit", headers=auth)
    assert_conflict(commit, "uploaded")
    assert await status_of(client, auth, uploaded["id"]) == "uploaded"

    await run_worker()
    remapped = await client.put(
        f"/v1/imports/{uploaded['id']}/mapping", headers=auth, json={"qty": None}
    )
    assert remapped.json()["status"] == "validating"
    commit = await client.post(f"/v1/imports/{uploaded['id']}/commit", headers=auth)
    assert_conflict(commit, "validating")
    again = await client.put(
        f"/v1/imports/{uploaded['id']}/mapping", headers=auth, json={"qty": "qty"}
    )
    assert_conflict(again, "validating")


async def test_commit_of_a_failed_or_cancelled_import_is_a_conflict(
    client: Client, auth: dict[str, str], run_worker: WorkerRun
) -> None:
    failed = await imported(client, auth, run_worker, (HEADER + "\n").encode())
    assert failed["status"] == "failed"
    commit = await client.post(f"/v1/imports/{failed['id']}/commit", headers=auth)
    assert_conflict(commit, "failed")

    waiting = (await upload(client, auth, orders_csv(2))).json()
    cancel = await client.post(f"/v1/jobs/{waiting['id']}/cancel", headers=auth)
    assert cancel.json()["status"] == "cancelled"
    commit = await client.post(
        f"/v1/imports/{waiting['id']}/commit", headers=auth, json={"on_error": "skip"}
    )
    assert_conflict(commit, "cancelled")
    assert await status_of(client, auth, waiting["id"]) == "cancelled"


async def test_rollback_of_an_import_not_committed_is_a_conflict(
    client: Client, auth: dict[str, str], run_worker: WorkerRun
) -> None:
    doc = await imported(client, auth, run_worker, orders_csv(2))
    rollback = await client.post(f"/v1/imports/{doc['id']}/rollback", headers=auth)
    assert_conflict(rollback, "validated")
    assert await status_of(client, auth, doc["id"]) == "validated"


async def test_a_mapping_change_after_the_commit_is_a_conflict(
    client: Client, auth: dict[str, str], run_worker: WorkerRun
) -> None:
    doc = await imported(client, auth, run_worker, orders_csv(2))
    assert (await client.post(f"/v1/imports/{doc['id']}/commit", headers=auth)).status_code == 202
    await run_worker()
    assert await status_of(client, auth, doc["id"]) == "committed"
    mapping = await client.put(f"/v1/imports/{doc['id']}/mapping", headers=auth, json={"qty": None})
    assert_conflict(mapping, "committed")
    assert await status_of(client, auth, doc["id"]) == "committed"


async def test_a_record_committed_meanwhile_still_shows_its_row_in_the_error_report(
    client: Client,
    auth: dict[str, str],
    run_worker: WorkerRun,
    deps: Deps,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The account was empty when validation began, so rows kept no text; a record that
    another import commits before the keys are checked makes one row fail, and its
    original values are in the error report all the same (the file is read again)."""
    from services.core.imports import staging

    check_keys = staging.check_keys
    calls = 0

    async def committed_meanwhile(conn: Any, *args: Any, **kwargs: Any) -> int:
        nonlocal calls
        calls += 1
        if calls == 1:  # what the other import's commit leaves behind, for real
            await deps.db.execute(
                "INSERT INTO bookkeeping_records (org_id, account_id, ebay_order_id, "
                "sale_date, item_name, sale_price_cents) "
                "VALUES ('acme', 'main', $1, '2026-03-02', 'Other', 100)",
                ORDER,
            )
        return await check_keys(conn, *args, **kwargs)

    monkeypatch.setattr(staging, "check_keys", committed_meanwhile)
    doc = await imported(client, auth, run_worker, orders_csv(3))
    assert doc["status"] == "validated", doc["error"]
    assert doc["totals"]["invalid"] == 1
    assert doc["existing"] == 1
    text = (await download(client, auth, doc["links"]["error_report"])).decode("utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [(r["_row"], r["ebay_order_id"], r["item_name"]) for r in rows] == [
        ("3", ORDER, "Item 1")
    ]
    assert rows[0]["_errors"] == "ebay_order_id: already exists for this account"
