"""Webhooks end to end: a real HTTP receiver on a loopback port gets the events of real
exports and imports from a real worker, signed with the secret shown at registration.

The receiver is a small ASGI app on uvicorn. Killing it, making it answer 500 or hang
shows the retries, the delivery log and the at-least-once promise.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any, get_args

import msgspec
import pytest
import uvicorn
from litestar import Litestar
from litestar.testing import AsyncTestClient

from services.api.app import create_app
from services.core.auth import TokenVerifier
from services.core.deps import Deps
from services.core.queue import arq_redis
from services.core.settings import Settings
from services.core.webhooks.endpoints import EventType
from services.core.webhooks.signing import verify_signature
from services.worker.jobs.webhooks import deliver_webhooks, seal_webhook_secrets
from tests.conftest import ALL_PERMS, TokenFactory, WorkerRun, ferry_env, free_port
from tests.e2e.export_files import seed_records
from tests.e2e.imports_helpers import orders_csv, upload
from tests.e2e.test_exports import until

FERRY = Path(sys.executable).parent / "ferry"
DEADLINE = 20.0
ALL_EVENTS = list(get_args(EventType))
Client = AsyncTestClient[Litestar]
HEADER_ONLY = b"ebay_order_id,sale_date,item_name,sale_price\r\n"  # fails validation


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Loopback receivers over http, and retries in tenths of seconds instead of minutes."""
    return msgspec.structs.replace(
        settings,
        webhook_allow_http=True,
        webhook_allow_cidrs="127.0.0.0/8",
        webhook_retry_seconds=0.2,
        webhook_retry_max_seconds=1.6,
        webhook_timeout_seconds=5.0,
    )


@pytest.fixture
def manager(make_token: TokenFactory) -> dict[str, str]:
    """alice of acme, who may run jobs and manage the org's webhooks."""
    return {"Authorization": f"Bearer {make_token(perms=[*ALL_PERMS, 'webhooks.manage'])}"}


class Received(msgspec.Struct):
    headers: dict[str, str]
    body: bytes
    answered: int

    @property
    def delivery(self) -> str:
        return self.headers["ferry-delivery"]

    def json(self) -> Any:
        return msgspec.json.decode(self.body)


class Receiver:
    """A webhook endpoint on a loopback port that records every request.

    ``answer`` is the status it replies with; ``hang`` makes it hold requests until
    released; ``stop()`` kills it (connections are refused) and ``start()`` brings it
    back on the same port.
    """

    def __init__(self, tls: tuple[Path, Path] | None = None) -> None:
        self.tls = tls  # certificate and key files: serve https://localhost
        self.port = free_port()
        self.got: list[Received] = []
        self.held = 0  # requests that arrived while ``hang`` held them
        self.answer = 200
        self.answer_body = b"thanks"
        self.hang = asyncio.Event()
        self.hang.set()  # set: answer at once
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        if self.tls is not None:
            return f"https://localhost:{self.port}/hooks/ferry"
        return f"http://127.0.0.1:{self.port}/hooks/ferry"

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        if not self.hang.is_set():
            self.held += 1
            await self.hang.wait()
        self.got.append(Received(headers, body, self.answer))
        await send({"type": "http.response.start", "status": self.answer, "headers": []})
        await send({"type": "http.response.body", "body": self.answer_body})

    async def start(self) -> None:
        certfile, keyfile = self.tls or (None, None)
        config = uvicorn.Config(
            self,
            host="127.0.0.1",
            port=self.port,
            log_config=None,
            lifespan="off",
            ssl_certfile=certfile,
            ssl_keyfile=keyfile,
        )
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve())
        await until(lambda: _true(self._server is not None and self._server.started), "receiver")

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self.hang.set()
            self._server.should_exit = True
            await asyncio.wait_for(self._task, 10)
            self._server = self._task = None


async def _true(value: bool) -> bool:
    return value


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    yield r
    await r.stop()


async def register(
    client: Client, headers: dict[str, str], url: str, events: list[str] | None = None
) -> dict[str, Any]:
    body = {"url": url, "events": events or ALL_EVENTS, "description": "the test receiver"}
    response = await client.post("/v1/webhooks", json=body, headers=headers)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def deliveries(client: Client, headers: dict[str, str], hook: dict[str, Any]) -> list[Any]:
    response = await client.get(f"{hook['links']['deliveries']}?limit=200", headers=headers)
    assert response.status_code == 200, response.text
    items: list[Any] = response.json()["items"]
    return items


