"""ferry_client without a server: SSE decoding, Retry-After, the retry loop, errors by
status, webhook signatures, the command line's help and exit codes, the public surface."""

from __future__ import annotations

import argparse
import hashlib
import hmac
import io
import re
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import ferry_client
import httpx
import pytest
from ferry_client import Progress, _core, cli
from ferry_client._exceptions import api_error
from ferry_client.webhooks import verify_signature

from services.core.webhooks.signing import signature_header
from tests.conftest import ROOT

SECRET = "whsec-test"


def test_sse_events_survive_any_chunking() -> None:
    stream = (
        b"retry: 2000\r\n\r\n: heartbeat\r\n\r\n"
        b'id: 1-0\r\nevent: progress\r\ndata: {"done": 5}\r\n\r\n'
        b"id: 2-0\nevent: succeeded\ndata: line one\ndata: line two\n\n"
    )
    whole = _core.SseDecoder().feed(stream)
    for size in (1, 2, 3, 7):
        decoder = _core.SseDecoder()
        events = [
            e for i in range(0, len(stream), size) for e in decoder.feed(stream[i : i + size])
        ]
        assert events == whole
    assert whole == [
        _core.ServerEvent("progress", '{"done": 5}', "1-0"),
        _core.ServerEvent("succeeded", "line one\nline two", "2-0"),
    ]


def test_retry_after_in_seconds_or_as_a_date() -> None:
    def wait(value: str) -> float | None:
        return _core.retry_after(httpx.Response(429, headers={"Retry-After": value}))

    assert wait("7") == 7
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 < (wait(later) or 0) <= 30
    assert wait("soon") is None
    assert _core.retry_after(httpx.Response(503)) is None


def drive(op: _core.Op[Any], replies: list[Any]) -> tuple[Any, list[Any]]:
    """Run an operation on canned replies (an exception is raised at its ``yield``)."""
    effects: list[Any] = []
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            effect = op.throw(error) if error else op.send(value)
        except StopIteration as stop:
            return stop.value, effects
        effects.append(effect)
        value, error = None, None
        if isinstance(effect, _core.Send):
            reply = replies.pop(0)
            if isinstance(reply, BaseException):
                error = reply
            else:
                value = reply


POST = _core.Call("POST", "/v1/exports", headers={"Idempotency-Key": "k"})


def test_429_and_connection_errors_are_retried_as_told_then_answered() -> None:
    limited = httpx.Response(429, headers={"Retry-After": "2"})
    refused = httpx.ConnectError("refused")
    done = httpx.Response(202)
    result, effects = drive(_core.send(_core.Policy(), POST), [limited, refused, done])
    assert result is done
    sends = [e for e in effects if isinstance(e, _core.Send)]
    assert [s.call for s in sends] == [POST] * 3  # the same request, the same key
    sleeps = [e.seconds for e in effects if isinstance(e, _core.Sleep)]
    assert sleeps[0] == 2
    assert 0 < sleeps[1] <= _core.Policy().max_backoff


def test_retries_stop_at_the_limit_and_never_wait_longer_than_allowed() -> None:
    policy = _core.Policy(retries=2, max_wait=10)
    busy = httpx.Response(503, headers={"Retry-After": "1"})
    last, effects = drive(_core.send(policy, POST), [busy, busy, busy])
    assert last.status_code == 503
    assert sum(isinstance(e, _core.Sleep) for e in effects) == 2
    too_long = httpx.Response(503, headers={"Retry-After": "600"})
    answered, effects = drive(_core.send(policy, POST), [too_long])
    assert answered is too_long
    assert not any(isinstance(e, _core.Sleep) for e in effects)


def test_a_request_that_may_have_arrived_is_not_sent_again_unless_replayable() -> None:
    mapping = _core.Call("PUT", "/v1/imports/x/mapping", replayable=False)
    with pytest.raises(ferry_client.ConnectionFailed):
        drive(_core.send(_core.Policy(), mapping), [httpx.ReadError("reset")])
    # … but one that never got through is.
    done = httpx.Response(202)
    result, _ = drive(_core.send(_core.Policy(), mapping), [httpx.ConnectError("no"), done])
    assert result is done


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, ferry_client.Invalid),
        (401, ferry_client.Unauthorized),
        (403, ferry_client.Forbidden),
        (404, ferry_client.NotFound),
        (409, ferry_client.Conflict),
        (410, ferry_client.Gone),
        (413, ferry_client.TooLarge),
        (422, ferry_client.Invalid),
        (429, ferry_client.RateLimited),
        (500, ferry_client.ServerError),
        (503, ferry_client.Unavailable),
        (418, ferry_client.ApiError),
    ],
)
def test_problems_become_typed_errors(status: int, cls: type[Exception]) -> None:
    problem = {"title": "T", "detail": "what", "errors": [{"field": "limit", "message": "bad"}]}
    error = api_error(status, problem)
    assert type(error) is cls
    assert isinstance(error, ferry_client.FerryError)
    assert error.detail == "what"
    assert [(e.field, e.message) for e in error.errors] == [("limit", "bad")]


