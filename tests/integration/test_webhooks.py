"""The webhook outbox in PostgreSQL: which job changes become deliveries, and claims."""

from __future__ import annotations

import msgspec
import pytest

from services.core import jobs
from services.core.deps import Deps
from services.core.settings import Settings
from services.core.webhooks import deliveries, endpoints
from services.core.webhooks.deliveries import Result
from services.core.webhooks.endpoints import EVENTS, Endpoint
from tests.conftest import JobFactory

PUBLIC_URL = "https://93.184.215.14/hooks"  # an address literal: no DNS in these tests


async def endpoint(
    deps: Deps, events: list[str], *, org: str = "acme", on: bool = True
) -> Endpoint:
    made, _ = await endpoints.create_endpoint(
        deps.db,
        deps.settings,
        org_id=org,
        user_id="alice",
        url=PUBLIC_URL,
        events=events,
        enabled=on,
    )
    return made


async def deliveries_of(deps: Deps, made: Endpoint) -> list[str]:
    rows = await deps.db.fetch(
        "SELECT v.type FROM webhook_deliveries d JOIN webhook_events v ON v.id = d.event_id "
        "WHERE d.endpoint_id = $1 ORDER BY d.created_at",
        made.id,
    )
    return [r["type"] for r in rows]


async def test_the_event_types_are_the_ones_the_trigger_knows(deps: Deps) -> None:
    rows = await deps.db.fetch("SELECT kind, status, type FROM webhook_event_types")
    assert {(r["kind"], r["status"]): r["type"] for r in rows} == EVENTS


async def test_a_job_change_becomes_a_delivery_for_each_subscribed_enabled_endpoint_of_its_org(
    deps: Deps, make_job: JobFactory
) -> None:
    everything = await endpoint(deps, list(dict.fromkeys(EVENTS.values())))
    imports_only = await endpoint(deps, ["import.validated"])
    disabled = await endpoint(deps, ["job.succeeded"], on=False)
    neighbour = await endpoint(deps, ["job.succeeded"], org="globex")
    job = await make_job()
    claimed = await jobs.claim_job(deps.db, job.id, run=0, stage=jobs.RUN_EXPORT, lease_seconds=60)
    assert claimed is not None  # queued → running: no event
    assert await deliveries_of(deps, everything) == []
    done = await jobs.finish_job(deps.db, claimed, jobs.JobStatus.SUCCEEDED, result={"rows": 0})
    assert done is not None
    assert await deliveries_of(deps, everything) == ["job.succeeded"]
    assert await deliveries_of(deps, imports_only) == []
    assert await deliveries_of(deps, disabled) == []
    assert await deliveries_of(deps, neighbour) == []
    # The event keeps the job as the change left it.
    snapshot = await deps.db.fetchval("SELECT job FROM webhook_events")
    assert deliveries.snapshot(snapshot) == done


async def test_a_change_that_is_rolled_back_leaves_no_event(
    deps: Deps, make_job: JobFactory
) -> None:
    await endpoint(deps, ["job.cancelled"])
    job = await make_job()
    async with deps.db.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        assert await jobs.cancel_job(conn, job) is not None
        assert await conn.fetchval("SELECT count(*) FROM webhook_deliveries") == 1
        await transaction.rollback()
    assert await deps.db.fetchval("SELECT count(*) FROM webhook_events") == 0
    assert await deps.db.fetchval("SELECT count(*) FROM webhook_deliveries") == 0


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return msgspec.structs.replace(settings, webhook_endpoint_concurrency=3)


async def test_claims_keep_at_most_n_deliveries_in_flight_per_endpoint(deps: Deps) -> None:
    busy, quiet = await endpoint(deps, ["job.failed"]), await endpoint(deps, ["job.failed"])
    for _ in range(5):
        await deliveries.ping(deps.db, busy)
    await deliveries.ping(deps.db, quiet)
    first = await deliveries.claim(deps.db, deps.settings)
    assert sorted(c.endpoint_id == busy.id for c in first) == [False, True, True, True]
    assert await deliveries.claim(deps.db, deps.settings) == []  # busy is at its limit
    # One answered: one more of busy's may go; a failure waits for its retry.
    ok = Result(ok=True, duration_ms=5, response_status=200)
    failed = Result(ok=False, duration_ms=5, error="refused")
    mine = [c for c in first if c.endpoint_id == busy.id]
    assert await deliveries.settle(deps.db, deps.settings, mine[0], ok) is None
    assert await deliveries.settle(deps.db, deps.settings, mine[1], failed) is not None
    second = await deliveries.claim(deps.db, deps.settings)
    assert [c.endpoint_id for c in second] == [busy.id, busy.id]


async def test_a_worker_that_lost_its_lease_settles_nothing(deps: Deps) -> None:
    made = await endpoint(deps, ["job.failed"])
    ping = await deliveries.ping(deps.db, made)
    [stalled] = await deliveries.claim(deps.db, deps.settings)
    await deps.db.execute("UPDATE webhook_deliveries SET lease_until = now() - interval '1 s'")
    [again] = await deliveries.claim(deps.db, deps.settings)
    assert (stalled.attempts, again.attempts) == (1, 2)
    late = Result(ok=True, duration_ms=9000, response_status=200)
    assert await deliveries.settle(deps.db, deps.settings, stalled, late) is None
    row = await deps.db.fetchrow("SELECT * FROM webhook_deliveries WHERE id = $1", ping.id)
    assert (row["status"], row["finished_at"]) == ("pending", None)  # the new attempt decides
    [log] = await deliveries.list_deliveries(deps.db, made.id)
    assert [(a.number, a.outcome) for a in log.attempts] == [(1, "succeeded"), (2, None)]


async def test_the_log_forgets_finished_deliveries_after_its_days(deps: Deps) -> None:
    made = await endpoint(deps, ["job.failed"])
    old, recent = [await deliveries.ping(deps.db, made) for _ in range(2)]
    for claimed in await deliveries.claim(deps.db, deps.settings):
        ok = Result(ok=True, duration_ms=1, response_status=200)
        await deliveries.settle(deps.db, deps.settings, claimed, ok)
    pending = await deliveries.ping(deps.db, made)
    await deps.db.execute(
        "UPDATE webhook_deliveries SET finished_at = now() - interval '31 days' WHERE id = $1",
        old.id,
    )
    await deps.db.execute("UPDATE webhook_events SET created_at = now() - interval '31 days'")
    assert await deliveries.purge(deps.db, days=30) == 1
    kept = {d.id for d in await deliveries.list_deliveries(deps.db, made.id)}
    assert kept == {recent.id, pending.id}
    events = await deps.db.fetchval("SELECT count(*) FROM webhook_events")
    assert events == 2  # the purged delivery's event went with it