async def metric(client: Client, name: str) -> float:
    """One of the api's Prometheus gauges, as a scrape reads it."""
    text = (await client.get("/metrics")).text
    [value] = [line.split()[1] for line in text.splitlines() if line.startswith(f"{name} ")]
    return float(value)


def without_token(doc: dict[str, Any]) -> dict[str, Any]:
    """A job document with its events link cut before the token (minted per reader)."""
    links = {**doc["links"], "events": doc["links"]["events"].partition("?token=")[0]}
    return {**doc, "links": links}


# --- the events of real jobs ---------------------------------------------------------------


async def test_exports_and_imports_reach_the_receiver_signed_with_their_job_documents(
    client: Client,
    manager: dict[str, str],
    deps: Deps,
    settings: Settings,
    receiver: Receiver,
    run_worker: WorkerRun,
) -> None:
    hook = await register(client, manager, receiver.url)
    secret = hook["secret"]
    assert secret.startswith("whsec_")
    shown = (await client.get(hook["links"]["self"], headers=manager)).json()
    assert "secret" not in shown  # shown once, at creation
    listed = (await client.get("/v1/webhooks", headers=manager)).json()["items"]
    assert [h["id"] for h in listed] == [hook["id"]]
    assert "secret" not in listed[0]

    await seed_records(deps, "acme", "main", 50)
    export = {"dataset": "bookkeeping_records", "format": "csv", "account_id": "main"}
    exported = (await client.post("/v1/exports", json=export, headers=manager)).json()
    cancelled = (await client.post("/v1/exports", json=export, headers=manager)).json()
    answer = await client.post(f"/v1/jobs/{cancelled['id']}/cancel", headers=manager)
    assert answer.json()["status"] == "cancelled"
    uploaded = (await upload(client, manager, orders_csv(5))).json()
    await run_worker()
    commit = await client.post(f"/v1/imports/{uploaded['id']}/commit", headers=manager)
    assert commit.status_code == 202, commit.text
    await run_worker()
    rollback = await client.post(f"/v1/imports/{uploaded['id']}/rollback", headers=manager)
    assert rollback.json()["status"] == "rolling_back"  # a job: the worker rolls it back
    await run_worker()

    seen = {(r.json()["type"], r.json()["data"]["id"]) for r in receiver.got}
    assert seen == {
        ("job.succeeded", exported["id"]),
        ("job.cancelled", cancelled["id"]),
        ("import.validated", uploaded["id"]),
        ("import.committed", uploaded["id"]),
        ("import.rolled_back", uploaded["id"]),
    }
    assert len(receiver.got) == 5  # each once
    tokens = TokenVerifier(settings)
    for got in receiver.got:
        event = got.json()
        assert verify_signature(secret, got.headers["ferry-signature"], got.body)
        assert got.headers["ferry-event"] == event["type"]
        assert got.headers["content-type"] == "application/json"
        assert uuid.UUID(event["id"])
        assert datetime.fromisoformat(event["created_at"])
        # The job as it was at the event, the same document GET /v1/jobs/{id} returns.
        job_id = event["data"]["id"]
        now = (await client.get(f"/v1/jobs/{job_id}", headers=manager)).json()
        if event["type"] in {"job.succeeded", "job.cancelled", "import.rolled_back"}:
            assert without_token(event["data"]) == without_token(now)
        assert event["data"]["status"] == event["type"].split(".")[1]
        # Its events link opens that job's stream as its owner.
        token = event["data"]["links"]["events"].partition("?token=")[2]
        assert tokens.verify_events_token(token, job_id).principal.sub == "alice"
    succeeded = next(r.json() for r in receiver.got if r.json()["type"] == "job.succeeded")
    assert succeeded["data"]["result"]["rows"] == 50
    assert succeeded["data"]["links"]["download"] == f"/v1/exports/{exported['id']}/download"
    validated = next(r.json() for r in receiver.got if r.json()["type"] == "import.validated")
    assert validated["data"]["result"]["totals"]["valid"] == 5

    log = await deliveries(client, manager, hook)
    assert {d["id"] for d in log} == {r.delivery for r in receiver.got}
    for delivery in log:
        assert delivery["status"] == "succeeded"
        assert delivery["next_attempt_at"] is None
        [attempt] = delivery["attempts"]
        assert attempt["outcome"] == "succeeded"
        assert attempt["response_status"] == 200
        assert attempt["response_excerpt"] == "thanks"
        assert attempt["error"] is None
        assert attempt["duration_ms"] >= 0


