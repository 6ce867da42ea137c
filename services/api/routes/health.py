"""Liveness, readiness (each dependency reported) and Prometheus metrics."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from litestar import Response, get
from litestar.di import NamedDependency
from litestar.openapi.spec import OpenAPIType, Schema
from litestar.status_codes import HTTP_200_OK, HTTP_503_SERVICE_UNAVAILABLE
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Gauge, generate_latest

from services.api.openapi import operation, success
from services.api.schemas import Check, Health, Ready
from services.core import jobs
from services.core.deps import Deps
from services.core.webhooks import deliveries

CHECK_TIMEOUT = 3.0

JOBS = Gauge(
    "ferry_jobs", "Jobs that are waiting or running, by kind and status", ["kind", "status"]
)
QUEUE_DEPTH = Gauge("ferry_queue_depth", "Jobs waiting in the arq queue (autoscaling signal)")
WEBHOOK_BACKLOG = Gauge(
    "ferry_webhook_deliveries_unfinished",
    "Webhook deliveries not finished: waiting, retrying or in flight",
)
WEBHOOK_OLDEST = Gauge(
    "ferry_webhook_oldest_unfinished_seconds",
    "Age of the oldest unfinished webhook delivery (0 when there is none)",
)
WEBHOOK_FAILED = Gauge(
    "ferry_webhook_deliveries_failed_last_hour",
    "Webhook deliveries that failed for good (retry window over) in the last hour",
)


async def _timed(check: Callable[[], Awaitable[Any]]) -> Check:
    started = time.perf_counter()
    try:
        await asyncio.wait_for(check(), CHECK_TIMEOUT)
    except Exception as exc:
        return Check(ok=False, error=f"{type(exc).__name__}: {exc}"[:300])
    return Check(ok=True, ms=round((time.perf_counter() - started) * 1000, 1))


@get(
    "/healthz",
    security=[{}],
    tags=["health"],
    summary="Liveness",
    operation_id="getHealth",
    operation_class=operation(),
)
async def healthz() -> Health:
    """The process is up and serving."""
    return Health(status="ok")


@get(
    "/readyz",
    security=[{}],
    tags=["health"],
    summary="Readiness of every dependency",
    operation_id="getReadiness",
    responses={503: success(Ready, "A dependency failed; `checks` says which")},
    operation_class=operation(),
)
async def readyz(deps: NamedDependency[Deps]) -> Response[Ready]:
    """PostgreSQL, Redis and storage, each checked and reported; 503 if any fails."""
    checks = dict(
        zip(
            ("postgres", "redis", "storage"),
            await asyncio.gather(
                _timed(lambda: deps.db.fetchval("SELECT 1")),
                _timed(deps.redis.ping),
                _timed(deps.storage.check),
            ),
            strict=True,
        )
    )
    ready = all(c.ok for c in checks.values())
    body = Ready(
        status="ready" if ready else "unavailable",
        checks=checks,
        storage_backend="s3" if deps.storage.backend == "s3" else "local",
    )
    return Response(body, status_code=HTTP_200_OK if ready else HTTP_503_SERVICE_UNAVAILABLE)


@get(
    "/metrics",
    security=[{}],
    tags=["health"],
    summary="Prometheus metrics",
    media_type=CONTENT_TYPE_LATEST,
    operation_id="getMetrics",
    operation_class=operation(
        content={200: {CONTENT_TYPE_LATEST: Schema(type=OpenAPIType.STRING)}}
    ),
)
async def metrics(deps: NamedDependency[Deps]) -> Response[bytes]:
    """Request metrics plus job counts, queue depth and the webhook backlog, read at
    scrape time."""
    counts, webhooks = await asyncio.gather(
        jobs.active_counts(deps.db), deliveries.backlog(deps.db, failed_within=3600)
    )
    JOBS.clear()
    for kind, status, n in counts:
        JOBS.labels(kind, status).set(n)
    WEBHOOK_BACKLOG.set(webhooks.unfinished)
    WEBHOOK_OLDEST.set(webhooks.oldest_seconds)
    WEBHOOK_FAILED.set(webhooks.failed)
    QUEUE_DEPTH.set(await deps.redis.zcard("arq:queue"))
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


routes = [healthz, readyz, metrics]
