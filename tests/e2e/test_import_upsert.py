"""Commit modes (issue 12.6) and the rollback job (12.8): upsert on the natural key,
skip_existing, and an undo that restores every updated record exactly."""

from __future__ import annotations

from typing import Any

from services.core.deps import Deps
from services.core.events import job_stream
from tests.conftest import WorkerRun
from tests.e2e.imports_helpers import Client, imported, orders_csv, records

HEADER = "Order Number,Sale Date,Item Title,Quantity,Sold For,Status"


def corrected() -> bytes:
    """The first three orders of ``orders_csv(5)`` corrected, and two new ones."""
    return (
        f"{HEADER}\n"
        "10-00000-00000,2026-03-01,Item 0 (boxed),2,19.99,shipped\n"
        "10-00001-00007,2026-03-02,Item 1,1,11.11,refunded\n"
        "10-00002-00014,2026-03-03,Item 2 corrected,3,12.50,delivered\n"
        "10-00100-00700,2026-03-04,New one,1,5.00,paid\n"
        "10-00101-00707,2026-03-05,New two,1,6.00,paid\n"
    ).encode()


async def commit(
    client: Client, auth: dict[str, str], run_worker: WorkerRun, doc_id: str, **body: Any
) -> dict[str, Any]:
    answer = await client.post(f"/v1/imports/{doc_id}/commit", headers=auth, json=body or None)
    assert answer.status_code == 202, answer.text
    await run_worker()
    done = (await client.get(f"/v1/imports/{doc_id}", headers=auth)).json()
    assert done["status"] == "committed", done["error"]
    assert isinstance(done, dict)
    return done


async def table(deps: Deps) -> dict[str, dict[str, Any]]:
    """Every record (live or not), every column, by order id."""
    rows = await deps.db.fetch("SELECT * FROM bookkeeping_records ORDER BY id")
    return {r["ebay_order_id"]: dict(r.items()) for r in rows}


async def test_upsert_updates_by_key_and_its_rollback_restores_every_column(
    client: Client, auth: dict[str, str], run_worker: WorkerRun, deps: Deps
) -> None:
    first = await imported(client, auth, run_worker, orders_csv(5))
    await commit(client, auth, run_worker, first["id"])
    await deps.db.execute(  # a value the corrected file has no column for
        "UPDATE bookkeeping_records SET fees_cents = 321 WHERE ebay_order_id = '10-00002-00014'"
    )
    before = await table(deps)

    doc = await imported(client, auth, run_worker, corrected())
    assert doc["existing"] == 3
    assert doc["modes"] == {
        "insert": {"valid": 2, "invalid": 3},
        "upsert": {"valid": 5, "invalid": 0},
        "skip_existing": {"valid": 5, "invalid": 0},
    }
    refused = await client.post(f"/v1/imports/{doc['id']}/commit", headers=auth)
    assert refused.status_code == 409  # an insert would add the same orders twice
    done = await commit(client, auth, run_worker, doc["id"], mode="upsert")
    batch = done["batch"]
    assert (batch["mode"], batch["inserted"], batch["updated"], batch["rows"]) == (
        "upsert",
        2,
        3,
        5,
    )
    after = await table(deps)
    assert len([r for r in after.values() if r["deleted_at"] is None]) == 7
    boxed = after["10-00000-00000"]
    assert (boxed["item_name"], boxed["qty"], boxed["sale_price_cents"], boxed["status"]) == (
        "Item 0 (boxed)",
        2,
        1999,
        "shipped",
    )
    assert after["10-00002-00014"]["fees_cents"] == 321  # not in the file: kept
    assert after["10-00002-00014"]["import_batch_id"] == before["10-00002-00014"]["import_batch_id"]

    # One updated record is edited after the import; the rollback warns about it.
    await deps.db.execute(
        "UPDATE bookkeeping_records SET item_name = 'Edited later' "
        "WHERE ebay_order_id = '10-00001-00007'"
    )
    edited_id = after["10-00001-00007"]["id"]
    url = f"/v1/imports/{doc['id']}/rollback"
    warned = await client.post(url, headers=auth)
    assert warned.status_code == 409
    assert warned.json()["requires_confirmation"] is True
    assert warned.json()["records"] == [edited_id]
    assert (await client.get(f"/v1/imports/{doc['id']}", headers=auth)).json()[
        "status"
    ] == "committed"

    answer = await client.post(url, headers=auth, json={"confirm": True})
    assert answer.status_code == 202
    await run_worker()
    rolled = (await client.get(f"/v1/imports/{doc['id']}", headers=auth)).json()
    assert rolled["status"] == "rolled_back"
    assert rolled["result"]["batch"]["rolled_back_at"] is not None
    restored = await table(deps)
    for order in ("10-00000-00000", "10-00001-00007", "10-00002-00014"):
        assert restored[order] == before[order], order  # every column, updated_at included
    for order in ("10-00100-00700", "10-00101-00707"):
        assert restored[order]["deleted_at"] is not None
    assert len(await records(deps)) == 5


