"""Rate limits kept in Redis, so they hold across api replicas.

Each caller spends one unit per request of two limits at once, their own and their
org's, or of neither: a refused request costs nothing. The limits are GCRA (a
sliding window: ``quota`` requests per ``window``, refilled evenly, a full quota
available as a burst), both checked and spent in one Lua script, on Redis' clock.

Without Redis the limits fail open: a request is not refused because the limiter
is away (a warning says so, at most every ``WARN_EVERY`` seconds).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import NamedTuple

import redis.exceptions
from redis.asyncio import Redis

from services.core.settings import Settings

log = logging.getLogger(__name__)

TIMEOUT = 1.0  # seconds the limiter may take before the request goes through unlimited
WARN_EVERY = 10.0

# KEYS: one per limit. ARGV: the window (ms), then each limit's quota.
# Returns per limit: remaining, ms until full again; then ms to wait (0 when allowed).
GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local period = tonumber(ARGV[1])
local tats, wait = {}, 0
for i = 1, #KEYS do
  local interval = period / tonumber(ARGV[i + 1])
  local tat = math.max(tonumber(redis.call('GET', KEYS[i])) or now, now) + interval
  tats[i] = tat
  wait = math.max(wait, tat - period - now)
end
local out = {}
for i = 1, #KEYS do
  local interval = period / tonumber(ARGV[i + 1])
  local tat = tats[i]
  if wait > 0 then
    tat = tat - interval
  else
    redis.call('SET', KEYS[i], string.format('%.3f', tat), 'PX', math.ceil(tat - now) + 1)
  end
  out[#out + 1] = math.floor((period - (tat - now)) / interval)
  out[#out + 1] = math.ceil(tat - now)
end
out[#out + 1] = math.ceil(wait)
return out
"""


class Limit(NamedTuple):
    name: str  # "user" or "org": the policy's name in the RateLimit headers
    key: str
    quota: int


class Usage(NamedTuple):
    limit: Limit
    remaining: int
    reset: int  # seconds until the full quota is back


class Verdict(NamedTuple):
    allowed: bool
    retry_after: int  # seconds; 0 when allowed
    usage: list[Usage]
    window: int


class RateLimiter:
    """Per-user and per-org request limits (``FERRY_RATE_LIMIT_*``)."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self._script = redis.register_script(GCRA)
        self._warned = -math.inf

    def limits(self, org: str, user: str) -> list[Limit]:
        s = self.settings
        wanted = [
            Limit("user", f"ferry:ratelimit:user:{org}\x1f{user}", s.rate_limit_user),
            Limit("org", f"ferry:ratelimit:org:{org}", s.rate_limit_org),
        ]
        return [limit for limit in wanted if limit.quota > 0]

    async def spend(self, org: str, user: str) -> Verdict | None:
        """Spend one request of the caller's limits; None when nothing limits them
        (no limit configured, or Redis is away: fail open)."""
        limits = self.limits(org, user)
        if not limits:
            return None
        window = self.settings.rate_limit_window_seconds
        args = [window * 1000, *(limit.quota for limit in limits)]
        try:
            async with asyncio.timeout(TIMEOUT):
                out = await self._script(keys=[limit.key for limit in limits], args=args)
        except (redis.exceptions.RedisError, TimeoutError) as exc:
            self._warn(exc)
            return None
        usage = [
            Usage(limit, max(int(out[2 * i]), 0), math.ceil(int(out[2 * i + 1]) / 1000))
            for i, limit in enumerate(limits)
        ]
        wait_ms = int(out[-1])
        return Verdict(wait_ms <= 0, math.ceil(max(wait_ms, 0) / 1000), usage, window)

    def _warn(self, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._warned >= WARN_EVERY:
            self._warned = now
            log.warning(
                "rate limits not enforced: Redis is unavailable",
                extra={"action": "rate_limit_open", "error": f"{type(exc).__name__}: {exc}"},
            )
