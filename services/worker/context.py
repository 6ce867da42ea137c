"""The typed view of arq's ``ctx`` dict (which stays ``dict[str, Any]`` for arq)."""

from __future__ import annotations

from typing import Any

from arq.connections import ArqRedis

from services.core.deps import Deps


def deps(ctx: dict[str, Any]) -> Deps:
    value = ctx["deps"]
    assert isinstance(value, Deps)
    return value


def queue(ctx: dict[str, Any]) -> ArqRedis:
    value = ctx["redis"]
    assert isinstance(value, ArqRedis)
    return value


def job_try(ctx: dict[str, Any]) -> int:
    return int(ctx.get("job_try", 1))
