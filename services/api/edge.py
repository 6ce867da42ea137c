"""What every answer of the api passes through, whether a route matched or not.

- **Request id**: ``X-Request-ID`` from the caller when it is 1-128 safe characters
  (letters, digits, ``. _ : / + = @ -``), a new one otherwise; echoed on every
  response, stamped on every log line of the request (``logs.request_id``) and in
  every problem document, and kept on the jobs the request creates.
- **CORS** (``FERRY_CORS_ORIGINS``, ``cors_config``): Litestar's CORS middleware
  answers preflights for every path and adds its headers to every answer, errors and
  event streams included (it wraps the exception handler); the edge sits outside it.
- **Rate-limit headers** a dependency left in the scope (``RATE_LIMIT_HEADERS``).
- **One access log line** per request, the ``token`` query parameter (event links,
  download links) redacted.

Litestar runs app middleware only for matched routes, so a 404 or a preflight would
miss it; ``wrap`` puts the edge around the whole ASGI handler instead, the way
Litestar mounts its own CORS middleware.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

from litestar import Litestar
from litestar.config.cors import CORSConfig
from litestar.datastructures import MutableScopeHeaders
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from services.core import logs
from services.core.errors import SettingsError

log = logging.getLogger("services.api.access")

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}")
_TOKEN = re.compile(r"(^|&)(token=)[^&]*")
_QUIET = frozenset({"/healthz", "/readyz", "/metrics"})  # probes: DEBUG, not INFO
RATE_LIMIT_HEADERS = "ferry.rate_limit_headers"

ALLOW_HEADERS = [
    "Authorization",
    "Content-Type",
    "Idempotency-Key",
    "Last-Event-ID",
    "X-Request-ID",
]
EXPOSE_HEADERS = [
    "Location",
    "Content-Disposition",
    "Retry-After",
    "RateLimit",
    "RateLimit-Policy",
    "X-Request-ID",
    "Idempotent-Replayed",
    "X-Ferry-Rows",
]


def cors_origins(value: str) -> list[str]:
    """The exact origins of ``FERRY_CORS_ORIGINS``; ``*`` and paths are refused."""
    origins = [o.strip().rstrip("/") for o in value.split(",") if o.strip()]
    for origin in origins:
        if "*" in origin:
            raise SettingsError(
                "FERRY_CORS_ORIGINS: '*' is refused; list the exact origins of your web apps"
            )
        scheme, sep, host = origin.partition("://")
        if scheme not in ("http", "https") or not sep or not host or "/" in host:
            raise SettingsError(
                f"FERRY_CORS_ORIGINS: {origin!r} is not an origin like https://app.example.com"
            )
    return origins


def cors_config(value: str) -> CORSConfig | None:
    origins = cors_origins(value)
    if not origins:
        return None
    return CORSConfig(
        allow_origins=origins,
        allow_methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"],
        allow_headers=ALLOW_HEADERS,
        expose_headers=EXPOSE_HEADERS,
        max_age=600,
    )


def redact(query: str) -> str:
    """A query string with its tokens replaced: they open streams and files."""
    return _TOKEN.sub(r"\1\2***", query)


def request_id_of(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            given = value.decode("latin-1")
            if _REQUEST_ID.fullmatch(given):
                return given
    return uuid.uuid4().hex


class Edge:
    """The ASGI wrapper described in the module docstring."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        request_id = request_id_of(scope)
        state: dict[str, Any] = scope.setdefault("state", {})
        reset = logs.request_id.set(request_id)
        started = time.perf_counter()
        status = 0

        async def stamped(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableScopeHeaders.from_message(message)
                headers["X-Request-ID"] = request_id
                for name, value in state.get(RATE_LIMIT_HEADERS, ()):
                    headers[name] = value
            await send(message)

        try:
            await self.app(scope, receive, stamped)
        finally:
            path = scope["path"]
            log.log(
                logging.DEBUG if path in _QUIET else logging.INFO,
                "%s %s %s",
                scope["method"],
                path,
                status or "-",
                extra={
                    "action": "http_request",
                    "method": scope["method"],
                    "path": path,
                    "query": redact(scope["query_string"].decode("latin-1")),
                    "status": status,
                    "ms": round((time.perf_counter() - started) * 1000, 1),
                },
            )
            logs.request_id.reset(reset)


def wrap(app: Litestar) -> Litestar:
    """Put the edge around everything ``app`` answers (its CORS middleware included)."""
    app.asgi_handler = Edge(app.asgi_handler)
    return app