async def test_only_subscribed_events_of_the_org_reach_an_enabled_endpoint(
    client: Client,
    manager: dict[str, str],
    make_token: TokenFactory,
    receiver: Receiver,
    run_worker: WorkerRun,
) -> None:
    failures = await register(client, manager, receiver.url, ["job.failed"])
    other = Receiver()
    await other.start()
    try:
        token = make_token(org="globex", perms=[*ALL_PERMS, "webhooks.manage"])
        globex = {"Authorization": f"Bearer {token}"}
        await register(client, globex, other.url)
        export = {"dataset": "bookkeeping_records", "format": "csv"}
        await client.post("/v1/exports", json=export, headers=manager)  # succeeds: not sent
        broken = (await upload(client, manager, HEADER_ONLY)).json()
        await run_worker()
        assert [r.json()["type"] for r in receiver.got] == ["job.failed"]
        assert receiver.got[0].json()["data"]["id"] == broken["id"]
        assert other.got == []  # globex's endpoint hears nothing of acme's jobs

        disable = await client.patch(
            failures["links"]["self"], json={"enabled": False}, headers=manager
        )
        assert disable.json()["enabled"] is False
        assert disable.json()["events"] == ["job.failed"]  # the rest stays
        await upload(client, manager, HEADER_ONLY)
        await run_worker()
        assert len(receiver.got) == 1  # a disabled endpoint gets no new deliveries
    finally:
        await other.stop()


# --- retries, the delivery log, at least once -----------------------------------------------


async def test_a_dead_receiver_gets_retries_with_growing_delays_then_the_delivery_once(
    client: Client,
    manager: dict[str, str],
    deps: Deps,
    settings: Settings,
    receiver: Receiver,
    run_worker: WorkerRun,
) -> None:
    hook = await register(client, manager, receiver.url, ["job.succeeded"])
    await receiver.stop()  # killed before the event
    export = {"dataset": "bookkeeping_records", "format": "csv"}
    job = (await client.post("/v1/exports", json=export, headers=manager)).json()
    worker = asyncio.create_task(run_worker())  # stays while a retry is scheduled

    async def failed(n: int) -> list[Any] | None:
        [delivery] = await deliveries(client, manager, hook) or [None]
        done = [a for a in delivery["attempts"] if a["outcome"] == "failed"] if delivery else []
        return done if len(done) >= n else None

    refused = await until(lambda: failed(4), "four refused attempts")
    # An operator sees the backlog, and how long it has waited.
    assert await metric(client, "ferry_webhook_deliveries_unfinished") == 1
    waited = await metric(client, "ferry_webhook_oldest_unfinished_seconds")
    first_try = datetime.fromisoformat(refused[0]["started_at"])
    assert waited >= (datetime.now(first_try.tzinfo) - first_try).total_seconds() - 0.5
    receiver.answer, receiver.answer_body = 500, b"x" * 1_000_000  # back, but failing
    await receiver.start()
    await until(lambda: _true(any(r.answered == 500 for r in receiver.got)), "a 500")
    receiver.answer, receiver.answer_body = 204, b""
    await asyncio.wait_for(worker, DEADLINE)

    [delivery] = await deliveries(client, manager, hook)
    assert delivery["status"] == "succeeded"
    assert delivery["event"] == "job.succeeded"
    assert delivery["job_id"] == job["id"]
    attempts = delivery["attempts"]
    assert [a["number"] for a in attempts] == list(range(1, len(attempts) + 1))
    assert [a["outcome"] for a in attempts] == ["failed"] * (len(attempts) - 1) + ["succeeded"]
    assert attempts[-1]["response_status"] == 204
    for attempt in refused[:4]:
        assert attempt["response_status"] is None
        assert "ConnectError" in attempt["error"]
    answered_500 = [a for a in attempts if a["response_status"] == 500]
    assert answered_500
    assert answered_500[0]["error"] == "the endpoint answered 500"
    assert answered_500[0]["response_excerpt"] == "x" * 200  # a short excerpt, never the body
    # Each wait doubles (0.2 s, 0.4 s, …, jitter in the upper half) and no retry came early.
    for n, (attempt, after) in enumerate(itertools.pairwise(attempts), start=1):
        started = datetime.fromisoformat(attempt["started_at"])
        due = datetime.fromisoformat(attempt["next_attempt_at"])
        full = min(
            settings.webhook_retry_max_seconds, settings.webhook_retry_seconds * 2 ** (n - 1)
        )
        assert full / 2 <= (due - started).total_seconds() <= full + 0.5
        assert datetime.fromisoformat(after["started_at"]) >= due
    # At least once, and here exactly once: one 2xx for the delivery, the same bytes each time.
    ok = [r for r in receiver.got if 200 <= r.answered < 300]
    assert [r.delivery for r in ok] == [delivery["id"]]
    assert len({r.body for r in receiver.got}) == 1
    assert len({r.delivery for r in receiver.got}) == 1


