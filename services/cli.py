"""ferry — api | worker | dev | migrate | token | seed | settings; and, from the
Python client (``ferry_client.cli``), export | import | jobs | rollback."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from importlib import metadata
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from services.core.auth import mint_token
from services.core.errors import FerryError
from services.core.logs import log_config
from services.core.settings import Settings, in_effect, load_settings, markdown_table

STATE_DIR = Path(".ferry")
DEMO_ORG, DEMO_ACCOUNT, DEMO_USER = "demo", "main", "demo-user"
DEMO_ROWS = 50_000


def _settings() -> Settings:
    return load_settings(os.environ)


# --- migrate, seed, token, settings -------------------------------------------------


async def _migrate(settings: Settings) -> list[str]:
    from services.core.db.migrate import migrate
    from services.core.db.pool import connect

    conn = await connect(settings.database_url)
    try:
        return await migrate(conn)
    finally:
        await conn.close()


async def _seed(settings: Settings, *, org: str, account: str, rows: int, if_empty: bool) -> int:
    from services.core import demo
    from services.core.db.pool import connect

    conn = await connect(settings.database_url)
    try:
        if if_empty and await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM bookkeeping_records WHERE org_id = $1)", org
        ):
            return 0
        return await demo.seed(conn, org_id=org, account_id=account, rows=rows)
    finally:
        await conn.close()


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
    if not settings.jwt_secret:
        raise FerryError("FERRY_JWT_SECRET is not set; `ferry dev` keeps one in .ferry/jwt-secret")
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
    from services.worker.settings import create_worker

    settings = _settings()
    log_config(settings.log_level, settings.log_format)
    create_worker(settings).run()


# --- dev ------------------------------------------------------------------------------


def _jwt_secret(settings: Settings) -> str:
    if settings.jwt_secret:
        return settings.jwt_secret
    path = STATE_DIR / "jwt-secret"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip()


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
        from services.core.storage import S3Storage, open_storage

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


def _banner(settings: Settings, token: str) -> str:
    base = f"http://{settings.host}:{settings.port}"
    auth = f'-H "Authorization: Bearer {token}"'
    ds = "bookkeeping_records"
    recent = (datetime.now(UTC).date() - timedelta(days=3)).isoformat()
    export = (
        f"{base}/v1/datasets/{ds}/export.csv?account_id={DEMO_ACCOUNT}"
        f"&preset=financial&sale_date_from={recent}"
    )
    return f"""
Ferry is running: {base}
  console      {base}/console#token={token}
  OpenAPI UI   {base}/schema          (Swagger: {base}/schema/swagger)
  storage      {settings.storage_backend} ({settings.s3_bucket or settings.storage_dir})
  demo user    {DEMO_USER}, org {DEMO_ORG}, account {DEMO_ACCOUNT}

Bearer token for the demo user (valid 7 days):
{token}

Try:
  curl -s {base}/v1/datasets/{ds} {auth}
  curl -s "{export}" {auth}
  curl -s {base}/readyz

Ctrl-C stops everything.
"""


def cmd_dev(args: argparse.Namespace) -> None:
    settings = _settings()
    STATE_DIR.mkdir(exist_ok=True)
    log_config(settings.log_level, settings.log_format)
    with _servers(settings) as env:
        child_env = {**os.environ, **env}
        resolved = load_settings(child_env)
        asyncio.run(_prepare(resolved))
        token = mint_token(
            resolved, sub=DEMO_USER, org=DEMO_ORG, perms=_demo_perms(resolved), ttl=7 * 24 * 3600
        )
        children = [
            subprocess.Popen([sys.executable, "-m", "services.cli", role], env=child_env)  # noqa: S603
            for role in ("api", "worker")
        ]
        stop = False

        def _stop(signum: int, frame: Any) -> None:
            nonlocal stop
            stop = True

        signal.signal(signal.SIGINT, _stop)
        signal.signal(signal.SIGTERM, _stop)
        if _wait_ready(resolved, children):
            print(_banner(resolved, token), flush=True)
        while not stop and all(c.poll() is None for c in children):
            time.sleep(0.2)
        if not stop:
            print("a Ferry process exited; stopping the rest", file=sys.stderr)
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGINT)
        for child in children:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
    print("Ferry stopped.")


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
    return False


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
    sub.add_parser("worker", help="run an arq worker").set_defaults(func=cmd_worker)
    sub.add_parser(
        "dev", help="run everything locally (embedded servers unless FERRY_* URLs are set)"
    ).set_defaults(func=cmd_dev)
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
        "--version", action="version", version=f"ferry {metadata.version('ferry')} (ferry-client {client})"
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
