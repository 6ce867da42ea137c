"""ferry — api | worker | dev | migrate | token | seed | settings; and, from the
Python client (``ferry_client.cli``), export | import | jobs | rollback."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import msgspec

from services.core.auth import mint_token
from services.core.errors import Conflict, FerryError, SettingsError, Unavailable
from services.core.logs import log_config
from services.core.settings import Settings, in_effect, load_settings, markdown_table, required

if TYPE_CHECKING:
    from services.core.db.pool import Connection

STATE_DIR = Path(".ferry")
SECRET_FILE = STATE_DIR / "jwt-secret"
DEMO_ORG, DEMO_ACCOUNT, DEMO_USER = "demo", "main", "demo-user"
DEMO_ROWS = 50_000


def _settings() -> Settings:
    return load_settings(os.environ)


# --- migrate, seed, token, settings -------------------------------------------------


def _where(url: str) -> str:
    """A server's address without its credentials: ``host:port/db``."""
    parts = urlsplit(url)
    return f"{parts.hostname or 'localhost'}:{parts.port or ''}{parts.path}".replace(":/", "/")


@contextlib.asynccontextmanager
async def _database(settings: Settings) -> AsyncIterator[Connection]:
    """One connection to FERRY_DATABASE_URL (never libpq's defaults); an unreachable
    server is one line, not a traceback."""
    import asyncpg

    from services.core.db.pool import connect

    url = required(settings, "database_url")
    try:
        conn = await connect(url)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise Unavailable(f"cannot reach PostgreSQL at {_where(url)}: {exc}") from None
    try:
        yield conn
    finally:
        await conn.close()


async def _migrate(settings: Settings) -> list[str]:
    from services.core.db.migrate import migrate

    async with _database(settings) as conn:
        return await migrate(conn)


async def _seed(settings: Settings, *, org: str, account: str, rows: int, if_empty: bool) -> int:
    from services.core import demo

    async with _database(settings) as conn:
        if if_empty and await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM bookkeeping_records WHERE org_id = $1)", org
        ):
            return 0
        seeded = await demo.seed(conn, org_id=org, account_id=account, rows=rows)
        # Statistics now, not at autovacuum's leisure: above 50,000 rows an export's
        # progress total is PostgreSQL's estimate.
        await conn.execute("ANALYZE bookkeeping_records")
        return seeded


def cmd_migrate(args: argparse.Namespace) -> None:
    applied = asyncio.run(_migrate(_settings()))
    print(f"applied: {', '.join(applied)}" if applied else "database is up to date")


def cmd_seed(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    rows = asyncio.run(
        _seed(_settings(), org=args.org, account=args.account, rows=args.rows, if_empty=False)
    )
    print(
        f"seeded {rows} records for {args.org}/{args.account} "
        f"in {time.perf_counter() - started:.1f} s"
    )


def _demo_perms(settings: Settings) -> list[str]:
    from services.core.datasets import load_registry

    return [
        f"{ds.name}.{p}" for ds in load_registry(settings.datasets_dir) for p in ("read", "write")
    ]


def cmd_token(args: argparse.Namespace) -> None:
    settings = _settings()
    secret = settings.jwt_secret or _saved_secret()
    if not secret:
        raise SettingsError(
            f"FERRY_JWT_SECRET is not set and there is no {SECRET_FILE} (`ferry dev` keeps "
            "one there): no token minted"
        )
    settings = msgspec.structs.replace(settings, jwt_secret=secret)
    perms = args.perms.split(",") if args.perms else _demo_perms(settings)
    print(mint_token(settings, sub=args.sub, org=args.org, perms=perms, ttl=args.ttl))


def cmd_settings(args: argparse.Namespace) -> None:
    """Print the settings in effect (secrets masked), or the README's table of defaults."""
    lines = in_effect(os.environ)  # refuses unknown or malformed FERRY_* in both cases
    print(markdown_table() if args.markdown else "\n".join(lines))


# --- api, worker ----------------------------------------------------------------------


def cmd_api(args: argparse.Namespace) -> None:
    import uvicorn

    from services.api.app import create_app

    settings = _settings()
    log_config(settings.log_level, settings.log_format)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=5,
    )


def cmd_worker(args: argparse.Namespace) -> None:
    from services.worker.settings import create_worker, health

    settings = _settings()
    if args.check:
        healthy, line = asyncio.run(health(settings))
        print(line)
        raise SystemExit(0 if healthy else 1)
    log_config(settings.log_level, settings.log_format)
    asyncio.run(_reachable(settings))
    create_worker(settings).run()


async def _reachable(settings: Settings) -> None:
    """PostgreSQL and Redis answer, or one line says which does not."""
    import redis.asyncio
    import redis.exceptions

    async with _database(settings):
        pass
    url = required(settings, "redis_url")
    client = redis.asyncio.Redis.from_url(url, socket_connect_timeout=5)
    try:
        await client.ping()
    except (redis.exceptions.RedisError, OSError) as exc:
        raise Unavailable(f"cannot reach Redis at {_where(url)}: {exc}") from None
    finally:
        await client.aclose()


# --- dev ------------------------------------------------------------------------------


