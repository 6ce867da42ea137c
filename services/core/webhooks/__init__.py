"""Webhooks: an org's endpoints receive its jobs' events, signed, at least once.

    job row changes status ── trigger of migration 0040, same transaction ──▶
        webhook_events (the outbox) + webhook_deliveries (one per subscribed endpoint)
    EventBus.announce ──▶ arq ``deliver_webhooks`` at once; a cron runs it too (safety net)
    deliver_webhooks: claim due deliveries (a lease, at most N in flight per endpoint)
        ──▶ POST, signed ──▶ 2xx: succeeded
                         └─▶ otherwise: retried with exponential backoff and jitter
                             until the retry window ends, then failed

Every attempt is a row of the delivery log. A delivery keeps its id (``Ferry-Delivery``)
over its retries, so a receiver drops what it already handled.

Modules: ``endpoints`` (registration, secrets, event types), ``addresses`` (which URLs
may be reached), ``signing`` (``Ferry-Signature``), ``deliveries`` (claims, attempts,
the log). Their SQL is ``queries.sql`` here.
"""

from __future__ import annotations

from pathlib import Path

from services.core.db.queries import Queries

Q = Queries((Path(__file__).parent / "queries.sql").read_text())
