"""The job row is the truth: claims, leases, fencing, and the reconciler."""

import asyncio
import time

import pytest

from services.core import jobs
from services.core.deps import Deps
from services.core.errors import InvalidInput
from services.core.queue import arq_redis, enqueue, function_for
from services.worker.jobs.maintenance import reconcile_jobs
from tests.conftest import JobFactory, job_fields

NOTHING = {"revived": 0, "crashed_out": 0, "requeued": 0}
REVIVED = NOTHING | {"revived": 1}
REQUEUED = NOTHING | {"requeued": 1}


async def test_twenty_concurrent_creates_with_one_key_make_one_job(deps: Deps) -> None:
    # create_job itself (not make_job): its `created` flag is what is under test.
    request = job_fields(idempotency_key="k-1")
    results = await asyncio.gather(*(jobs.create_job(deps.db, **request) for _ in range(21)))
    assert len({job.id for job, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    with pytest.raises(InvalidInput, match="different request"):
        await jobs.create_job(deps.db, **request | {"params": {"format": "xlsx"}})


async def test_a_job_of_another_org_is_not_found(deps: Deps, make_job: JobFactory) -> None:
    job = await make_job()
    assert (await jobs.get_job(deps.db, job.id, "acme")).id == job.id
    with pytest.raises(jobs.NotFound):
        await jobs.get_job(deps.db, job.id, "globex")
    with pytest.raises(jobs.NotFound):
        await jobs.get_job(deps.db, "not-a-uuid", "acme")


async def test_a_claim_fences_out_the_previous_attempt(deps: Deps, make_job: JobFactory) -> None:
    job = await make_job()
    first = await jobs.claim_job(deps.db, job.id, run=0, stage=jobs.RUN_EXPORT, lease_seconds=60)
    assert first is not None
    assert first.attempt == 1
    assert first.status == "running"
    # While the lease is live nobody else gets the job.
    assert (
        await jobs.claim_job(deps.db, job.id, run=0, stage=jobs.RUN_EXPORT, lease_seconds=60)
        is None
    )
    # The worker dies: its lease lapses, the reconciler bumps the run, a new attempt claims.
    await deps.db.execute(
        "UPDATE jobs SET lease_until = now() - interval '1 s' WHERE id = $1", job.id
    )
    [revived] = await jobs.expired_leases(deps.db, max_crashes=3)
    assert revived.run == 1
    # The dead worker's arq delivery (run 0) is now stale and claims nothing.
    assert (
        await jobs.claim_job(deps.db, job.id, run=0, stage=jobs.RUN_EXPORT, lease_seconds=60)
        is None
    )
    second = await jobs.claim_job(deps.db, job.id, run=1, stage=jobs.RUN_EXPORT, lease_seconds=60)
    assert second is not None
    assert second.attempt == 2
    # The first attempt wakes up and tries to publish: refused.
    assert await jobs.finish_job(deps.db, first, "succeeded", result={"rows": 1}) is None
    assert await jobs.renew_lease(deps.db, first, lease_seconds=60) == (False, False)
    done = await jobs.finish_job(deps.db, second, "succeeded", result={"rows": 2})
    assert done is not None
    assert done.result == {"rows": 2}
    assert done.lease_until is None


async def test_reconciler_re_enqueues_a_job_whose_lease_expired(
    deps: Deps, make_job: JobFactory
) -> None:
    job = await make_job()
    queue = arq_redis(deps.redis)
    await enqueue(queue, job)  # the delivery a worker took and then died with
    await deps.redis.set(f"arq:in-progress:run_export:{job.id}:0", b"1")
    claimed = await jobs.claim_job(deps.db, job.id, run=0, stage=jobs.RUN_EXPORT, lease_seconds=60)
    assert claimed is not None
    ctx = {"deps": deps, "redis": queue}
    assert await reconcile_jobs(ctx) == NOTHING  # lease still live

    await deps.db.execute(
        "UPDATE jobs SET lease_until = now() - interval '1 s' WHERE id = $1", job.id
    )
    assert await reconcile_jobs(ctx) == REVIVED
    # Only the new run is queued: the dead worker's delivery is gone with its marks.
    queued = {m.decode() for m in await deps.redis.zrange("arq:queue", 0, -1)}
    assert queued == {f"run_export:{job.id}:1"}
    assert await deps.redis.exists(f"arq:in-progress:run_export:{job.id}:0") == 0
    assert await deps.redis.exists(f"arq:job:run_export:{job.id}:0") == 0
    assert await reconcile_jobs(ctx) == NOTHING  # nothing more to do


async def test_reconciler_enqueues_a_waiting_job_redis_lost_once(
    deps: Deps, make_job: JobFactory
) -> None:
    job = await make_job()
    ctx = {"deps": deps, "redis": arq_redis(deps.redis)}
    assert await reconcile_jobs(ctx) == NOTHING  # still in its grace time
    await deps.db.execute(
        "UPDATE jobs SET updated_at = now() - interval '1 min' WHERE id = $1", job.id
    )
    assert await reconcile_jobs(ctx) == REQUEUED
    assert await reconcile_jobs(ctx) == NOTHING  # arq holds it now
    queued = {m.decode() for m in await deps.redis.zrange("arq:queue", 0, -1)}
    assert queued == {f"run_export:{job.id}:0"}


@pytest.mark.parametrize(("kind", "status"), [("import", "uploaded"), ("export", "queued")])
async def test_reconciler_requeues_a_waiting_job_whose_taker_died_before_claiming_it(
    deps: Deps, make_job: JobFactory, kind: str, status: str
) -> None:
    job = await make_job(kind=kind, status=status)
    delivery = f"{function_for(job)}:{job.id}:0"
    queue = arq_redis(deps.redis)
    ctx = {"deps": deps, "redis": queue}
    await enqueue(queue, job)
    # A worker took it (arq's mark, held for the job timeout) and was killed before it
    # claimed the row: arq refuses the run again, and no worker will start it.
    await deps.redis.psetex(f"arq:in-progress:{delivery}", 3_610_000, b"1")
    await deps.db.execute(
        "UPDATE jobs SET updated_at = now() - interval '1 min' WHERE id = $1", job.id
    )
    assert await reconcile_jobs(ctx) == NOTHING  # first seen so: a live worker claims in ms
    assert (await jobs.get_job(deps.db, job.id, "acme")).run == 0
    # Still so a grace later (the sighting made older, as 30 s of waiting would).
    await deps.redis.set(f"ferry:unclaimed:{delivery}", repr(time.time() - 31))
    assert await reconcile_jobs(ctx) == REQUEUED
    renewed = await jobs.get_job(deps.db, job.id, "acme")
    assert (renewed.run, renewed.crashes, renewed.status) == (1, 0, status)  # not a crash
    queued = {m.decode() for m in await deps.redis.zrange("arq:queue", 0, -1)}
    assert queued == {delivery.removesuffix(":0") + ":1"}
    for gone in ("arq:in-progress:", "arq:job:", "ferry:unclaimed:"):
        assert await deps.redis.exists(gone + delivery) == 0
    assert await reconcile_jobs(ctx) == NOTHING


async def test_history_is_newest_first_and_pages_by_keyset(
    deps: Deps, make_job: JobFactory
) -> None:
    made = [await make_job() for _ in range(5)]
    await make_job(user_id="bob")
    await make_job(kind="import", status="uploaded")
    page1 = await jobs.list_jobs(deps.db, org_id="acme", user_id="alice", kind="export", limit=3)
    last = page1[-1]
    page2 = await jobs.list_jobs(
        deps.db,
        org_id="acme",
        user_id="alice",
        kind="export",
        before=(last.created_at, last.id),
        limit=3,
    )
    assert [j.id for j in page1 + page2] == [j.id for j in reversed(made)]


@pytest.mark.parametrize(
    ("kind", "working", "ends"),
    [
        ("export", "running", "failed"),
        ("import", "validating", "failed"),
        ("import", "rolling_back", "committed"),  # a rollback that cannot run leaves it in
    ],
)
async def test_the_third_crash_ends_a_job_where_its_stage_fails_and_says_why(
    deps: Deps, make_job: JobFactory, kind: str, working: str, ends: str
) -> None:
    job = await make_job(kind=kind, status=working)
    for crash in (1, 2, 3):
        await deps.db.execute(
            "UPDATE jobs SET lease_until = now() - interval '1 s' WHERE id = $1", job.id
        )
        [lapsed] = await jobs.expired_leases(deps.db, max_crashes=3)
        assert lapsed.crashes == crash
        assert lapsed.status == (ends if crash == 3 else working)
    assert lapsed.final
    assert (lapsed.run, lapsed.lease_until) == (2, None)  # no new run for the third
    assert lapsed.error is not None
    assert lapsed.error["message"].startswith("this job stopped its worker 3 times")
    assert await jobs.expired_leases(deps.db, max_crashes=3) == []
