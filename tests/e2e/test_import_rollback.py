"""Undo: rollback within the window, edited records, the window closing, crons."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from services.core import jobs
from services.core.deps import Deps
from services.core.errors import Conflict
from services.core.imports import commit as commits
from services.core.storage import keys
from services.worker.jobs.imports import clean_imports, close_rollback_windows, purge_import_batches
from tests.conftest import JobFactory, WorkerRun
from tests.e2e.imports_helpers import Client, event_types, imported, orders_csv, records


async def committed(
    client: Client, auth: dict[str, str], run_worker: WorkerRun, rows: int = 5
) -> dict[str, Any]:
    doc = await imported(client, auth, run_worker, orders_csv(rows))
    assert (await client.post(f"/v1/imports/{doc['id']}/commit", headers=auth)).status_code == 202
    await run_worker()
    done = (await client.get(f"/v1/imports/{doc['id']}", headers=auth)).json()
    assert done["status"] == "committed"
    return done


async def rolled_back(
    client: Client, auth: dict[str, str], run_worker: WorkerRun, doc_id: str, **body: Any
) -> dict[str, Any]:
    """Ask for the rollback (202, a job), let a worker run it, read the import."""
    response = await client.post(f"/v1/imports/{doc_id}/rollback", headers=auth, json=body or None)
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "rolling_back"
    await run_worker()
    done = (await client.get(f"/v1/imports/{doc_id}", headers=auth)).json()
    assert isinstance(done, dict)
    return done


async def test_a_rollback_soft_deletes_the_batch_and_twice_is_harmless(
    client: Client, auth: dict[str, str], run_worker: WorkerRun, deps: Deps
) -> None:
    doc = await committed(client, auth, run_worker)
    assert len(await records(deps)) == 5
    url = f"/v1/imports/{doc['id']}/rollback"
    body = await rolled_back(client, auth, run_worker, doc["id"])
    assert body["status"] == "rolled_back"
    assert body["batch"]["rolled_back_at"] is not None
    assert body["result"]["batch"]["rolled_back_at"] is not None
    assert await records(deps) == []
    deleted = await deps.db.fetchval(
        "SELECT count(*) FROM bookkeeping_records WHERE deleted_at IS NOT NULL"
    )
    assert deleted == 5
    again = await client.post(url, headers=auth)
    assert again.status_code == 200
    assert again.json()["status"] == "rolled_back"
    assert (await event_types(deps, doc["id"]))[-1] == "rolled_back"
    # The same orders can be imported again once rolled back.
    doc2 = await imported(client, auth, run_worker, orders_csv(5))
    assert doc2["totals"]["invalid"] == 0


async def test_edited_records_need_confirmation(
    client: Client, auth: dict[str, str], run_worker: WorkerRun, deps: Deps
) -> None:
    doc = await committed(client, auth, run_worker)
    first = (await records(deps))[0]
    await deps.db.execute(
        "UPDATE bookkeeping_records SET item_name = 'Edited by hand' WHERE id = $1", first["id"]
    )
    url = f"/v1/imports/{doc['id']}/rollback"
    refused = await client.post(url, headers=auth)
    assert refused.status_code == 409
    problem = refused.json()
    assert problem["requires_confirmation"] is True
    assert problem["records"] == [first["id"]]
    assert problem["edited_count"] == 1
    assert "edited" in problem["detail"]
    assert len(await records(deps)) == 5  # nothing happened
    confirmed = await rolled_back(client, auth, run_worker, doc["id"], confirm=True)
    assert confirmed["status"] == "rolled_back"
    assert await records(deps) == []


async def test_after_the_window_the_rollback_is_refused(
    client: Client, auth: dict[str, str], run_worker: WorkerRun, deps: Deps
) -> None:
    doc = await committed(client, auth, run_worker)
    until = doc["batch"]["rollback_until"]
    assert until > doc["batch"]["created_at"]
    await deps.db.execute(
        "UPDATE import_batches SET rollback_until = now() - interval '1 minute' "
        "WHERE job_id = $1::uuid",
        doc["id"],
    )
    refused = await client.post(f"/v1/imports/{doc['id']}/rollback", headers=auth)
    assert refused.status_code == 409
    assert "rollback window of this import closed" in refused.json()["detail"]
    assert len(await records(deps)) == 5


async def test_a_rollback_racing_an_edit_leaves_no_live_record(
    client: Client, auth: dict[str, str], run_worker: WorkerRun, deps: Deps
) -> None:
    doc = await committed(client, auth, run_worker)
    job = await jobs.get_job(deps.db, doc["id"], "acme")
    ds = deps.registry.get("bookkeeping_records")
    target = (await records(deps))[2]["id"]
    async with deps.db.acquire() as rolling, rolling.transaction():
        await commits.rollback(rolling, ds, job, confirm=False)
        # An edit arriving now waits for the rollback's row locks…
        edit = asyncio.create_task(
            deps.db.execute(
                "UPDATE bookkeeping_records SET qty = 9 WHERE id = $1 AND deleted_at IS NULL",
                target,
            )
        )
        await asyncio.sleep(0.3)
        assert not edit.done()
    # …and then finds the record deleted: it changes nothing.
    assert await asyncio.wait_for(edit, 5) == "UPDATE 0"
    assert await records(deps) == []

    # The other way round: an edit that holds its lock first is seen as an edit.
    doc2 = await committed(client, auth, run_worker, rows=3)
    job2 = await jobs.get_job(deps.db, doc2["id"], "acme")
    target2 = (await records(deps))[0]["id"]
    async with deps.db.acquire() as editing:
        tx = editing.transaction()
        await tx.start()
        await editing.execute("UPDATE bookkeeping_records SET qty = 7 WHERE id = $1", target2)

        async def roll() -> Any:
            async with deps.db.acquire() as conn, conn.transaction():
                return await commits.rollback(conn, ds, job2, confirm=False)

        rolling_back = asyncio.create_task(roll())
        await asyncio.sleep(0.3)
        assert not rolling_back.done()
        await tx.commit()
    with pytest.raises(Conflict) as refused:
        await asyncio.wait_for(rolling_back, 5)
    assert refused.value.extra["records"] == [target2]
    assert len(await records(deps)) == 3


async def test_crons_close_windows_purge_batches_and_tidy_abandoned_imports(
    client: Client, auth: dict[str, str], run_worker: WorkerRun, deps: Deps
) -> None:
    ctx = {"deps": deps}
    doc = await committed(client, auth, run_worker)
    job = await jobs.get_job(deps.db, doc["id"], "acme")
    assert await deps.storage.stat(keys.import_source(job.org_id, job.id)) is not None
    assert await close_rollback_windows(ctx) == 0
    await deps.db.execute("UPDATE import_batches SET rollback_until = now() - interval '1 second'")
    assert await close_rollback_windows(ctx) == 1
    assert await deps.storage.stat(keys.import_source(job.org_id, job.id)) is None
    closed = await deps.db.fetchval("SELECT closed_at IS NOT NULL FROM import_batches")
    assert closed
    after = (await client.get(f"/v1/imports/{doc['id']}", headers=auth)).json()
    assert after["links"]["error_report"] is None

    assert await purge_import_batches(ctx) == 0
    await deps.db.execute("UPDATE import_batches SET created_at = now() - interval '91 days'")
    assert await purge_import_batches(ctx) == 1
    rows = await records(deps)
    assert len(rows) == 5  # the records stay; only the batch bookkeeping goes
    assert {r["import_batch_id"] for r in rows} == {None}

    # An import validated and never committed: cancelled after import_keep_days.
    waiting = await imported(client, auth, run_worker, orders_csv(2, start=100))
    waiting_job = await jobs.get_job(deps.db, waiting["id"], "acme")
    assert await deps.db.fetchval(
        "SELECT to_regclass($1) IS NOT NULL", f'import_staging."{waiting["id"]}"'
    )
    await deps.db.execute(
        "UPDATE jobs SET updated_at = now() - interval '8 days' WHERE id = $1", waiting_job.id
    )
    tidied = await clean_imports(ctx)
    assert tidied["expired"] == 1
    assert tidied["tables"] == 1
    after = (await client.get(f"/v1/imports/{waiting['id']}", headers=auth)).json()
    assert after["status"] == "cancelled"
    assert "not committed within 7 days" in after["error"]["message"]
    assert await deps.storage.stat(keys.import_source(waiting_job.org_id, waiting_job.id)) is None
    assert not await deps.db.fetchval(
        "SELECT to_regclass($1) IS NOT NULL", f'import_staging."{waiting["id"]}"'
    )
    assert await clean_imports(ctx) == {"expired": 0, "files": 0, "tables": 0}


async def test_the_batch_guard_is_a_unique_constraint(deps: Deps, make_job: JobFactory) -> None:
    job = await make_job(kind="import", status="committing", params={"account_id": "main"})
    insert = (
        "INSERT INTO import_batches (id, job_id, org_id, account_id, user_id, dataset, "
        "rollback_until) VALUES (gen_random_uuid(), $1, 'acme', 'main', 'alice', 'b', now())"
    )
    await deps.db.execute(insert, job.id)
    with pytest.raises(asyncpg.UniqueViolationError) as refused:
        await deps.db.execute(insert, job.id)
    assert refused.value.constraint_name == "import_batches_job_id_key"
