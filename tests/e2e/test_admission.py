"""Admission control: rate limits per user and per org, and a cap on waiting jobs.

The limits live in Redis, so two api replicas share them; a burst gets 429 with
``Retry-After`` and the RateLimit headers; health and metrics are never limited;
without Redis the limits fail open (and say so in the log).
"""

from __future__ import annotations

import asyncio
import logging
import re

import msgspec
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from services.api.app import create_app
from services.core.deps import Deps
from services.core.settings import Settings
from tests.conftest import TokenFactory, free_port
from tests.e2e.imports_helpers import orders_csv, upload

EXPORT = {"dataset": "bookkeeping_records", "format": "csv"}
PROBLEM = "application/problem+json"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return msgspec.structs.replace(
        settings,
        rate_limit_user=5,
        rate_limit_org=8,
        rate_limit_window_seconds=60,
        max_queued_jobs_per_user=3,
    )


def bearer(make_token: TokenFactory, **claims: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_token(**claims)}"}


def remaining(header: str) -> dict[str, int]:
    return {name: int(r) for name, r in re.findall(r'"(\w+)";r=(\d+)', header)}


async def test_a_burst_from_one_user_gets_429_another_user_only_the_org_limit(
    client: AsyncTestClient[Litestar], make_token: TokenFactory
) -> None:
    alice, bob = bearer(make_token, sub="alice"), bearer(make_token, sub="bob")
    seen = []
    for _ in range(5):
        response = await client.get("/v1/jobs", headers=alice)
        assert response.status_code == 200
        assert response.headers["ratelimit-policy"] == '"user";q=5;w=60, "org";q=8;w=60'
        seen.append(remaining(response.headers["ratelimit"]))
    assert [s["user"] for s in seen] == [4, 3, 2, 1, 0]
    assert [s["org"] for s in seen] == [7, 6, 5, 4, 3]

    refused = await client.get("/v1/jobs", headers=alice)
    assert refused.status_code == 429
    assert refused.headers["content-type"].startswith(PROBLEM)
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert remaining(refused.headers["ratelimit"])["user"] == 0
    problem = refused.json()
    assert problem["type"] == "urn:ferry:problem:too-many-requests"
    assert "user rate limit of 5 requests per 60 s" in problem["detail"]

    # Bob has his own user limit, but shares the org's: 3 are left of it (a refused
    # request cost nothing).
    for _ in range(3):
        assert (await client.get("/v1/jobs", headers=bob)).status_code == 200
    org_refused = await client.get("/v1/jobs", headers=bob)
    assert org_refused.status_code == 429
    assert "org rate limit of 8" in org_refused.json()["detail"]
    # Another org is not held back.
    other = bearer(make_token, sub="alice", org="globex")
    assert (await client.get("/v1/jobs", headers=other)).status_code == 200


async def test_health_and_metrics_are_never_limited(
    client: AsyncTestClient[Litestar], make_token: TokenFactory
) -> None:
    alice = bearer(make_token)
    for _ in range(6):
        await client.get("/v1/jobs", headers=alice)
    assert (await client.get("/v1/jobs", headers=alice)).status_code == 429
    for _ in range(10):
        for path in ("/healthz", "/readyz", "/metrics"):
            response = await client.get(path, headers=alice)
            assert response.status_code == 200, path
            assert "ratelimit" not in response.headers


async def test_two_api_replicas_share_the_limits(
    client: AsyncTestClient[Litestar], settings: Settings, make_token: TokenFactory
) -> None:
    alice = bearer(make_token)
    async with AsyncTestClient(app=create_app(settings)) as replica:
        answers = []
        for i in range(6):
            answers.append(await (client if i % 2 else replica).get("/v1/jobs", headers=alice))
    assert [a.status_code for a in answers] == [200] * 5 + [429]


async def test_without_redis_the_limits_fail_open_and_say_so(
    settings: Settings, deps: Deps, make_token: TokenFactory, caplog: pytest.LogCaptureFixture
) -> None:
    away = msgspec.structs.replace(settings, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    alice = bearer(make_token)
    async with AsyncTestClient(app=create_app(away)) as c:
        for _ in range(7):
            response = await c.get("/v1/jobs", headers=alice)
            assert response.status_code == 200
            assert "ratelimit" not in response.headers
    warnings = [r for r in caplog.records if getattr(r, "action", None) == "rate_limit_open"]
    assert len(warnings) == 1  # one line, not one per request
    assert warnings[0].levelno == logging.WARNING


async def test_a_user_with_too_many_waiting_jobs_is_told_so(
    deps: Deps, make_token: TokenFactory, settings: Settings
) -> None:
    settings = msgspec.structs.replace(settings, rate_limit_user=0, rate_limit_org=0)
    async with AsyncTestClient(app=create_app(settings)) as c:
        alice, bob = bearer(make_token), bearer(make_token, sub="bob")
        keyed = {**alice, "Idempotency-Key": "k1"}
        first = await c.post("/v1/exports", json=EXPORT, headers=keyed)
        assert first.status_code == 202
        assert (await upload(c, alice, orders_csv(2))).status_code == 202  # imports count too
        assert (await c.post("/v1/exports", json=EXPORT, headers=alice)).status_code == 202
        full = await c.post("/v1/exports", json=EXPORT, headers=alice)
        assert full.status_code == 429
        assert full.headers["retry-after"] == "10"
        problem = full.json()
        assert problem["type"] == "urn:ferry:problem:too-many-queued-jobs"
        assert "3 jobs waiting to start" in problem["detail"]
        assert "FERRY_MAX_QUEUED_JOBS_PER_USER" in problem["detail"]
        assert (problem["waiting"], problem["limit"]) == (3, 3)
        refused_upload = await upload(c, alice, orders_csv(2))
        assert refused_upload.status_code == 429
        # A replay is still answered; another user has a queue of their own.
        replay = await c.post("/v1/exports", json=EXPORT, headers=keyed)
        assert replay.status_code == 202
        assert replay.json()["id"] == first.json()["id"]
        assert (await c.post("/v1/exports", json=EXPORT, headers=bob)).status_code == 202
        # Cancelling one makes room for one.
        await c.post(f"/v1/jobs/{first.json()['id']}/cancel", headers=alice)
        assert (await c.post("/v1/exports", json=EXPORT, headers=alice)).status_code == 202
        assert (await c.post("/v1/exports", json=EXPORT, headers=alice)).status_code == 429


async def test_the_cap_holds_when_requests_race(
    settings: Settings, deps: Deps, make_token: TokenFactory
) -> None:
    settings = msgspec.structs.replace(settings, rate_limit_user=0, rate_limit_org=0)
    alice = bearer(make_token)
    async with AsyncTestClient(app=create_app(settings)) as c:
        answers = await asyncio.gather(
            *(c.post("/v1/exports", json=EXPORT, headers=alice) for _ in range(12))
        )
    assert sorted(a.status_code for a in answers) == [202] * 3 + [429] * 9
    waiting = await deps.db.fetchval("SELECT count(*) FROM jobs WHERE user_id = 'alice'")
    assert waiting == 3
