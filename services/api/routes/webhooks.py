"""Webhooks: an org's endpoints, their signing secrets and their delivery log.

Every route needs the ``webhooks.manage`` permission (403 otherwise); another org's
webhook is a 404. Deliveries themselves are sent by the workers
(their ``deliver_webhooks`` job).
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

import msgspec
from arq.connections import ArqRedis
from litestar import Response, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, QueryParameter

from services.api.openapi import operation, problems
from services.api.params import IdempotencyKey
from services.api.routes.jobs import decode_cursor, encode_cursor
from services.api.schemas import (
    Webhook,
    WebhookChanges,
    WebhookDeliveryList,
    WebhookLinks,
    WebhookList,
    WebhookRequest,
    WebhookWithSecret,
)
from services.core.auth import Principal
from services.core.deps import Deps
from services.core.errors import Conflict
from services.core.queue import wake_webhooks
from services.core.webhooks import deliveries, endpoints
from services.core.webhooks.deliveries import WebhookDelivery
from services.core.webhooks.endpoints import Endpoint

PERMISSION = "webhooks.manage"
TAGS = ["webhooks"]
WebhookId = FromPath[uuid.UUID]


def _fields(endpoint: Endpoint) -> dict[str, Any]:
    base = f"/v1/webhooks/{endpoint.id}"
    expires = endpoint.previous_secret_until if endpoint.previous_secret else None
    return {
        "id": endpoint.id,
        "url": endpoint.url,
        "events": endpoint.events,
        "description": endpoint.description,
        "enabled": endpoint.enabled,
        "created_at": endpoint.created_at,
        "updated_at": endpoint.updated_at,
        "previous_secret_expires_at": expires,
        "links": WebhookLinks(
            self=base,
            deliveries=f"{base}/deliveries",
            test=f"{base}/test",
            rotate_secret=f"{base}/rotate-secret",
        ),
    }


def webhook(endpoint: Endpoint) -> Webhook:
    return Webhook(**_fields(endpoint))


def with_secret(endpoint: Endpoint) -> WebhookWithSecret:
    return WebhookWithSecret(**_fields(endpoint), secret=endpoint.secret)


async def _load(deps: Deps, principal: Principal, webhook_id: uuid.UUID) -> Endpoint:
    principal.require(PERMISSION)
    return await endpoints.get_endpoint(deps.db, webhook_id, principal.org)


@post(
    "/v1/webhooks",
    tags=TAGS,
    summary="Register a webhook endpoint",
    operation_id="createWebhook",
    status_code=201,
    responses=problems(400, 403, 409, 422),
    operation_class=operation(),
)
async def create_webhook(
    data: JSONBody[WebhookRequest],
    deps: NamedDependency[Deps],
    principal: NamedDependency[Principal],
    idempotency_key: IdempotencyKey,
) -> Response[WebhookWithSecret]:
    """201 with the endpoint and its signing `secret`, **shown this once**: store it.

    `events`: any of `job.succeeded`, `job.failed`, `job.cancelled`, `import.validated`,
    `import.committed`, `import.rolled_back`, for every job of the org. The URL must be
    `https://` and reach a public address (422 naming `url` otherwise; see the
    `FERRY_WEBHOOK_ALLOW_*` settings). The same `Idempotency-Key` and body answer with
    the same endpoint and secret. At most 50 endpoints per org (409).

    Each delivery is a `POST` of `{"id", "type", "created_at", "data"}` (`data`: the job
    as `GET /v1/jobs/{id}` returns it) with the headers `Ferry-Event`, `Ferry-WebhookDelivery`
    (the same over retries: drop what you already handled) and
    `Ferry-Signature: t=<unix time>,v1=<hex>`, the HMAC-SHA256 of `"<t>." + body` keyed
    with the secret. Answer 2xx within `FERRY_WEBHOOK_TIMEOUT_SECONDS`; anything else is
    retried with growing delays for `FERRY_WEBHOOK_RETRY_WINDOW_SECONDS` (24 h).
    """
    principal.require(PERMISSION)
    endpoint, created = await endpoints.create_endpoint(
        deps.db,
        deps.settings,
        org_id=principal.org,
        user_id=principal.sub,
        url=data.url,
        events=list(data.events),
        description=data.description,
        enabled=data.enabled,
        idempotency_key=idempotency_key,
    )
    headers = {"Location": f"/v1/webhooks/{endpoint.id}"}
    if not created:
        headers["Idempotent-Replayed"] = "true"
    return Response(with_secret(endpoint), status_code=201, headers=headers)


@get(
    "/v1/webhooks",
    tags=TAGS,
    summary="The org's webhook endpoints",
    operation_id="listWebhooks",
    responses=problems(403),
    operation_class=operation(),
)
async def list_webhooks(
    deps: NamedDependency[Deps], principal: NamedDependency[Principal]
) -> WebhookList:
    """Oldest first; secrets are never shown here."""
    principal.require(PERMISSION)
    found = await endpoints.list_endpoints(deps.db, principal.org)
    return WebhookList(items=[webhook(e) for e in found])


@get(
    "/v1/webhooks/{webhook_id:uuid}",
    tags=TAGS,
    summary="One webhook endpoint",
    operation_id="getWebhook",
    responses=problems(403, 404),
    operation_class=operation(),
)
async def get_webhook(
    webhook_id: WebhookId, deps: NamedDependency[Deps], principal: NamedDependency[Principal]
) -> Webhook:
    """The endpoint without its secret."""
    return webhook(await _load(deps, principal, webhook_id))


@patch(
    "/v1/webhooks/{webhook_id:uuid}",
    tags=TAGS,
    summary="Change a webhook endpoint",
    operation_id="updateWebhook",
    responses=problems(400, 403, 404, 422),
    operation_class=operation(),
)
async def update_webhook(
    webhook_id: WebhookId,
    data: JSONBody[WebhookChanges],
    deps: NamedDependency[Deps],
    principal: NamedDependency[Principal],
) -> Webhook:
    """Change `url` (checked like a new one), `events`, `description` or `enabled`.
    A disabled endpoint gets no new deliveries, and its pending ones fail unsent."""
    endpoint = await _load(deps, principal, webhook_id)
    changes = {
        name: value
        for name, value in msgspec.structs.asdict(data).items()
        if value is not msgspec.UNSET
    }
    return webhook(await endpoints.update_endpoint(deps.db, deps.settings, endpoint, changes))


@delete(
    "/v1/webhooks/{webhook_id:uuid}",
    tags=TAGS,
    summary="Delete a webhook endpoint",
    operation_id="deleteWebhook",
    responses=problems(403, 404),
    operation_class=operation(),
)
async def delete_webhook(
    webhook_id: WebhookId, deps: NamedDependency[Deps], principal: NamedDependency[Principal]
) -> None:
    """204. Its pending deliveries and its delivery log go with it."""
    principal.require(PERMISSION)
    await endpoints.delete_endpoint(deps.db, webhook_id, principal.org)


@post(
    "/v1/webhooks/{webhook_id:uuid}/rotate-secret",
    tags=TAGS,
    summary="Rotate a webhook's signing secret",
    operation_id="rotateWebhookSecret",
    status_code=200,
    responses=problems(403, 404, 422),
    operation_class=operation(),
)
async def rotate_webhook_secret(
    webhook_id: WebhookId,
    deps: NamedDependency[Deps],
    principal: NamedDependency[Principal],
    idempotency_key: IdempotencyKey,
) -> WebhookWithSecret:
    """The endpoint with a new `secret`, **shown this once**. The old secret keeps signing
    for `FERRY_WEBHOOK_SECRET_GRACE_SECONDS` (24 h, until `previous_secret_expires_at`):
    meanwhile `Ferry-Signature` carries one `v1` per secret, so a receiver verifies with
    either while it switches. Retried with the same `Idempotency-Key`, it answers with
    the same secret instead of rotating again."""
    endpoint = await _load(deps, principal, webhook_id)
    rotated = await endpoints.rotate_secret(
        deps.db, deps.settings, endpoint, idempotency_key=idempotency_key
    )
    return with_secret(rotated)


@post(
    "/v1/webhooks/{webhook_id:uuid}/test",
    tags=TAGS,
    summary="Send a ping event to a webhook endpoint",
    operation_id="testWebhook",
    status_code=202,
    responses=problems(403, 404, 409),
    operation_class=operation(),
)
async def ping_webhook(
    webhook_id: WebhookId,
    deps: NamedDependency[Deps],
    principal: NamedDependency[Principal],
    queue: NamedDependency[ArqRedis],
) -> WebhookDelivery:
    """202 with the delivery of a `ping` event (whatever the endpoint subscribed to),
    signed and retried like any other; follow it in the delivery log. 409 when the
    endpoint is disabled."""
    endpoint = await _load(deps, principal, webhook_id)
    if not endpoint.enabled:
        raise Conflict("the webhook is disabled; enable it to test it")
    delivery = await deliveries.ping(deps.db, endpoint)
    await wake_webhooks(queue)
    return delivery


@get(
    "/v1/webhooks/{webhook_id:uuid}/deliveries",
    tags=TAGS,
    summary="A webhook's delivery log",
    operation_id="listWebhookDeliveries",
    responses=problems(400, 403, 404, 422),
    operation_class=operation(),
)
async def list_webhook_deliveries(
    webhook_id: WebhookId,
    deps: NamedDependency[Deps],
    principal: NamedDependency[Principal],
    status: Annotated[
        Literal["pending", "succeeded", "failed"] | None,
        QueryParameter(description="Only deliveries in this status"),
    ] = None,
    limit: Annotated[int, QueryParameter(ge=1, le=200)] = 50,
    cursor: Annotated[
        str | None, QueryParameter(description="`next_cursor` of the previous page")
    ] = None,
) -> WebhookDeliveryList:
    """Newest first, keyset-paginated. Each delivery (its `id` is the `Ferry-WebhookDelivery`
    header) has its event, status (`pending` until a 2xx or the end of the retry
    window), `next_attempt_at`, and every attempt: when, how long, the response status,
    a short excerpt of the response body, the error, and when the next one is due.
    Finished deliveries are kept `FERRY_WEBHOOK_LOG_DAYS`."""
    endpoint = await _load(deps, principal, webhook_id)
    page = await deliveries.list_deliveries(
        deps.db,
        endpoint.id,
        status=status,
        before=decode_cursor(cursor) if cursor else None,
        limit=limit + 1,
    )
    more = len(page) > limit
    page = page[:limit]
    return WebhookDeliveryList(items=page, next_cursor=encode_cursor(page[-1]) if more else None)


routes = [
    create_webhook,
    list_webhooks,
    get_webhook,
    update_webhook,
    delete_webhook,
    rotate_webhook_secret,
    ping_webhook,
    list_webhook_deliveries,
]
