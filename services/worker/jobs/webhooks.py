"""Webhooks: ``deliver_webhooks`` sends due deliveries; ``purge_webhook_log`` forgets old
ones; ``seal_webhook_secrets`` keeps every signing secret sealed with the current key.

``deliver_webhooks`` runs when a job event is announced (``EventBus`` wakes it), when a
retry falls due (a failed attempt enqueues it for that moment) and from a cron (a
wake-up lost with Redis, a delivery whose worker died). Any number may run at once:
claims are leased and capped per endpoint (``services.core.webhooks.deliveries``).

One attempt: check the URL's addresses again, connect to a checked one (no second DNS
lookup), POST the event signed, follow no redirect, read at most a short excerpt of the
answer; a 2xx within ``FERRY_WEBHOOK_TIMEOUT_SECONDS`` is success, anything else is
retried with backoff.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from services.core.auth import Principal, TokenVerifier
from services.core.deps import Deps
from services.core.jobs import Job
from services.core.queue import wake_webhooks
from services.core.webhooks import addresses, deliveries, endpoints
from services.core.webhooks.deliveries import Claimed, Result
from services.core.webhooks.sealing import Sealer, Unopenable
from services.core.webhooks.signing import signature_header
from services.worker.context import deps, queue

if TYPE_CHECKING:  # imported where a delivery is made: a worker without webhooks spares it
    import httpx

log = logging.getLogger(__name__)

# One run hands over to a fresh one after this long, so it never meets the job timeout.
RUN_SECONDS = 60.0
# Retries due within one slot wake one run, however many deliveries failed at once.
WAKE_SLOT_SECONDS = 0.5
EXCERPT_BYTES = 1024
USER_AGENT = "Ferry-Webhooks/1"


async def deliver_webhooks(ctx: dict[str, Any]) -> int:
    """Send the due webhook deliveries; how many succeeded.

    With nothing due (most wake-ups: an org without webhooks) it is one short query.
    """
    d = deps(ctx)
    batch = await deliveries.claim(d.db, d.settings)
    if not batch:
        return 0
    tokens, sealer = _events_tokens(d), Sealer(d.settings)
    succeeded = 0
    started = time.monotonic()
    async with _client(d) as client:
        while batch:
            results = await asyncio.gather(*(_attempt(d, client, tokens, sealer, c) for c in batch))
            succeeded += sum(result.ok for result, _ in results)
            for at in sorted({_slot(next_at) for _, next_at in results if next_at}):
                await wake_webhooks(queue(ctx), at=at, key=f"deliver_webhooks:{at.timestamp()}")
            if time.monotonic() - started > RUN_SECONDS:
                await wake_webhooks(queue(ctx))  # more may be due: a fresh run takes over
                break
            batch = await deliveries.claim(d.db, d.settings)
    return succeeded


async def seal_webhook_secrets(ctx: dict[str, Any]) -> int:
    """Seal secrets kept in the clear, or with a key that no longer seals (at start-up
    and hourly: a key rotation takes effect once every worker has the new keys)."""
    d = deps(ctx)
    sealed = await endpoints.reseal(d.db, d.settings)
    if sealed:
        extra = {"action": "webhook_secrets_sealed", "count": sealed}
        log.info("webhook secrets sealed", extra=extra)
    return sealed


async def purge_webhook_log(ctx: dict[str, Any]) -> int:
    """Forget deliveries finished more than ``FERRY_WEBHOOK_LOG_DAYS`` ago."""
    d = deps(ctx)
    purged = await deliveries.purge(d.db, days=d.settings.webhook_log_days)
    if purged:
        log.info("webhook log purged", extra={"action": "webhooks_purged", "count": purged})
    return purged


def _slot(at: datetime) -> datetime:
    """``at`` rounded up to a wake-up slot: retries due in one slot share one arq job.

    A run is always woken for a slot it started in or after, and a retry is due later
    than now, so the slot of a retry is never the one of the run scheduling it (which
    arq would refuse while it runs).
    """
    slots = math.ceil(at.timestamp() / WAKE_SLOT_SECONDS)
    return datetime.fromtimestamp(slots * WAKE_SLOT_SECONDS, UTC)


def _client(d: Deps) -> httpx.AsyncClient:
    import httpx

    return httpx.AsyncClient(
        timeout=d.settings.webhook_timeout_seconds,
        follow_redirects=False,
        trust_env=False,  # a proxy from the environment would reach what the guard refused
        verify=d.settings.webhook_trust(),
        # A connection is made for one checked address and host; never reuse it for another.
        limits=httpx.Limits(max_keepalive_connections=0),
    )


def _events_tokens(d: Deps) -> Callable[[Job], str]:
    """Mints the ``links.events`` token of a job's document, as its owner's."""
    verifier = TokenVerifier(d.settings)
    return lambda job: verifier.mint_events_token(Principal(job.user_id, job.org_id), job.id)


async def _attempt(
    d: Deps,
    client: httpx.AsyncClient,
    tokens: Callable[[Job], str],
    sealer: Sealer,
    claimed: Claimed,
) -> tuple[Result, datetime | None]:
    """One attempt at ``claimed``, recorded; its result and the time of the next one."""
    extra = {"delivery_id": str(claimed.id), "event": claimed.type, "attempt": claimed.attempts}
    if not claimed.enabled:
        result = Result(ok=False, duration_ms=0, error="not sent: the webhook is disabled")
        return result, await deliveries.settle(d.db, d.settings, claimed, result, give_up=True)
    try:
        secrets = [sealer.open(sealed) for sealed in claimed.secrets]
    except Unopenable as exc:  # retried: an operator may put the key back meanwhile
        result = Result(ok=False, duration_ms=0, error=f"not sent: {exc.detail}")
    else:
        payload = await deliveries.body(d.db, claimed, tokens)
        result = await send(d, client, claimed, payload, secrets)
    next_at = await deliveries.settle(d.db, d.settings, claimed, result)
    if result.ok:
        log.info("webhook delivered", extra={"action": "webhook_delivered", **extra})
    else:
        outcome = {"status": result.response_status, "error": result.error, "retry_at": next_at}
        log.warning("webhook failed", extra={"action": "webhook_failed", **extra, **outcome})
    return result, next_at


async def send(
    d: Deps, client: httpx.AsyncClient, claimed: Claimed, payload: bytes, secrets: list[str]
) -> Result:
    """POST ``payload`` to the delivery's endpoint, signed with ``secrets``; what came of it."""
    import httpx

    started = time.monotonic()
    timeout = d.settings.webhook_timeout_seconds
    try:
        async with asyncio.timeout(timeout):  # also bounds a server that answers byte by byte
            target = await addresses.resolve(claimed.url, d.settings)
            return await _post(client, target, claimed, payload, secrets, started)
    except addresses.Refused as exc:
        error = exc.reason
    except TimeoutError:
        error = f"no answer within {timeout:g} s"
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}".rstrip(": ")
    return Result(ok=False, duration_ms=_ms(started), error=error)


