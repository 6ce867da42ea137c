"""Typed access to what the lifespan puts on ``app.state``."""

from __future__ import annotations

from typing import Any

from arq.connections import ArqRedis
from litestar import Request

from services.core.deps import Deps


def provide_deps(request: Request[Any, Any, Any]) -> Deps:
    value = request.app.state.deps
    assert isinstance(value, Deps)
    return value


def provide_queue(request: Request[Any, Any, Any]) -> ArqRedis:
    value = request.app.state.queue
    assert isinstance(value, ArqRedis)
    return value
