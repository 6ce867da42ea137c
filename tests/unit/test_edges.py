"""The pure parts of the api's edges: redaction, request ids, origins, retry safety."""

from __future__ import annotations

import asyncpg
import pytest

from services.api.edge import cors_origins, redact, request_id_of
from services.core.db.pool import _repeatable, outage
from services.core.db.queries import Q
from services.core.errors import DatabaseUnavailable, SettingsError, Transient

LOST = asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation")


@pytest.mark.parametrize(
    ("query", "shown"),
    [
        ("token=abc.def.ghi", "token=***"),
        ("x=1&token=abc&y=2", "x=1&token=***&y=2"),
        ("mytoken=keep&token=", "mytoken=keep&token=***"),
        ("cursor=abc", "cursor=abc"),
    ],
)
def test_tokens_never_reach_the_access_log(query: str, shown: str) -> None:
    assert redact(query) == shown


def test_a_request_id_is_taken_only_when_it_is_safe() -> None:
    def scope(value: bytes) -> dict[str, object]:
        return {"headers": [(b"x-request-id", value)]}

    assert request_id_of(scope(b"checkout-42:a/b")) == "checkout-42:a/b"  # type: ignore[arg-type]
    for unsafe in (b"", b"x" * 129, b"a b", b"\xc3\xa9", b"a\r\nSet-Cookie: x"):
        made = request_id_of(scope(unsafe))  # type: ignore[arg-type]
        assert len(made) == 32
        assert made != unsafe.decode("latin-1")


def test_cors_origins_are_exact() -> None:
    assert cors_origins(" https://a.example.com/ ,http://localhost:3000") == [
        "https://a.example.com",
        "http://localhost:3000",
    ]
    assert cors_origins("") == []
    for bad in ("*", "https://*.example.com", "a.example.com", "https://a.example.com/app"):
        with pytest.raises(SettingsError):
            cors_origins(bad)


def test_only_reads_are_sent_again_after_a_connection_died_under_them() -> None:
    assert _repeatable(LOST, Q.get_job)
    assert _repeatable(LOST, Q.queue_position)
    assert Q.list_jobs.startswith("--")
    assert _repeatable(LOST, Q.list_jobs)  # after its comment lines
    assert not _repeatable(LOST, Q.insert_job)
    assert not _repeatable(LOST, Q.cancel_waiting_job)
    assert not _repeatable(LOST, "SELECT * FROM jobs WHERE id = $1 FOR UPDATE")
    # Never sent at all: safe whatever it was.
    assert _repeatable(asyncpg.InterfaceError("connection is closed"), Q.insert_job)
    # A wrong statement is not an outage.
    assert not _repeatable(asyncpg.UndefinedColumnError("no column"), Q.get_job)


def test_outages_are_told_from_bugs() -> None:
    assert outage(LOST)
    assert outage(DatabaseUnavailable())
    assert outage(ConnectionRefusedError())
    assert not outage(ValueError("a bug"))
    assert not outage(asyncpg.UniqueViolationError("dup"))
    assert isinstance(DatabaseUnavailable(), Transient)  # a worker retries, not fails
