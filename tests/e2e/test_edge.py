"""What every answer carries: CORS for the configured origins, and the request id.

CORS is what lets the company's web app (on another origin) read Ferry's answers;
a header missing on an error or a stream hides that answer from the page. The
request id is what a person quotes when something went wrong: it must be on every
answer, in every problem and on every log line of the request, and the token of an
event link never in a log.
"""

from __future__ import annotations

import logging
import re

import httpx
import msgspec
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from services.api.app import create_app
from services.core.deps import Deps
from services.core.errors import SettingsError
from services.core.logs import RequestIdFilter
from services.core.settings import Settings
from tests.conftest import JobFactory, WorkerRun
from tests.e2e.imports_helpers import orders_csv, upload

APP = "https://app.example.com"
EXPORT = {"dataset": "bookkeeping_records", "format": "csv"}
GENERATED = re.compile(r"^[0-9a-f]{32}$")


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return msgspec.structs.replace(
        settings, cors_origins=f"{APP}, https://admin.example.com", sse_heartbeat_seconds=0.2
    )


def exposed(response: httpx.Response) -> set[str]:
    value = response.headers.get("access-control-expose-headers", "")
    return {h.strip().lower() for h in value.split(",") if h.strip()}


# --- CORS ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/exports"),
        ("POST", "/v1/imports"),
        ("GET", "/v1/jobs/8f0c0000-0000-0000-0000-000000000000/events"),
        ("POST", "/v1/jobs/8f0c0000-0000-0000-0000-000000000000/cancel"),
        ("PUT", "/v1/imports/8f0c0000-0000-0000-0000-000000000000/mapping"),
        ("POST", "/v1/imports/8f0c0000-0000-0000-0000-000000000000/commit"),
        ("GET", "/v1/exports/8f0c0000-0000-0000-0000-000000000000/download"),
        ("GET", "/healthz"),
    ],
)
async def test_a_preflight_from_an_allowed_origin_is_answered_on_every_route(
    client: AsyncTestClient[Litestar], method: str, path: str
) -> None:
    response = await client.options(
        path,
        headers={
            "Origin": APP,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "authorization, content-type, idempotency-key, "
            "last-event-id, x-request-id",
        },
    )
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == APP
    assert method in response.headers["access-control-allow-methods"]
    allowed = response.headers["access-control-allow-headers"].lower()
    for header in ("authorization", "content-type", "idempotency-key", "last-event-id"):
        assert header in allowed
    assert "origin" in response.headers["vary"].lower()
    assert GENERATED.match(response.headers["x-request-id"])


async def test_another_origin_gets_no_cors_headers(
    client: AsyncTestClient[Litestar], auth: dict[str, str]
) -> None:
    evil = {"Origin": "https://evil.example.com"}
    preflight = await client.options(
        "/v1/exports", headers={**evil, "Access-Control-Request-Method": "POST"}
    )
    assert "access-control-allow-origin" not in preflight.headers
    response = await client.get("/v1/jobs", headers={**auth, **evil})
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers


async def test_answers_and_errors_carry_the_cors_headers_a_page_needs(
    client: AsyncTestClient[Litestar], auth: dict[str, str]
) -> None:
    origin = {"Origin": APP}
    created = await client.post("/v1/exports", json=EXPORT, headers={**auth, **origin})
    assert created.status_code == 202
    assert created.headers["access-control-allow-origin"] == APP
    assert {"location", "x-request-id", "retry-after", "ratelimit", "ratelimit-policy"} <= (
        exposed(created)
    )
    assert {"content-disposition", "idempotent-replayed", "x-ferry-rows"} <= exposed(created)
    # A 401, a 404 and a 422 are readable by the page too (else fetch hides them).
    for response in (
        await client.get("/v1/jobs", headers=origin),
        await client.get("/v1/jobs/nope", headers={**auth, **origin}),
        await client.post("/v1/exports", json={"dataset": "x"}, headers={**auth, **origin}),
        await client.get("/v1/no-such-route", headers=origin),
    ):
        assert response.status_code in (401, 404, 400, 422), response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.headers["access-control-allow-origin"] == APP
        assert "x-request-id" in exposed(response)


async def test_an_event_stream_carries_the_cors_headers(
    live_server: str, auth: dict[str, str], make_job: JobFactory
) -> None:
    job = await make_job()
    async with (
        httpx.AsyncClient(base_url=live_server, timeout=20) as http,
        http.stream("GET", f"/v1/jobs/{job.id}/events", headers={**auth, "Origin": APP}) as r,
    ):
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["access-control-allow-origin"] == APP
        assert r.headers["x-request-id"]


