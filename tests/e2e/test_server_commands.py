"""`ferry migrate | seed | worker | token` refuse clearly instead of guessing: no
libpq defaults, one line (not a traceback) for a server that does not answer, and a
token command that fails loudly where the README uses it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jwt
import pytest

from tests.conftest import free_port

FERRY = Path(sys.executable).parent / "ferry"


def ferry(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("FERRY_", "PG"))}
    return subprocess.run(
        [str(FERRY), *args],
        cwd=cwd,
        env=clean | env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("command", ["migrate", "seed"])
def test_without_a_database_url_nothing_is_written_anywhere(command: str, tmp_path: Path) -> None:
    # libpq would take these on its own (a database that does not exist: a regression
    # must not write into a real one).
    libpq = {"PGHOST": "127.0.0.1", "PGUSER": "postgres", "PGDATABASE": "ferry_no_such_db"}
    result = ferry(command, cwd=tmp_path, **libpq)
    assert result.returncode == 2
    assert result.stderr == (
        "ferry: FERRY_DATABASE_URL is not set (`ferry dev` starts an embedded one)\n"
    )
    assert result.stdout == ""


def test_an_unreachable_database_is_one_line(tmp_path: Path) -> None:
    url = f"postgresql://ferry:hunter2@127.0.0.1:{free_port()}/ferry"
    result = ferry("migrate", cwd=tmp_path, FERRY_DATABASE_URL=url)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"ferry: cannot reach PostgreSQL at 127.0.0.1:{url.split(':')[3]}")
    assert "hunter2" not in result.stderr


def test_a_worker_without_redis_is_one_line(tmp_path: Path, database_url: str) -> None:
    port = free_port()
    result = ferry(
        "worker",
        cwd=tmp_path,
        FERRY_DATABASE_URL=database_url,
        FERRY_REDIS_URL=f"redis://127.0.0.1:{port}/0",
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"ferry: cannot reach Redis at 127.0.0.1:{port}/0: Error 111 connecting to "
        f"127.0.0.1:{port}. Connect call failed ('127.0.0.1', {port})."
    ]
    unset = ferry("worker", cwd=tmp_path, FERRY_DATABASE_URL=database_url)
    assert (
        unset.stderr == "ferry: FERRY_REDIS_URL is not set (`ferry dev` starts an embedded one)\n"
    )


def test_the_readme_token_line_fails_loudly_without_a_secret(tmp_path: Path) -> None:
    line = 'TOKEN=$(ferry token --sub alice --org demo) && echo "got $TOKEN"'
    env = {"PATH": f"{FERRY.parent}:{os.environ['PATH']}"}
    result = subprocess.run(
        ["bash", "-c", line], cwd=tmp_path, env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert "FERRY_JWT_SECRET is not set and there is no .ferry/jwt-secret" in result.stderr
    # Where `make run` ran, its secret is used.
    (tmp_path / ".ferry").mkdir()
    (tmp_path / ".ferry" / "jwt-secret").write_text("s" * 48 + "\n")
    result = subprocess.run(
        ["bash", "-c", line], cwd=tmp_path, env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    token = result.stdout.removeprefix("got ").strip()
    claims = jwt.decode(token, "s" * 48, algorithms=["HS256"], options={"verify_aud": False})
    assert (claims["sub"], claims["org"]) == ("alice", "demo")