async def test_skip_existing_leaves_the_existing_records_alone(
    client: Client, auth: dict[str, str], run_worker: WorkerRun, deps: Deps
) -> None:
    first = await imported(client, auth, run_worker, orders_csv(5))
    await commit(client, auth, run_worker, first["id"])
    before = await table(deps)
    doc = await imported(client, auth, run_worker, corrected())
    done = await commit(client, auth, run_worker, doc["id"], mode="skip_existing")
    batch = done["batch"]
    assert (batch["inserted"], batch["updated"], batch["skipped_existing"]) == (2, 0, 3)
    after = await table(deps)
    for order in ("10-00000-00000", "10-00001-00007", "10-00002-00014"):
        assert after[order] == before[order]
    assert len(await records(deps)) == 7
    # Its rollback removes only what it inserted.
    answer = await client.post(f"/v1/imports/{doc['id']}/rollback", headers=auth)
    assert answer.status_code == 202
    await run_worker()
    assert len(await records(deps)) == 5


async def test_an_upsert_of_a_key_deleted_since_validation_inserts_it(
    client: Client, auth: dict[str, str], run_worker: WorkerRun, deps: Deps
) -> None:
    first = await imported(client, auth, run_worker, orders_csv(5))
    await commit(client, auth, run_worker, first["id"])
    doc = await imported(client, auth, run_worker, corrected())
    await deps.db.execute(
        "UPDATE bookkeeping_records SET deleted_at = now() WHERE ebay_order_id = '10-00000-00000'"
    )
    done = await commit(client, auth, run_worker, doc["id"], mode="upsert")
    assert (done["batch"]["inserted"], done["batch"]["updated"]) == (3, 2)
    live = {r["ebay_order_id"]: r for r in await records(deps)}
    assert live["10-00000-00000"]["item_name"] == "Item 0 (boxed)"


async def test_a_rollback_of_100k_rows_runs_as_a_job_with_progress(
    client: Client, auth: dict[str, str], run_worker: WorkerRun, deps: Deps
) -> None:
    doc = await imported(client, auth, run_worker, orders_csv(100_000))
    await commit(client, auth, run_worker, doc["id"])
    answer = await client.post(f"/v1/imports/{doc['id']}/rollback", headers=auth)
    assert answer.status_code == 202
    body = answer.json()
    assert body["status"] == "rolling_back"
    assert body["links"]["events"].startswith(f"/v1/jobs/{doc['id']}/events?token=")
    # Asked again while it waits: the same job, nothing new.
    again = await client.post(f"/v1/imports/{doc['id']}/rollback", headers=auth)
    assert again.status_code == 202
    assert again.json()["status"] == "rolling_back"
    cancel = await client.post(f"/v1/jobs/{doc['id']}/cancel", headers=auth)
    assert cancel.status_code == 409
    await run_worker()
    events = await deps.events.read(job_stream(doc["id"]))
    since = max(i for i, e in enumerate(events) if e.type == "committed")
    progress = [e.data for e in events[since:] if e.type == "progress"]
    assert progress
    assert {p["total"] for p in progress} == {100_000}
    assert all(p["unit"] == "rows" and 0 < p["done"] <= 100_000 for p in progress)
    assert events[-1].type == "rolled_back"
    done = (await client.get(f"/v1/imports/{doc['id']}", headers=auth)).json()
    assert done["status"] == "rolled_back"
    assert done["progress"]["done"] == 100_000
    assert (
        await deps.db.fetchval("SELECT count(*) FROM bookkeeping_records WHERE deleted_at IS NULL")
        == 0
    )


async def test_an_edit_between_the_request_and_the_job_keeps_the_import_committed(
    client: Client, auth: dict[str, str], run_worker: WorkerRun, deps: Deps
) -> None:
    doc = await imported(client, auth, run_worker, orders_csv(3))
    await commit(client, auth, run_worker, doc["id"])
    answer = await client.post(f"/v1/imports/{doc['id']}/rollback", headers=auth)
    assert answer.status_code == 202
    await deps.db.execute("UPDATE bookkeeping_records SET qty = 9 WHERE ebay_order_id LIKE '10-%'")
    await run_worker()
    after = (await client.get(f"/v1/imports/{doc['id']}", headers=auth)).json()
    assert after["status"] == "committed"
    assert after["error"]["type"] == "conflict"
    assert after["error"]["requires_confirmation"] is True
    assert after["error"]["edited_count"] == 3
    assert len(await records(deps)) == 3
    # Confirmed, it goes through.
    confirmed = await client.post(
        f"/v1/imports/{doc['id']}/rollback", headers=auth, json={"confirm": True}
    )
    assert confirmed.status_code == 202
    await run_worker()
    assert (await client.get(f"/v1/imports/{doc['id']}", headers=auth)).json()[
        "status"
    ] == "rolled_back"
    assert await records(deps) == []
