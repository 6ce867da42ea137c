"""`ferry settings`: checks the environment like every command and shows what is in effect."""

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

FERRY = Path(sys.executable).parent / "ferry"


def ferry_settings(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FERRY_")}
    return subprocess.run(
        [str(FERRY), "settings", *args],
        env=clean | env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_settings_prints_the_values_in_effect() -> None:
    result = ferry_settings(FERRY_PORT="9001", FERRY_JWT_SECRET="do-not-print-me")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    rows = [line.split(maxsplit=2) for line in lines]
    assert ["FERRY_PORT", "env", "9001"] in rows
    assert ["FERRY_JWT_SECRET", "env", "***"] in rows
    assert ["FERRY_HOST", "default", "127.0.0.1"] in rows
    assert "do-not-print-me" not in result.stdout
    # In columns, however long the longest name is.
    assert len({line.index(" env " if " env " in line else " default ") for line in lines}) == 1


def test_settings_refuses_a_bad_environment_in_one_line() -> None:
    for env, message in [
        ({"FERRY_PROT": "9001"}, "ferry: FERRY_PROT is not a Ferry setting (see the README table)"),
        ({"FERRY_PORT": "eighty"}, "ferry: FERRY_PORT: Expected `int`, got `str`"),
    ]:
        for args in [(), ("--markdown",)]:
            result = ferry_settings(*args, **env)
            assert result.returncode == 2
            assert result.stdout == ""
            assert result.stderr.splitlines() == [message]


def test_settings_markdown_prints_the_readme_table() -> None:
    result = ferry_settings("--markdown", FERRY_PORT="9001")
    assert result.returncode == 0, result.stderr
    table = result.stdout.strip()
    assert "| `FERRY_PORT` | `8000` | Port the api listens on. |" in table  # defaults, not env
    assert table in (ROOT / "README.md").read_text()