async def _post(
    client: httpx.AsyncClient,
    target: addresses.Target,
    claimed: Claimed,
    payload: bytes,
    secrets: list[str],
    started: float,
) -> Result:
    import httpx

    url = target.url
    assert url.hostname is not None
    # Connect to the address that was checked; the host name still goes in Host and SNI.
    request_url = httpx.URL(url.geturl()).copy_with(host=str(target.addresses[0]))
    headers = {
        "Host": url.netloc,
        "Content-Type": "application/json",
        "Accept-Encoding": "identity",  # the excerpt is read raw: no decompression bomb
        "User-Agent": USER_AGENT,
        "Ferry-Event": claimed.type,
        "Ferry-Delivery": str(claimed.id),
        "Ferry-Signature": signature_header(secrets, int(time.time()), payload),
    }
    extensions = {"sni_hostname": url.hostname} if url.scheme == "https" else {}
    async with client.stream(
        "POST", request_url, content=payload, headers=headers, extensions=extensions
    ) as response:
        excerpt = await _excerpt(response)
    status = response.status_code
    ok = 200 <= status < 300
    return Result(
        ok=ok,
        duration_ms=_ms(started),
        response_status=status,
        excerpt=excerpt or None,
        error=None if ok else f"the endpoint answered {status}",
    )


async def _excerpt(response: httpx.Response) -> str:
    """The start of the answer, at most ``EXCERPT_BYTES``; the rest is never read."""
    head = bytearray()
    async for chunk in response.aiter_raw():
        head += chunk[: EXCERPT_BYTES - len(head)]
        if len(head) >= EXCERPT_BYTES:
            break
    return head.decode("utf-8", "replace")


def _ms(started: float) -> int:
    return round((time.monotonic() - started) * 1000)
