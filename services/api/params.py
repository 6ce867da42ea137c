"""Request parameters that several routes share, declared and checked once."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request
from litestar.di import NamedDependency
from litestar.params import HeaderParameter, QueryParameter

from services.core.errors import InvalidInput

IDEMPOTENCY_KEY_MAX = 200


async def provide_idempotency_key(
    idempotency_key_header: Annotated[
        str | None,
        HeaderParameter(
            name="Idempotency-Key",
            required=False,
            description=f"1 to {IDEMPOTENCY_KEY_MAX} characters. Repeat a request safely: "
            "the same key and body give the same answer; the same key with another body "
            "is refused (422).",
        ),
    ] = None,
) -> str | None:
    """The ``Idempotency-Key`` of every POST that takes one, checked here only."""
    key = idempotency_key_header
    if key is not None and not 0 < len(key) <= IDEMPOTENCY_KEY_MAX:
        raise InvalidInput(
            f"Idempotency-Key must have 1 to {IDEMPOTENCY_KEY_MAX} characters",
            errors=[{"field": "Idempotency-Key", "message": "1 to 200 characters"}],
        )
    return key


# A route parameter named ``idempotency_key`` of this type gets the checked header.
IdempotencyKey = NamedDependency[str | None]


def refuse_nul(request: Request[Any, Any, Any]) -> None:
    """A NUL in the path or a query parameter is a 422 naming it, before any route
    passes it on to PostgreSQL (whose text cannot hold it)."""
    if "\x00" in request.url.path:
        raise InvalidInput(
            "the path holds a NUL character", errors=[{"field": "path", "message": NUL}]
        )
    for name, value in request.query_params.multi_items():
        if "\x00" in name or "\x00" in value:
            field = name.replace("\x00", "\ufffd")
            raise InvalidInput(
                f"the query parameter {field!r} holds a NUL character",
                errors=[{"field": field, "message": NUL}],
            )


NUL = "holds a NUL character"


# Declared on the routes ``POST /v1/links`` makes links for, so the document shows how a
# browser follows one; ``services.api.auth.provide_principal`` is what checks it.
LinkToken = Annotated[
    str | None,
    QueryParameter(
        description="Instead of `Authorization`: the one-minute token of a link made by "
        "`POST /v1/links` for exactly this path."
    ),
]