async def test_a_delivery_is_marked_failed_when_its_retry_window_ends(
    client: Client,
    manager: dict[str, str],
    deps: Deps,
    settings: Settings,
    receiver: Receiver,
    run_worker: WorkerRun,
) -> None:
    hook = await register(client, manager, receiver.url, ["job.succeeded"])
    receiver.answer = 503
    await client.post(
        "/v1/exports", json={"dataset": "bookkeeping_records", "format": "csv"}, headers=manager
    )
    brief = dataclasses.replace(
        deps, settings=msgspec.structs.replace(settings, webhook_retry_window_seconds=1.0)
    )
    await run_worker(deps=brief)  # returns once nothing is scheduled any more

    [delivery] = await deliveries(client, manager, hook)
    assert delivery["status"] == "failed"
    assert delivery["finished_at"] is not None
    assert delivery["next_attempt_at"] is None
    attempts = delivery["attempts"]
    assert len(attempts) >= 2
    assert all(a["response_status"] == 503 for a in attempts)
    assert attempts[-1]["next_attempt_at"] is None  # no retry after the last
    assert all(a["next_attempt_at"] for a in attempts[:-1])
    assert len(receiver.got) == len(attempts)
    failed = await client.get(f"{hook['links']['deliveries']}?status=failed", headers=manager)
    assert [d["id"] for d in failed.json()["items"]] == [delivery["id"]]
    # What an alert on a receiver that stopped answering reads.
    assert await metric(client, "ferry_webhook_deliveries_failed_last_hour") == 1
    assert await metric(client, "ferry_webhook_deliveries_unfinished") == 0
    assert await metric(client, "ferry_webhook_oldest_unfinished_seconds") == 0


async def test_redirects_are_not_followed(
    client: Client,
    manager: dict[str, str],
    receiver: Receiver,
    run_worker: WorkerRun,
    deps: Deps,
    settings: Settings,
) -> None:
    hook = await register(client, manager, receiver.url)
    receiver.answer = 307  # with no Location at all: Ferry must not go anywhere else
    ping = await client.post(hook["links"]["test"], headers=manager)
    assert ping.status_code == 202
    brief = dataclasses.replace(
        deps, settings=msgspec.structs.replace(settings, webhook_retry_window_seconds=0.5)
    )
    await run_worker(deps=brief)
    [delivery] = await deliveries(client, manager, hook)
    assert delivery["event"] == "ping"
    assert delivery["attempts"][0]["response_status"] == 307
    assert delivery["attempts"][0]["error"] == "the endpoint answered 307"
    assert all(r.headers["ferry-event"] == "ping" for r in receiver.got)