async def test_cors_is_off_unless_configured(
    settings: Settings, deps: Deps, auth: dict[str, str]
) -> None:
    plain = create_app(msgspec.structs.replace(settings, cors_origins=""))
    async with AsyncTestClient(app=plain) as c:
        response = await c.get("/v1/jobs", headers={**auth, "Origin": APP})
        assert "access-control-allow-origin" not in response.headers


@pytest.mark.parametrize(
    ("value", "says"),
    [("*", "'*' is refused"), ("https://a.example.com/app", "is not an origin"), ("a.com", "not")],
)
def test_a_wildcard_or_a_malformed_origin_stops_the_api(
    settings: Settings, value: str, says: str
) -> None:
    with pytest.raises(SettingsError, match=re.escape(says)):
        create_app(msgspec.structs.replace(settings, cors_origins=value))


# --- request ids --------------------------------------------------------------------------


async def test_a_request_id_is_echoed_or_made_and_named_in_problems(
    client: AsyncTestClient[Litestar], auth: dict[str, str]
) -> None:
    mine = await client.get("/v1/jobs", headers={**auth, "X-Request-ID": "checkout-42:a/b"})
    assert mine.headers["x-request-id"] == "checkout-42:a/b"
    made = await client.get("/healthz")
    assert GENERATED.match(made.headers["x-request-id"])
    for unsafe in ("x" * 129, "bad id", "new\u00e9line".encode()):
        replaced = await client.get("/healthz", headers={"X-Request-ID": unsafe})
        assert GENERATED.match(replaced.headers["x-request-id"])
    problem = await client.get("/v1/jobs/nope", headers={**auth, "X-Request-ID": "req-404"})
    assert problem.status_code == 404
    assert problem.json()["request_id"] == "req-404"
    unknown = await client.get("/v1/nothing-here")
    assert unknown.json()["request_id"] == unknown.headers["x-request-id"]


@pytest.fixture
def logged(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Ferry's log records, stamped with the request id as the process' handler does."""
    caplog.set_level(logging.INFO)
    caplog.handler.addFilter(RequestIdFilter())
    return caplog


def ferry_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith("services.")]


async def test_every_log_line_of_a_request_names_it_and_a_token_is_never_logged(
    client: AsyncTestClient[Litestar],
    auth: dict[str, str],
    make_job: JobFactory,
    logged: pytest.LogCaptureFixture,
) -> None:
    uploaded = await upload(client, {**auth, "X-Request-ID": "upload-7"}, orders_csv(3))
    assert uploaded.status_code == 202
    during = ferry_records(logged)
    assert {getattr(r, "request_id", None) for r in during} == {"upload-7"}
    actions = [getattr(r, "action", None) for r in during]
    assert "import_uploaded" in actions  # a line of the route
    assert "http_request" in actions  # and the access line

    job = await make_job(status="cancelled")  # its event stream ends at once
    link = (await client.get(f"/v1/jobs/{job.id}", headers=auth)).json()["links"]["events"]
    token = link.split("token=")[1]
    logged.clear()
    opened = await client.get(f"{link}&x=1")
    assert opened.status_code == 200
    assert "event: cancelled" in opened.text
    access = [r for r in logged.records if getattr(r, "action", None) == "http_request"]
    assert len(access) == 1
    assert access[0].query == "token=***&x=1"  # type: ignore[attr-defined]
    for record in ferry_records(logged):
        assert token not in record.getMessage()
        assert token not in repr(record.__dict__)


async def test_a_job_carries_its_request_id_into_the_worker_logs(
    client: AsyncTestClient[Litestar],
    auth: dict[str, str],
    run_worker: WorkerRun,
    deps: Deps,
    logged: pytest.LogCaptureFixture,
) -> None:
    created = await client.post("/v1/exports", json=EXPORT, headers={**auth, "X-Request-ID": "r-9"})
    job_id = created.json()["id"]
    assert await deps.db.fetchval("SELECT request_id FROM jobs WHERE id = $1", job_id) == "r-9"
    logged.clear()
    await run_worker()
    started = [r for r in logged.records if getattr(r, "action", None) == "job_started"]
    assert [getattr(r, "request_id", None) for r in started] == ["r-9"]
    ended = [r for r in logged.records if getattr(r, "action", None) == "job_ended"]
    assert [getattr(r, "request_id", None) for r in ended] == ["r-9"]
