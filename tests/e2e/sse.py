"""A tiny EventSource for SSE tests against a real uvicorn (the test client cannot end them)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import msgspec

DEADLINE = 20.0


class Sse:
    """A tiny EventSource: events (id, event, data) and comments, as received."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.comments: list[str] = []
        self.opened = asyncio.Event()
        self.received = asyncio.Event()  # set at each event
        self.status = 0

    async def read(self, url: str, headers: dict[str, str] | None = None) -> None:
        async with (
            httpx.AsyncClient(timeout=DEADLINE) as c,
            c.stream("GET", url, headers=headers or {}) as r,
        ):
            self.status = r.status_code
            self.opened.set()
            if r.status_code != 200:
                return
            event: dict[str, Any] = {}
            async for line in r.aiter_lines():
                if line.startswith(":"):
                    self.comments.append(line[1:].strip())
                elif line:
                    name, _, value = line.partition(":")
                    event[name] = value.removeprefix(" ")
                elif "event" in event:
                    event["data"] = msgspec.json.decode(event["data"])
                    self.events.append(event)
                    self.received.set()
                    event = {}
                if line.startswith("retry:"):
                    event = {}
                    self.opened.set()

    @property
    def types(self) -> list[str]:
        return [e["event"] for e in self.events]