async def test_a_wake_up_lost_with_redis_is_delivered_by_the_cron(
    client: Client,
    manager: dict[str, str],
    deps: Deps,
    receiver: Receiver,
    run_worker: WorkerRun,
) -> None:
    hook = await register(client, manager, receiver.url)
    ping = (await client.post(hook["links"]["test"], headers=manager)).json()
    assert ping["status"] == "pending"
    await deps.redis.flushdb()  # Redis lost the wake-up
    await run_worker()
    assert receiver.got == []
    ctx = {"deps": deps, "redis": arq_redis(deps.redis)}
    assert await deliver_webhooks(ctx) == 1  # what the cron runs every 30 s
    assert [r.delivery for r in receiver.got] == [ping["id"]]
    assert receiver.got[0].json()["data"]["webhook"]["id"] == hook["id"]


async def test_a_worker_killed_mid_delivery_delivers_again_and_the_log_says_so(
    client: Client,
    manager: dict[str, str],
    deps: Deps,
    settings: Settings,
    receiver: Receiver,
    run_worker: WorkerRun,
    tmp_path: Path,
) -> None:
    hook = await register(client, manager, receiver.url)
    receiver.hang.clear()  # holds the request: the worker waits for an answer
    ping = (await client.post(hook["links"]["test"], headers=manager)).json()
    with open(tmp_path / "worker.log", "wb") as log:  # noqa: ASYNC230 - a log file
        proc = subprocess.Popen(  # noqa: ASYNC220 - a real worker process, to SIGKILL
            [str(FERRY), "worker"],
            env=ferry_env(
                settings,
                webhook_allow_http="true",
                webhook_allow_cidrs="127.0.0.0/8",
                webhook_timeout_seconds="2",
                log_level="WARNING",
            ),
            stdout=log,
            stderr=log,
        )
    try:
        await until(lambda: _true(receiver.held == 1), "the worker's request", deadline=30)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    receiver.hang.set()  # the dead worker's request gets its answer; nobody hears it

    async def lapsed() -> bool:
        return bool(
            await deps.db.fetchval(
                "SELECT lease_until < now() FROM webhook_deliveries WHERE id = $1",
                uuid.UUID(ping["id"]),
            )
        )

    await until(lapsed, "the dead worker's lease to lapse", deadline=10)
    ctx = {"deps": deps, "redis": arq_redis(deps.redis)}
    assert await deliver_webhooks(ctx) == 1

    [delivery] = await deliveries(client, manager, hook)
    assert delivery["status"] == "succeeded"
    first, second = delivery["attempts"]
    assert first["outcome"] == "failed"
    assert first["error"] == "the worker stopped before the endpoint answered"
    assert second["outcome"] == "succeeded"
    # At least once: the receiver saw the delivery twice, under one Ferry-Delivery id.
    assert [r.delivery for r in receiver.got] == [ping["id"], ping["id"]]


# --- secrets -------------------------------------------------------------------------------


async def test_a_rotated_secret_signs_beside_the_new_one_until_its_grace_ends(
    client: Client,
    manager: dict[str, str],
    deps: Deps,
    receiver: Receiver,
    run_worker: WorkerRun,
) -> None:
    hook = await register(client, manager, receiver.url)
    old = hook["secret"]
    key = {"Idempotency-Key": "rotate-1"}
    rotated = await client.post(hook["links"]["rotate_secret"], headers=manager | key)
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["secret"]
    assert new != old
    assert rotated.json()["previous_secret_expires_at"] is not None
    again = await client.post(hook["links"]["rotate_secret"], headers=manager | key)
    assert again.json()["secret"] == new  # a retried rotation does not rotate twice

    await client.post(hook["links"]["test"], headers=manager)
    await run_worker()
    during = receiver.got[-1]
    assert during.headers["ferry-signature"].count("v1=") == 2
    assert verify_signature(new, during.headers["ferry-signature"], during.body)
    assert verify_signature(old, during.headers["ferry-signature"], during.body)

    # A day later (the grace period is 24 h) only the new secret signs.
    await deps.db.execute(
        "UPDATE webhook_endpoints SET previous_secret_until = now() - interval '1 s'"
    )
    await client.post(hook["links"]["test"], headers=manager)
    await run_worker()
    after = receiver.got[-1]
    assert after.headers["ferry-signature"].count("v1=") == 1
    assert verify_signature(new, after.headers["ferry-signature"], after.body)
    assert not verify_signature(old, after.headers["ferry-signature"], after.body)


