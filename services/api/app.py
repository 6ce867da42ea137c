"""The Litestar gateway: ``create_app(settings)``."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from litestar.plugins.prometheus import PrometheusConfig

from services.api import edge
from services.api.auth import provide_principal
from services.api.docs import SwaggerUI, docs_router
from services.api.params import provide_idempotency_key, refuse_nul
from services.api.problems import EXCEPTION_HANDLERS
from services.api.routes import (
    commits,
    console,
    datasets,
    events,
    exports,
    health,
    imports,
    jobs,
    links,
    presets,
    uploads,
    webhooks,
)
from services.api.state import provide_deps, provide_queue
from services.core.auth import TokenVerifier
from services.core.deps import open_deps
from services.core.limits import RateLimiter
from services.core.queue import arq_redis
from services.core.settings import Settings

VERSION = "0.1.0"

DESCRIPTION = """\
Ferry moves tabular business records out of PostgreSQL as CSV, JSON, NDJSON or
XLSX, and uploaded CSV/XLSX files back in: validated, all-or-nothing, with a
24-hour undo. Every route but health needs `Authorization: Bearer <JWT>`; every
error is RFC 9457 `application/problem+json` naming its `request_id`.

Every answer carries `X-Request-ID` (yours, when you send one of 1-128 letters, digits
or `. _ : / + = @ -`). Requests with a bearer token count against per-user and per-org
rate limits: over them the answer is 429 with `Retry-After`; `RateLimit-Policy` and
`RateLimit` tell the quota and what is left. While PostgreSQL (or Redis, where it is
needed) is unavailable, the answer is 503 with `Retry-After`.

Jobs: anyone who may read or write a job's dataset may see it (its events, file and
error report); only the user who started it changes it (cancel, mapping, commit,
rollback), or an admin (`ferry.admin` or `<dataset>.admin`).
"""


def create_app(settings: Settings) -> Litestar:
    """The api; its lifespan opens (and closes) PostgreSQL, Redis and storage."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        async with open_deps(settings, role="ferry-api") as deps:
            app.state.deps = deps
            app.state.queue = arq_redis(deps.redis)
            app.state.limiter = RateLimiter(deps.redis, settings)
            yield

    prometheus = PrometheusConfig(
        app_name="ferry", prefix="ferry", group_path=True, exclude=["/metrics", "/healthz"]
    )
    handlers: list[Any] = [
        *health.routes,
        *datasets.routes,
        *exports.routes,
        *imports.routes,
        *commits.routes,
        *uploads.routes,
        *jobs.routes,
        *events.routes,
        *presets.routes,
        *links.routes,
        *console.routes,
        *webhooks.routes,
    ]
    app = Litestar(
        route_handlers=handlers,
        lifespan=[lifespan],
        state=State({"verifier": TokenVerifier(settings), "settings": settings}),
        dependencies={
            "deps": Provide(provide_deps, sync_to_thread=False),
            "queue": Provide(provide_queue, sync_to_thread=False),
            "principal": Provide(provide_principal),
            "idempotency_key": Provide(provide_idempotency_key),
        },
        exception_handlers=EXCEPTION_HANDLERS,
        before_request=refuse_nul,
        middleware=[prometheus.middleware],
        openapi_config=OpenAPIConfig(
            title="Ferry",
            version=VERSION,
            description=DESCRIPTION,
            path="/schema",
            openapi_router=docs_router("/schema"),
            use_handler_docstrings=True,  # a route's docstring is its description
            render_plugins=[SwaggerUI("/schema")],
            components=Components(
                security_schemes={
                    "bearer": SecurityScheme(type="http", scheme="bearer", bearer_format="JWT")
                }
            ),
            security=[{"bearer": []}],
        ),
        cors_config=edge.cors_config(settings.cors_origins),
        logging_config=None,  # the process configured logging (services.core.logs)
        debug=False,
    )
    return edge.wrap(app)