def signed(body: bytes, at: int, secret: str = SECRET) -> str:
    return hmac.new(secret.encode(), f"{at}.".encode() + body, hashlib.sha256).hexdigest()


def test_a_webhook_signature_verifies_also_during_a_secret_rotation() -> None:
    body = b'{"event": "export.succeeded"}'
    now = 1_800_000_000
    header = f"t={now},v1={signed(body, now, 'old-secret')},v1={signed(body, now)}"
    assert verify_signature(body, header, SECRET, now=now + 10) == now


@pytest.mark.parametrize(
    ("header", "why"),
    [
        (None, "no Ferry-Signature"),
        ("v1=abc", "malformed"),
        ("t=1800000000,v1=" + "0" * 64, "no signature matches"),
        ("t=1799990000,v1={sig}", "old"),
    ],
)
def test_a_forged_stale_or_malformed_webhook_is_refused(header: str | None, why: str) -> None:
    body = b'{"event": "export.succeeded"}'
    if header is not None:
        header = header.format(sig=signed(body, 1_799_990_000))
    with pytest.raises(ferry_client.InvalidSignature, match=why):
        verify_signature(body, header, SECRET, now=1_800_000_000)
    tampered = f"t=1800000000,v1={signed(body, 1_800_000_000)}"
    with pytest.raises(ferry_client.InvalidSignature):
        verify_signature(body + b" ", tampered, SECRET, now=1_800_000_000)


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_subcommand_has_a_description_and_every_option_help() -> None:
    commands = subcommands(cli.parser())
    assert set(commands) == {"export", "import", "jobs", "rollback"}
    for name, sub in commands.items():
        assert sub.description, name
        assert "exit codes:" in (sub.epilog or "")
        for action in sub._actions:
            assert action.help, (name, action.dest)


def test_exit_codes_are_distinct_and_documented() -> None:
    failures = {
        ferry_client.Invalid: 3,
        ferry_client.Conflict: 4,
        ferry_client.Unauthorized: 5,
        ferry_client.Forbidden: 5,
        ferry_client.NotFound: 6,
        ferry_client.Unavailable: 7,
        ferry_client.ServerError: 7,
    }
    for cls, code in failures.items():
        assert cli.exit_code(cls(0, {})) == code
        assert f"\n  {code}  " in cli.EXIT_CODES
    assert cli.exit_code(ferry_client.ConnectionFailed("x")) == 7


def test_the_public_surface_is_what_it_says() -> None:
    exported = {name for name in dir(ferry_client) if not name.startswith("_")}
    assert exported - {"cli", "models", "webhooks"} == set(ferry_client.__all__) - {"__version__"}
    assert ferry_client.__version__ == "0.1.0"


def test_the_readme_lists_the_exit_codes_the_command_line_uses() -> None:
    readme = (ROOT / "README.md").read_text()
    table = dict(re.findall(r"^\| (\d) \| (.+?) \|$", readme, re.M))
    documented = dict(re.findall(r"^  (\d)  (.+)$", cli.EXIT_CODES, re.M))
    assert table.keys() == documented.keys()
    for code, meaning in documented.items():
        assert table[code].replace("`", "").startswith(meaning), code


KNOWN = Progress(done=50_000, total=200_000)
UNKNOWN = Progress(done=50_000)  # a large export before PostgreSQL has statistics
VALIDATING = Progress(done=5_000, total=10_000, unit="bytes", rows=40)  # a CSV import


@pytest.mark.parametrize(
    ("progress", "expected"),
    [
        (KNOWN, "[######------------------]  50,000/200,000 rows  50,000 rows/s  ETA 3s"),
        (UNKNOWN, "[--------####------------]  50,000 rows  50,000 rows/s"),
        (VALIDATING, "[############------------]  50%  40 rows  40 rows/s  ETA 1s"),
    ],
)
def test_the_progress_bar_says_what_is_known(progress: Progress, expected: str) -> None:
    bar = cli.Bar(io.StringIO(), enabled=True, label="export x")
    assert bar.line(progress, elapsed=1.0) == f"export x  {expected}"
    assert not bar.enabled  # a StringIO is no terminal: nothing is ever drawn


def test_the_client_verifies_what_the_server_signs() -> None:
    body = b'{"type": "job.succeeded", "data": {"id": "1"}}'
    at = 1_800_000_000
    header = signature_header(["whsec_new", "whsec_old"], at, body)  # during a rotation
    for secret in ("whsec_new", "whsec_old"):
        assert verify_signature(body, header, secret, now=at + 60) == at
    with pytest.raises(ferry_client.InvalidSignature):
        verify_signature(body, header, "whsec_someone_else", now=at + 60)