async def test_a_retried_registration_returns_the_same_endpoint_and_secret(
    client: Client, manager: dict[str, str], receiver: Receiver
) -> None:
    body = {"url": receiver.url, "events": ["job.failed"]}
    headers = manager | {"Idempotency-Key": "hook-1"}
    first = await client.post("/v1/webhooks", json=body, headers=headers)
    second = await client.post("/v1/webhooks", json=body, headers=headers)
    assert second.status_code == 201
    assert second.headers["idempotent-replayed"] == "true"
    assert second.json() == first.json()
    other = await client.post(
        "/v1/webhooks", json={**body, "events": ["job.succeeded"]}, headers=headers
    )
    assert other.status_code == 422
    assert other.json()["errors"][0]["field"] == "Idempotency-Key"
    listed = (await client.get("/v1/webhooks", headers=manager)).json()["items"]
    assert len(listed) == 1


# --- who may reach what ----------------------------------------------------------------------


async def test_private_addresses_are_refused_unless_allowed(
    settings: Settings,
    deps: Deps,
    manager: dict[str, str],
    receiver: Receiver,
    run_worker: WorkerRun,
    client: Client,
) -> None:
    strict = msgspec.structs.replace(
        settings, webhook_allow_cidrs="", webhook_allow_private=False, webhook_allow_http=False
    )
    async with AsyncTestClient(app=create_app(strict)) as guarded:
        for url, reason in [
            ("https://127.0.0.1/hook", "127.0.0.1 is not a public address (loopback)"),
            (
                "https://localhost/hook",
                "localhost resolves to 127.0.0.1, which is not a public address (loopback)",
            ),
            ("https://10.0.0.1/hook", "(private)"),
            ("https://169.254.169.254/latest/meta-data", "(link-local)"),
            ("https://[::1]/hook", "(loopback)"),
            (receiver.url, "must start with https://"),
        ]:
            body = {"url": url, "events": ["job.failed"]}
            refused = await guarded.post("/v1/webhooks", json=body, headers=manager)
            assert refused.status_code == 422, url
            assert refused.headers["content-type"].startswith("application/problem+json")
            [error] = refused.json()["errors"]
            assert error["field"] == "url"
            assert reason in error["message"]
        assert (await guarded.get("/v1/webhooks", headers=manager)).json()["items"] == []

    # Allowed when registered; refused at delivery once the setting changed (DNS can too).
    hook = await register(client, manager, receiver.url)
    await client.post(hook["links"]["test"], headers=manager)
    guarded_worker = dataclasses.replace(
        deps,
        settings=msgspec.structs.replace(
            strict, webhook_allow_http=True, webhook_retry_window_seconds=0.5
        ),
    )
    await run_worker(deps=guarded_worker)
    assert receiver.got == []
    [delivery] = await deliveries(client, manager, hook)
    assert delivery["attempts"][0]["error"] == "127.0.0.1 is not a public address (loopback)"


async def test_managing_webhooks_needs_the_permission_and_other_orgs_see_nothing(
    client: Client,
    manager: dict[str, str],
    auth: dict[str, str],
    make_token: TokenFactory,
    receiver: Receiver,
) -> None:
    hook = await register(client, manager, receiver.url)
    body = {"url": receiver.url, "events": ["job.failed"]}
    for method, path in [
        ("GET", "/v1/webhooks"),
        ("POST", "/v1/webhooks"),
        ("GET", hook["links"]["self"]),
        ("GET", hook["links"]["deliveries"]),
        ("POST", hook["links"]["rotate_secret"]),
    ]:
        response = await client.request(
            method, path, headers=auth, json=body if method == "POST" else None
        )
        assert response.status_code == 403, path
        assert "webhooks.manage" in response.json()["detail"]

    globex = {"Authorization": f"Bearer {make_token(org='globex', perms=['webhooks.manage'])}"}
    for method, path in [
        ("GET", hook["links"]["self"]),
        ("PATCH", hook["links"]["self"]),
        ("DELETE", hook["links"]["self"]),
        ("GET", hook["links"]["deliveries"]),
        ("POST", hook["links"]["rotate_secret"]),
        ("POST", hook["links"]["test"]),
    ]:
        response = await client.request(
            method, path, headers=globex, json={} if method == "PATCH" else None
        )
        assert response.status_code == 404, (method, path)
    assert (await client.get("/v1/webhooks", headers=globex)).json()["items"] == []

    deleted = await client.delete(hook["links"]["self"], headers=manager)
    assert deleted.status_code == 204
    assert (await client.get(hook["links"]["self"], headers=manager)).status_code == 404


