"""Who is calling: the ``Principal`` dependency from ``Authorization: Bearer``."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.concurrency import sync_to_thread

from services.core.auth import Principal, TokenVerifier
from services.core.errors import Unauthorized


def verifier(request: Request[Any, Any, Any]) -> TokenVerifier:
    value = request.app.state.verifier
    assert isinstance(value, TokenVerifier)
    return value


def bearer_token(request: Request[Any, Any, Any]) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("send Authorization: Bearer <token>")
    return token.strip()


async def provide_principal(request: Request[Any, Any, Any]) -> Principal:
    """The caller of this request; 401 for a missing, malformed, forged or expired token."""
    tokens = verifier(request)
    token = bearer_token(request)
    if tokens.settings.jwt_jwks_url:  # may fetch the key set over the network
        return await sync_to_thread(tokens.verify, token)
    return tokens.verify(token)
