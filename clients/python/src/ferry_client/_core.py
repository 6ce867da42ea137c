"""The client's logic without I/O, shared by ``Ferry`` and ``AsyncFerry``.

Every operation is a generator that yields *effects* — send a request, read a chunk
of a streamed body, close it, sleep — and receives their results; a driver
(``_sync.run`` or ``_async.run``) performs them with httpx, blocking or awaiting.
So retries, waiting over SSE, checksums and paging are written once. A transport
error is thrown back into the generator at the ``yield`` that caused it.
"""

from __future__ import annotations

import codecs
import email.utils
import random
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import httpx
import msgspec

from ferry_client._exceptions import ConnectionFailed, api_error

T = TypeVar("T")

CHUNK = 256 * 1024
RETRY_STATUSES = frozenset({429, 502, 503, 504})


@dataclass(frozen=True)
class Call:
    """One request, as an operation describes it; the driver builds and sends it."""

    method: str
    url: str  # a path on the api, or an absolute URL (a presigned download)
    params: dict[str, str] | None = None
    json: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    upload: Path | None = None  # a file to stream as the body
    auth: bool = True  # False for a presigned URL: the bearer token stays home
    stream: bool = False  # the body is read with ``Read``; else it is read whole
    # Safe to send again once it may have reached the server: a GET, a POST carrying
    # an Idempotency-Key, or an action whose repeat changes nothing.
    replayable: bool = True
    read_timeout: float | None = None


class Send(NamedTuple):
    call: Call


class Read(NamedTuple):
    response: httpx.Response


class Close(NamedTuple):
    response: httpx.Response


class Sleep(NamedTuple):
    seconds: float


Effect = Send | Read | Close | Sleep
Op = Generator[Effect, Any, T]


@dataclass(frozen=True)
class Policy:
    """How hard to try: attempts after the first, and the longest single wait."""

    retries: int = 4
    max_wait: float = 60.0
    backoff: float = 0.5  # first wait after a connection error, doubled each time
    max_backoff: float = 8.0


def backoff(policy: Policy, attempt: int) -> float:
    """Exponential backoff with jitter: 0.5 s, 1 s, 2 s … up to ``max_backoff``."""
    base = min(policy.backoff * 2**attempt, policy.max_backoff)
    return float(base * (0.5 + random.random() / 2))  # noqa: S311 (jitter, not security)


def retry_after(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds (delay-seconds or an HTTP date), None if absent."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - datetime.now(UTC)).total_seconds(), 0.0)


def problem_of(response: httpx.Response) -> dict[str, Any]:
    """The problem document of an error answer, or one made up from its status."""
    try:
        body = msgspec.json.decode(response.content)
    except msgspec.DecodeError:
        body = None
    if isinstance(body, dict):
        return body
    text = response.content[:200].decode("utf-8", "replace").strip()
    return {"status": response.status_code, "title": response.reason_phrase, "detail": text}


def raise_for_problem(response: httpx.Response) -> None:
    """Raise the typed error of an answer of 400 or more (its body must be read)."""
    if response.status_code >= 400:
        raise api_error(response.status_code, problem_of(response), retry_after(response))


def send(policy: Policy, call: Call) -> Op[httpx.Response]:
    """Send ``call``, retrying connection errors, 429, 502, 503 and 504 with backoff.

    ``Retry-After`` is honoured up to ``policy.max_wait``; beyond that (or after the
    last retry) the answer is returned, for the caller to raise as a problem. A
    request that may have reached the server is sent again only if replayable.
    """
    attempt = 0
    while True:
        try:
            response: httpx.Response = yield Send(call)
        except httpx.TransportError as exc:
            sent = not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
            if attempt >= policy.retries or (sent and not call.replayable):
                raise ConnectionFailed(
                    f"{call.method} {call.url}: {exc or type(exc).__name__}"
                ) from exc
            wait = backoff(policy, attempt)
        else:
            if response.status_code not in RETRY_STATUSES or attempt >= policy.retries:
                return response
            told = retry_after(response)
            if told is not None and told > policy.max_wait:
                return response
            wait = told if told is not None else backoff(policy, attempt)
            if call.stream:
                yield Close(response)
        attempt += 1
        yield Sleep(wait)


def request(policy: Policy, call: Call) -> Op[httpx.Response]:
    """``send``, then raise the problem of an error answer."""
    response = yield from send(policy, call)
    if response.status_code >= 400 and call.stream:
        yield from read_all(response)
    raise_for_problem(response)
    return response


def read_all(response: httpx.Response) -> Op[bytes]:
    """The rest of a streamed body (small ones only: error answers)."""
    parts = []
    while chunk := (yield Read(response)):
        parts.append(chunk)
    yield Close(response)
    body = b"".join(parts)
    response._content = body  # so that problem_of() can read it
    return body


def get_json(
    policy: Policy, path: str, type: type[T], params: dict[str, str] | None = None
) -> Op[T]:
    response = yield from request(policy, Call("GET", path, params=params))
    return msgspec.json.decode(response.content, type=type)


class Deadline:
    """``timeout`` seconds from now (None: never)."""

    def __init__(self, timeout: float | None) -> None:
        self.at = None if timeout is None else time.monotonic() + timeout

    @property
    def passed(self) -> bool:
        return self.at is not None and time.monotonic() >= self.at


# --- server-sent events -----------------------------------------------------------------


class ServerEvent(NamedTuple):
    event: str
    data: str
    id: str | None


class SseDecoder:
    """Bytes of a ``text/event-stream`` in, complete events out (the WHATWG rules)."""

    def __init__(self) -> None:
        self._buffer = ""
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None

    def feed(self, chunk: bytes) -> list[ServerEvent]:
        text = self._buffer + self._decoder.decode(chunk)
        held = "\r" if text.endswith("\r") else ""  # its "\n" may come in the next chunk
        lines = text[: len(text) - len(held)].replace("\r\n", "\n").replace("\r", "\n")
        parts = lines.split("\n")
        self._buffer = parts.pop() + held  # an unfinished line waits for the next chunk
        events = []
        for line in parts:
            if event := self._line(line):
                events.append(event)
        return events

    def _line(self, line: str) -> ServerEvent | None:
        if not line:
            if not self._data:
                self._event = ""
                return None
            event = ServerEvent(self._event or "message", "\n".join(self._data), self._id)
            self._event, self._data = "", []
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self._id = value
        return None