async def test_the_delivery_log_pages_newest_first(
    client: Client, manager: dict[str, str], receiver: Receiver, run_worker: WorkerRun
) -> None:
    hook = await register(client, manager, receiver.url)
    pings = [
        (await client.post(hook["links"]["test"], headers=manager)).json()["id"] for _ in range(5)
    ]
    await run_worker()
    url = f"{hook['links']['deliveries']}?limit=2"
    seen: list[str] = []
    while url:
        page = (await client.get(url, headers=manager)).json()
        assert len(page["items"]) <= 2
        seen += [d["id"] for d in page["items"]]
        cursor = page["next_cursor"]
        url = f"{hook['links']['deliveries']}?limit=2&cursor={cursor}" if cursor else ""
    assert seen == pings[::-1]
    bad = await client.get(f"{hook['links']['deliveries']}?cursor=nope", headers=manager)
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["field"] == "cursor"


async def test_disabling_an_endpoint_fails_its_pending_deliveries_unsent(
    client: Client, manager: dict[str, str], receiver: Receiver, run_worker: WorkerRun
) -> None:
    hook = await register(client, manager, receiver.url)
    await client.post(hook["links"]["test"], headers=manager)
    await client.patch(hook["links"]["self"], json={"enabled": False}, headers=manager)
    refused = await client.post(hook["links"]["test"], headers=manager)
    assert refused.status_code == 409
    await run_worker()
    assert receiver.got == []
    [delivery] = await deliveries(client, manager, hook)
    assert delivery["status"] == "failed"
    assert delivery["attempts"][0]["error"] == "not sent: the webhook is disabled"


async def test_secrets_are_sealed_at_rest_and_sealed_again_when_the_key_changes(
    client: Client,
    manager: dict[str, str],
    deps: Deps,
    settings: Settings,
    receiver: Receiver,
    run_worker: WorkerRun,
) -> None:
    hook = await register(client, manager, receiver.url, ["job.succeeded"])
    endpoint_id, shown = uuid.UUID(hook["id"]), hook["secret"]

    async def stored() -> str:
        value: str = await deps.db.fetchval(
            "SELECT secret FROM webhook_endpoints WHERE id = $1", endpoint_id
        )
        return value

    first = await stored()
    assert first.startswith("sealed:v1:")
    assert shown not in first
    # An endpoint from before sealing, its secret in the clear: the workers' cron seals it.
    await deps.db.execute(
        "UPDATE webhook_endpoints SET secret = $2 WHERE id = $1", endpoint_id, shown
    )
    assert await seal_webhook_secrets({"deps": deps}) == 1
    assert (await stored()).startswith("sealed:v1:")
    assert await seal_webhook_secrets({"deps": deps}) == 0

    def keyed(keys: str) -> Deps:
        replaced = msgspec.structs.replace(
            settings, webhook_secret_keys=keys, webhook_retry_window_seconds=1.0
        )
        return dataclasses.replace(deps, settings=replaced)

    # A new key put first, the old one (derived from the JWT secret) kept: sealed again.
    assert await seal_webhook_secrets({"deps": keyed(f"new key,{settings.jwt_secret}")}) == 1
    # Workers holding only the new key sign with the secret shown at registration.
    await client.post(f"/v1/webhooks/{hook['id']}/test", headers=manager)
    await run_worker(deps=keyed("new key"))
    [got] = receiver.got
    assert verify_signature(shown, got.headers["ferry-signature"], got.body)
    # A worker without it sends nothing, and the delivery log says why.
    await client.post(f"/v1/webhooks/{hook['id']}/test", headers=manager)
    await run_worker(deps=keyed("some other key"))
    assert len(receiver.got) == 1
    failed = [d for d in await deliveries(client, manager, hook) if d["status"] == "failed"]
    [error] = {a["error"] for a in failed[0]["attempts"]}
    assert "not among FERRY_WEBHOOK_SECRET_KEYS" in error
