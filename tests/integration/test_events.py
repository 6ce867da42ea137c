import asyncio
import uuid

from redis.asyncio import Redis

from services.core.events import EventBus, job_stream, user_stream


async def test_reading_after_each_id_sees_every_event_once_in_order(redis_url: str) -> None:
    redis = Redis.from_url(redis_url)
    bus = EventBus(redis, retention_seconds=60)
    job = uuid.uuid4()
    total = 300

    async def publish() -> None:
        for n in range(total):
            await bus.publish(
                job_id=job, org_id="acme", user_id="alice", type="progress", data={"done": n}
            )
            if n % 50 == 0:
                await asyncio.sleep(0.01)

    async def follow() -> list[int]:
        seen: list[int] = []
        after = "0-0"
        while len(seen) < total:
            # Small pages force many reconnect-like reads after the last id.
            for event in await bus.read(job_stream(job), after, block_ms=1000, count=7):
                seen.append(event.data["done"])
                after = event.id
        return seen

    _, seen = await asyncio.gather(publish(), asyncio.wait_for(follow(), 20))
    assert seen == list(range(total))
    await redis.aclose()


async def test_the_owner_feed_gets_every_job_of_the_caller(redis_url: str) -> None:
    redis = Redis.from_url(redis_url)
    bus = EventBus(redis, retention_seconds=60)
    a, b = uuid.uuid4(), uuid.uuid4()
    await bus.publish(job_id=a, org_id="acme", user_id="alice", type="succeeded", data={})
    await bus.publish(job_id=b, org_id="acme", user_id="alice", type="failed", data={})
    await bus.publish(job_id=b, org_id="acme", user_id="bob", type="failed", data={})
    feed = await bus.read(user_stream("acme", "alice"))
    assert [(e.type, e.data["job_id"]) for e in feed] == [("succeeded", str(a)), ("failed", str(b))]
    assert await redis.ttl(user_stream("acme", "alice")) > 0  # streams expire
    await redis.aclose()


async def test_a_blocking_read_wakes_up_for_a_new_event(redis_url: str) -> None:
    redis = Redis.from_url(redis_url)
    bus = EventBus(redis, retention_seconds=60)
    job = uuid.uuid4()
    last = await bus.last_id(job_stream(job))
    assert last == "0-0"
    reader = asyncio.create_task(bus.read(job_stream(job), last, block_ms=5000))
    await asyncio.sleep(0.05)
    published = await bus.publish(
        job_id=job, org_id="o", user_id="u", type="succeeded", data={"rows": 3}
    )
    events = await asyncio.wait_for(reader, 5)
    assert [(e.id, e.type, e.data["rows"]) for e in events] == [(published, "succeeded", 3)]
    assert await bus.read(job_stream(job), published, block_ms=50) == []
    await redis.aclose()
