"""Admission control: per-user and per-org rate limits (``core.limits``) as HTTP.

Every request with a bearer token spends one unit of the caller's limits; over
either, the answer is 429 with ``Retry-After``. Every limited answer carries the
IETF draft's ``RateLimit-Policy`` (``"user";q=600;w=60, "org";q=3000;w=60``) and
``RateLimit`` (``"user";r=599;t=1, …``: requests remaining, seconds until the full
quota is back). Health, readiness, metrics and the docs need no token, so no limit.
"""

from __future__ import annotations

from typing import Any

from litestar import Request

from services.api.edge import RATE_LIMIT_HEADERS
from services.core.auth import Principal
from services.core.errors import TooManyRequests
from services.core.limits import RateLimiter, Verdict


def headers(verdict: Verdict) -> list[tuple[str, str]]:
    policy = ", ".join(
        f'"{u.limit.name}";q={u.limit.quota};w={verdict.window}' for u in verdict.usage
    )
    state = ", ".join(f'"{u.limit.name}";r={u.remaining};t={u.reset}' for u in verdict.usage)
    return [("RateLimit-Policy", policy), ("RateLimit", state)]


async def admit(request: Request[Any, Any, Any], principal: Principal) -> None:
    """Spend one request of ``principal``'s limits, or refuse it (429)."""
    limiter = request.app.state.get("limiter")
    if not isinstance(limiter, RateLimiter):
        return
    verdict = await limiter.spend(principal.org, principal.sub)
    if verdict is None:
        return
    request.scope["state"][RATE_LIMIT_HEADERS] = headers(verdict)
    if verdict.allowed:
        return
    spent = [u.limit for u in verdict.usage if u.remaining == 0]
    which = spent[0] if spent else verdict.usage[0].limit
    raise TooManyRequests(
        f"over the {which.name} rate limit of {which.quota} requests per "
        f"{verdict.window} s; try again in {verdict.retry_after} s",
        retry_after=verdict.retry_after,
        limit=which.name,
    )