def _saved_secret() -> str:
    return SECRET_FILE.read_text().strip() if SECRET_FILE.exists() else ""


def _jwt_secret(settings: Settings) -> str:
    if settings.jwt_secret:
        return settings.jwt_secret
    if not SECRET_FILE.exists():
        SECRET_FILE.write_text(secrets.token_urlsafe(48))
        SECRET_FILE.chmod(0o600)
    return _saved_secret()


@contextlib.contextmanager
def _one_per_folder(settings: Settings) -> Iterator[None]:
    """Hold .ferry/dev.lock while ``ferry dev`` runs, and refuse a port in use: a second
    one in the same folder would share the embedded servers' data, or answer for the
    first one's api."""
    with (STATE_DIR / "dev.lock").open("a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            owner = lock.read().strip() or "another process"
            raise Conflict(
                f"Ferry already runs in this folder ({owner}); stop it first (Ctrl-C in its "
                "terminal), or start this one in another folder"
            ) from None
        _check_port(settings.host, settings.port)
        lock.truncate(0)
        lock.write(f"pid {os.getpid()}, http://{settings.host}:{settings.port}\n")
        lock.flush()
        yield


def _check_port(host: str, port: int) -> None:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise Conflict(
                f"{host}:{port} is taken by another program ({exc.strerror}); set FERRY_PORT "
                "to a free port"
            ) from None


@contextlib.contextmanager
def _servers(settings: Settings) -> Iterator[dict[str, str]]:
    """Embedded PostgreSQL / Valkey for whatever is not configured; yields FERRY_* env."""
    from services.core.embedded import embedded_postgres, embedded_valkey

    env: dict[str, str] = {"FERRY_JWT_SECRET": _jwt_secret(settings)}
    with contextlib.ExitStack() as stack:
        if settings.database_url:
            env["FERRY_DATABASE_URL"] = settings.database_url
        else:
            print("starting embedded PostgreSQL in .ferry/pg …", flush=True)
            env["FERRY_DATABASE_URL"] = stack.enter_context(embedded_postgres(STATE_DIR / "pg"))
        if settings.redis_url:
            env["FERRY_REDIS_URL"] = settings.redis_url
        else:
            print("starting embedded Valkey …", flush=True)
            env["FERRY_REDIS_URL"] = stack.enter_context(embedded_valkey(STATE_DIR / "valkey"))
        yield env


async def _prepare(settings: Settings) -> None:
    """Migrate, make sure the bucket exists, load the demo data once."""
    applied = await _migrate(settings)
    if applied:
        print(f"migrations applied: {', '.join(applied)}", flush=True)
    if settings.storage_backend == "s3":
        from services.core.storage import open_storage
        from services.core.storage.s3 import S3Storage

        async with open_storage(settings) as storage:
            assert isinstance(storage, S3Storage)
            await storage.ensure_bucket()
    started = time.perf_counter()
    rows = await _seed(settings, org=DEMO_ORG, account=DEMO_ACCOUNT, rows=DEMO_ROWS, if_empty=True)
    if rows:
        print(
            f"demo data: {rows} records for {DEMO_ORG}/{DEMO_ACCOUNT} "
            f"in {time.perf_counter() - started:.1f} s",
            flush=True,
        )


def _ferry_command() -> str:
    """How to run ``ferry`` from here: this environment's script, relative when it can be."""
    script = Path(sys.executable).with_name("ferry")
    with contextlib.suppress(ValueError):
        return str(script.relative_to(Path.cwd()))
    return str(script)


def _banner(settings: Settings, token: str) -> str:
    base = f"http://{settings.host}:{settings.port}"
    auth = f'-H "Authorization: Bearer {token}"'
    ds = "bookkeeping_records"
    recent = (datetime.now(UTC).date() - timedelta(days=3)).isoformat()
    export = (
        f"{base}/v1/datasets/{ds}/export.csv?account_id={DEMO_ACCOUNT}"
        f"&preset=financial&sale_date_from={recent}"
    )
    client = (
        f"{_ferry_command()} export {ds} --format xlsx --preset financial "
        f"--account {DEMO_ACCOUNT} --since {recent} -o recent.xlsx"
    )
    return f"""
Ferry is running: {base}
  console      {base}/console#token={token}
  API docs     {base}/schema          (offline; the document: {base}/schema/openapi.json)
  storage      {settings.storage_backend} ({settings.s3_bucket or settings.storage_dir})
  demo user    {DEMO_USER}, org {DEMO_ORG}, account {DEMO_ACCOUNT}

Bearer token for the demo user (valid 7 days):
{token}

Try:
  curl -s {base}/v1/datasets/{ds} {auth}
  curl -s "{export}" {auth}
  curl -s {base}/readyz

From another terminal, the command line (ferry export, import, jobs, rollback):
  export FERRY_URL={base}
  export FERRY_TOKEN={token}
  {client}

Ctrl-C stops everything.
"""


def cmd_dev(args: argparse.Namespace) -> None:
    if not args.in_session:
        raise SystemExit(_shielded([sys.executable, "-m", "services.cli", "dev", "--in-session"]))
    settings = _settings()
    STATE_DIR.mkdir(exist_ok=True)
    log_config(settings.log_level, settings.log_format)
    with _one_per_folder(settings), _servers(settings) as env:
        child_env = {**os.environ, **env}
        resolved = load_settings(child_env)
        asyncio.run(_prepare(resolved))
        token = mint_token(
            resolved, sub=DEMO_USER, org=DEMO_ORG, perms=_demo_perms(resolved), ttl=7 * 24 * 3600
        )
        failed = _run(resolved, child_env, token)
    print("Ferry stopped.")
    if failed:
        raise SystemExit(1)


def _shielded(command: list[str]) -> int:
    """Run ``ferry dev`` in a session of its own and pass it each Ctrl-C; its exit code.

    A terminal's Ctrl-C signals every process of its foreground group: the embedded
    Valkey and PostgreSQL would stop under the api and the worker, and uvicorn, hit
    twice, would cancel its shutdown halfway (tracebacks from the database pool). In
    their own session they hear it once, from ``ferry dev``, in order.
    """
    inner = subprocess.Popen(command, start_new_session=True)  # noqa: S603

    def forward(signum: int, frame: Any) -> None:
        if inner.poll() is None:
            inner.send_signal(signum)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    return inner.wait()


def _run(settings: Settings, env: dict[str, str], token: str) -> bool:
    """Run the api and a worker until told to stop (or one of them ends); True if one
    ended by itself. Each is stopped once, then the embedded servers after them."""
    children = {
        role: subprocess.Popen([sys.executable, "-m", "services.cli", role], env=env)  # noqa: S603
        for role in ("api", "worker")
    }
    stop = False

    def _stop(signum: int, frame: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    if _wait_ready(settings, list(children.values())):
        print(_banner(settings, token), flush=True)
    while not stop and all(c.poll() is None for c in children.values()):
        time.sleep(0.2)
    ended = {role: c.returncode for role, c in children.items() if c.poll() is not None}
    if not stop:
        gone = ", ".join(f"{role} (exit code {code})" for role, code in ended.items())
        print(f"ferry: {gone} ended; stopping the rest", file=sys.stderr, flush=True)
    for child in children.values():
        if child.poll() is None:
            child.send_signal(signal.SIGINT)
    for child in children.values():
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    return not stop


def _wait_ready(settings: Settings, children: list[subprocess.Popen[bytes]]) -> bool:
    import urllib.error
    import urllib.request

    url = f"http://{settings.host}:{settings.port}/readyz"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and all(c.poll() is None for c in children):
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.3)
    return False  # a child ended, or the api never answered


# --- main -----------------------------------------------------------------------------


def _client_commands(sub: Any) -> str:
    """export, import, jobs and rollback from ferry_client, when it is installed; its version."""
    try:
        from ferry_client import __version__
        from ferry_client.cli import add_commands
    except ModuleNotFoundError:  # the production image installs the server alone
        return "not installed"
    add_commands(sub)
    return __version__


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ferry", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="command")
    sub.add_parser("api", help="run the HTTP api").set_defaults(func=cmd_api)
    worker = sub.add_parser("worker", help="run an arq worker")
    worker.add_argument(
        "--check",
        action="store_true",
        help="exit 0 if this host's worker recorded its health recently, 1 if not (probes)",
    )
    worker.set_defaults(func=cmd_worker)
    dev = sub.add_parser(
        "dev", help="run everything locally (embedded servers unless FERRY_* URLs are set)"
    )
    dev.add_argument("--in-session", action="store_true", help=argparse.SUPPRESS)
    dev.set_defaults(func=cmd_dev)
    sub.add_parser("migrate", help="apply database migrations").set_defaults(func=cmd_migrate)
    token = sub.add_parser("token", help="mint a bearer token")
    token.add_argument("--sub", default=DEMO_USER, help="user or service id")
    token.add_argument("--org", default=DEMO_ORG)
    token.add_argument(
        "--perms",
        default="",
        help="comma-separated permission keys (default: read+write on every dataset)",
    )
    token.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds")
    token.set_defaults(func=cmd_token)
    seed = sub.add_parser("seed", help="append generated records with COPY")
    seed.add_argument("--rows", type=int, default=DEMO_ROWS)
    seed.add_argument("--org", default=DEMO_ORG)
    seed.add_argument("--account", default=DEMO_ACCOUNT)
    seed.set_defaults(func=cmd_seed)
    settings = sub.add_parser(
        "settings",
        help="check the FERRY_* environment and print the values in effect (secrets masked)",
    )
    settings.add_argument(
        "--markdown",
        action="store_true",
        help="print instead the README's table of every setting, its default and meaning",
    )
    settings.set_defaults(func=cmd_settings)
    client = _client_commands(sub)
    p.add_argument(
        "--version",
        action="version",
        version=f"ferry {metadata.version('ferry')} (ferry-client {client})",
    )
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        code = args.func(args)
    except FerryError as exc:
        print(f"ferry: {exc.detail}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:  # `ferry settings | head`: the reader left, nothing to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    else:
        if code:  # the client's commands return their exit code
            raise SystemExit(code)


if __name__ == "__main__":
    main()
